// What every reliability suite hands back to reliability/main.ts and to its test: how much it tried, what
// went wrong (each violation with what was sent), and the figures docs/reliability.md publishes.

/** 'short' runs inside `npm test` (about a minute); 'full' is `npm run reliability`. */
export type Scale = 'short' | 'full';

export interface SuiteOptions {
  /** Makes the suite's choices repeatable; a suite picks (and reports) one when absent. */
  seed?: number;
  /** One line of progress, for the person watching; never parsed. */
  say?: (line: string) => void;
}

export interface Violation {
  /** What was sent or done, exactly enough to do it again (for the fuzz suite: the raw request). */
  sent: string;
  /** What went wrong, e.g. "answered 500", "no answer within 10000 ms", "v2 error not in the OCI shape". */
  problem: string;
}

export interface SuiteResult {
  suite: string;
  /** How many requests, faults or connections the suite tried. */
  tried: number;
  violations: Violation[];
  /** Flat, so the table and the JSON file stay simple: `status:404`, `rssAfterWarmupMiB`, `seed`, … */
  figures: Record<string, number | string>;
}

export type Suite = (scale: Scale, options?: SuiteOptions) => Promise<SuiteResult>;

/** A violation as one readable block: the problem, then what was sent. */
export function describeViolation(violation: Violation): string {
  return `${violation.problem}\n    sent: ${violation.sent}`;
}
