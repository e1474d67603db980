// What the faults suite saw and judged: every client answer (a body whose framing says it is complete must
// be exactly the bytes asked for; an error must be a v2 error naming no upstream address), every
// `regmirror verify` run, every recovery; the figures per kind of fault, and the violations.

import { rawGet, sha256Of, type RawResponse } from '../../test/support/fault-upstream.js';
import { runRegmirror } from '../../test/support/regmirror.js';
import type { Violation } from '../lib/result.js';

export const FAULT_KINDS = ['cut', 'wrong-bytes', 'reset', 'drip', '429-storm', '5xx-burst', 'kill-fill', 'kill-commit', 'disk-full', 'sqlite-lock'] as const;
export type FaultKind = (typeof FAULT_KINDS)[number];

/** Something a client asks regmirror for, and the bytes a whole answer must hold. */
export interface Wanted {
  /** For reports: "blob sha256:0123abcd… (2048 bytes) of faults/b3". */
  what: string;
  url: string;
  bytes: Buffer;
  digest: string;
  headers?: Record<string, string>;
}

/** How one answer ended, as the client saw it. */
export type Outcome =
  | { kind: 'whole' }
  /** The framing said more was coming: not mistaken for a whole body. */
  | { kind: 'cut' }
  | { kind: 'refused'; status: number; retryAfterS: number | undefined }
  /** No status line at all (the process was killed, or nothing within the deadline). */
  | { kind: 'none'; reason: string }
  /** A complete body that is not what was asked: the one thing that must never happen. */
  | { kind: 'wrong' };

export interface GetOptions {
  /** Bytes start..end (inclusive) instead of the whole. */
  range?: { start: number; end: number };
  /** Default 30 s; every fault the suite injects ends well before. */
  timeoutMs?: number;
  /** regmirror is being killed: an answer that never came is expected, not a hang. */
  killed?: boolean;
}

/** What regmirror may answer when its upstream or its storage fails: rate limited, bad gateway, unavailable, gateway timeout. */
const FAULT_STATUSES = new Set([429, 502, 503, 504]);
/** A recovery honours a Retry-After up to this long (the suite's upstreams ask for at most 3 s; circuits back off from 1 s). */
const LONGEST_RETRY_AFTER_S = 20;
const RECOVERY_ATTEMPTS = 5;
/** Crash leftovers verify rightly reports after a kill -9: a temporary (removed at the next start), a whole verified file whose record was not written yet. */
const CRASH_LEFTOVERS = new Set(['temporary', 'orphan-file']);

export class FaultLedger {
  readonly violations: Violation[] = [];
  readonly figures: Record<string, number | string> = {};

  constructor(
    /** host:port strings no answer may show (the upstreams' addresses). */
    private readonly secrets: string[] = [],
  ) {}

  add(key: string, count = 1): void {
    this.figures[key] = Number(this.figures[key] ?? 0) + count;
  }

  violation(kind: FaultKind, sent: string, problem: string): void {
    this.add('violations');
    this.add(`${kind}:violations`);
    this.violations.push({ sent: `[${kind}] ${sent}`, problem });
  }

  hideAddress(address: string): void {
    this.secrets.push(address);
  }

  /** GETs what is wanted (or a range of it) and judges the answer. */
  async get(kind: FaultKind, wanted: Wanted, options: GetOptions = {}): Promise<Outcome> {
    const { range } = options;
    const headers = { ...wanted.headers, ...(range === undefined ? {} : { range: `bytes=${range.start}-${range.end}` }) };
    const sent = `GET ${wanted.url}${range === undefined ? '' : ` Range: ${headers.range}`} (${wanted.what})`;
    let response: RawResponse;
    try {
      response = await rawGet(wanted.url, { headers, timeoutMs: options.timeoutMs ?? 30_000 });
    } catch (error) {
      const reason = error instanceof Error ? error.message : String(error);
      this.count(kind, 'noAnswer');
      if (options.killed !== true) this.violation(kind, sent, `no answer: ${reason}`);
      return { kind: 'none', reason };
    }
    const outcome = this.judge(kind, sent, wanted, response, range);
    this.count(kind, outcome.kind === 'refused' ? `status:${outcome.status}` : outcome.kind);
    return outcome;
  }

  private judge(kind: FaultKind, sent: string, wanted: Wanted, response: RawResponse, range: GetOptions['range']): Outcome {
    const { status, body } = response;
    if (status === 200 || status === 206) {
      if (!response.complete) return { kind: 'cut' };
      const problem = this.wrongBody(wanted, response, range);
      if (problem === undefined) return { kind: 'whole' };
      this.add('completeButWrong');
      this.add(`${kind}:completeButWrong`);
      this.violation(kind, sent, `a complete ${status} body that is not what was asked: ${problem}`);
      return { kind: 'wrong' };
    }
    const retryAfter = Number(response.headers['retry-after']);
    const refused: Outcome = { kind: 'refused', status, retryAfterS: Number.isFinite(retryAfter) ? retryAfter : undefined };
    if (!FAULT_STATUSES.has(status)) this.violation(kind, sent, `answered ${status}: ${body.toString('utf8').slice(0, 300)}`);
    if (!response.complete) return refused;
    const text = body.toString('utf8');
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch {
      parsed = undefined;
    }
    const errors = (parsed as { errors?: unknown } | undefined)?.errors;
    const shaped = Array.isArray(errors) && errors.length > 0 && errors.every((entry: { code?: unknown; message?: unknown }) => typeof entry.code === 'string' && typeof entry.message === 'string');
    if (!shaped) this.violation(kind, sent, `a ${status} not in the v2 error shape: ${text.slice(0, 300)}`);
    const leaked = this.secrets.find((secret) => text.includes(secret));
    if (leaked !== undefined) this.violation(kind, sent, `a ${status} naming the upstream's address ${leaked}: ${text.slice(0, 300)}`);
    return refused;
  }

  /** Why a complete body is not the one asked for, or undefined when it is. */
  private wrongBody(wanted: Wanted, response: RawResponse, range: GetOptions['range']): string | undefined {
    const named = response.headers['docker-content-digest'];
    if (named !== undefined && named !== wanted.digest) return `Docker-Content-Digest ${String(named)}, not ${wanted.digest}`;
    if (response.status === 200) {
      if (response.body.equals(wanted.bytes)) return undefined;
      return `${response.body.length} bytes hashing to ${sha256Of(response.body)}, not the ${wanted.bytes.length} of ${wanted.digest}`;
    }
    const match = /^bytes (\d+)-(\d+)\/(\d+)$/.exec(String(response.headers['content-range'] ?? ''));
    if (range === undefined || match === null) return `a 206 with Content-Range ${String(response.headers['content-range'])} to a request for ${range === undefined ? 'the whole' : `${range.start}-${range.end}`}`;
    const [start, end, total] = [Number(match[1]), Number(match[2]), Number(match[3])];
    if (start !== range.start || end !== Math.min(range.end, wanted.bytes.length - 1) || total !== wanted.bytes.length) {
      return `Content-Range ${String(response.headers['content-range'])} for bytes ${range.start}-${range.end} of ${wanted.bytes.length}`;
    }
    if (response.body.equals(wanted.bytes.subarray(start, end + 1))) return undefined;
    return `${response.body.length} bytes that are not bytes ${start}-${end} of ${wanted.digest}`;
  }

  private count(kind: FaultKind, what: string): void {
    this.add('responses');
    this.add(`${kind}:responses`);
    this.add(`responses:${what}`);
    this.add(`${kind}:${what}`);
  }

  /**
   * The next pull once a fault is gone: each wanted object whole (an open circuit is part of the fault, so a
   * Retry-After is honoured a few times). Counts one recovery, or records why there was none.
   */
  async recover(kind: FaultKind, wanted: Wanted[]): Promise<boolean> {
    for (const item of wanted) {
      const problem = await this.fetchWhole(kind, item);
      if (problem === undefined) continue;
      this.violation(kind, `GET ${item.url} (${item.what}) once the fault was gone`, `no recovery: ${problem}`);
      return false;
    }
    this.add('recoveries');
    this.add(`${kind}:recoveries`);
    return true;
  }

  /** Each wanted object must come whole (`when`: "while warming up", "during the fault", …). */
  async expectWhole(kind: FaultKind, wanted: Wanted[], when: string): Promise<void> {
    for (const item of wanted) {
      const problem = await this.fetchWhole(kind, item, when === 'during the fault' ? 1 : RECOVERY_ATTEMPTS);
      if (problem !== undefined) this.violation(kind, `GET ${item.url} (${item.what}) ${when}`, `not served whole: ${problem}`);
    }
  }

  /** undefined once the object came whole; else what the last attempt got. */
  private async fetchWhole(kind: FaultKind, item: Wanted, attempts = RECOVERY_ATTEMPTS): Promise<string | undefined> {
    let last: Outcome | undefined;
    for (let attempt = 0; attempt < attempts; attempt++) {
      last = await this.get(kind, item);
      if (last.kind !== 'refused' || last.retryAfterS === undefined || last.retryAfterS > LONGEST_RETRY_AFTER_S || ![429, 503].includes(last.status)) break;
      if (attempt === attempts - 1) break;
      this.add(`${kind}:recoveryWaits`);
      await sleep(last.retryAfterS * 1000 + 100);
    }
    if (last?.kind === 'whole') return undefined;
    if (last === undefined) return 'not asked';
    return last.kind === 'refused' ? `answered ${last.status}` : last.kind === 'none' ? `no answer (${last.reason})` : last.kind;
  }

  /**
   * `regmirror verify` on a stopped server's data directory. After a fault and its recovery it must find
   * nothing; right after a kill -9 (`crash`), temporaries and unrecorded whole files are leftovers, counted,
   * and anything else (damaged, wrong size, a record without its file) is a violation. Returns the problems.
   */
  async verify(kind: FaultKind, dataDir: string, when: 'recovered' | 'crash'): Promise<string[]> {
    const outcome = await runRegmirror(['verify', '--data', dataDir], { timeoutMs: 120_000 });
    const problems = outcome.stdout.split('\n').filter((line) => line !== '' && !line.startsWith('verify '));
    const sent = `regmirror verify --data ${dataDir} (${when === 'crash' ? 'right after the kill -9' : 'after the fault and its recovery'})`;
    if (outcome.code === 2 || (outcome.code === 0) !== (problems.length === 0)) {
      this.violation(kind, sent, `verify could not check: exit ${outcome.code}: ${outcome.stderr.trim() || outcome.stdout.trim()}`);
      return problems;
    }
    if (when === 'crash') {
      this.add('crashVerifyRuns');
      this.add(`${kind}:crashVerifyRuns`);
      for (const problem of problems) {
        const problemKind = problem.split(' ')[0] ?? '';
        if (CRASH_LEFTOVERS.has(problemKind)) this.add(`crashLeftovers:${problemKind}`);
        else this.violation(kind, sent, `found after the crash: ${problem}`);
      }
      return problems;
    }
    this.add('verifyRuns');
    this.add(`${kind}:verifyRuns`);
    this.add('verifyFindings', problems.length);
    this.add(`${kind}:verifyFindings`, problems.length);
    for (const problem of problems) this.violation(kind, sent, `verify found: ${problem}`);
    return problems;
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
