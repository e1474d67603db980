// What an upstream will still take: its announced rate limit (RateLimit-Limit/-Remaining, Docker Hub's
// `100;w=21600` form too) and a circuit that opens on 429, an exhausted budget or repeated failures, so
// that while it is open cached content is served at once and uncached requests fail fast instead of
// waiting for a timeout. When the window ends, one probe request goes through; its outcome decides.

import { RegistryError } from '../registry/errors.js';

export interface BudgetPolicy {
  /** Consecutive failures (unreachable, timeouts, 5xx) that open the circuit. */
  failureThreshold: number;
  /** The first wait when the upstream gave no Retry-After; doubled at each opening in a row. */
  backoffBaseMs: number;
  backoffMaxMs: number;
}

export type CircuitState = 'closed' | 'open' | 'half-open';

export interface RateLimitState {
  limit: number | undefined;
  remaining: number | undefined;
  windowSeconds: number | undefined;
}

export interface BudgetSnapshot {
  circuit: CircuitState;
  /** Why the circuit is open: `rate-limited` (429 or budget spent) or `failing`. */
  reason: 'rate-limited' | 'failing' | undefined;
  /** When the open window ends (ms since epoch). */
  openUntil: number | undefined;
  consecutiveFailures: number;
  rateLimit: RateLimitState;
  lastError: { message: string; at: number } | undefined;
}

export type Admission = 'normal' | 'probe';

export interface BudgetEvents {
  /** `seenHere`: this process saw the failure (false: another node shared it, adoptOpening). */
  opened(reason: 'rate-limited' | 'failing', waitMs: number, cause: string, seenHere: boolean): void;
  closed(): void;
}

export class UpstreamBudget {
  private circuit: CircuitState = 'closed';
  private reason: 'rate-limited' | 'failing' | undefined;
  private openUntil = 0;
  private consecutiveFailures = 0;
  private openingsInARow = 0;
  private probing = false;
  private lastError: { message: string; at: number } | undefined;
  private readonly rateLimit: RateLimitState = { limit: undefined, remaining: undefined, windowSeconds: undefined };

  constructor(
    private readonly upstreamName: string,
    private readonly policy: BudgetPolicy,
    private readonly events: BudgetEvents,
    private readonly now: () => number = Date.now,
  ) {}

  /** Before a request: throws the fail-fast error while the circuit is open; 'probe' for the one trial request. */
  admit(): Admission {
    if (this.circuit === 'closed') return 'normal';
    const now = this.now();
    if (this.circuit === 'open' && now >= this.openUntil) this.circuit = 'half-open';
    if (this.circuit === 'half-open' && !this.probing) {
      this.probing = true;
      return 'probe';
    }
    throw this.failFast(now);
  }

  /** After a response arrived (any status). */
  recordResponse(status: number, headers: Record<string, string | string[] | undefined>): void {
    this.readRateLimit(headers);
    if (status === 429) {
      const retryAfterMs = parseRetryAfter(first(headers['retry-after']), this.now());
      // However long the upstream asks, the circuit waits at most backoffMax: then one probe asks again.
      this.fail(`answered 429`, 'rate-limited', retryAfterMs === undefined ? undefined : Math.min(retryAfterMs, this.policy.backoffMaxMs));
      return;
    }
    if (status >= 500) {
      this.fail(`answered ${status}`, 'failing', undefined);
      return;
    }
    this.succeed();
    if (this.rateLimit.remaining === 0) this.open('rate-limited', this.backoff(), 'rate-limit budget spent (RateLimit-Remaining: 0)');
  }

  /** After a request got no response at all (unreachable, timed out, reset). */
  recordFailure(error: Error): void {
    this.fail(error.message, 'failing', undefined);
  }

  /** A probe that ended without a response or a failure being recorded (e.g. its token request failed). */
  abandonProbe(error: Error): void {
    if (this.probing) this.fail(error.message, 'failing', undefined);
  }

  /**
   * An opening another node saw (a cluster shares them): the circuit opens here too until that time, unless it is
   * open longer already or probing. It does not count as an opening in a row of this node's own.
   */
  adoptOpening(reason: 'rate-limited' | 'failing', openUntil: number, cause: string): void {
    const now = this.now();
    if (openUntil <= now || this.probing || (this.circuit === 'open' && this.openUntil >= openUntil)) return;
    this.circuit = 'open';
    this.reason = reason;
    this.openUntil = openUntil;
    this.lastError = { message: `${cause} (seen by another node)`, at: now };
    this.events.opened(reason, openUntil - now, cause, false);
  }

  /** The upstream's RateLimit-Remaining, as last reported. */
  get rateLimitRemaining(): number | undefined {
    return this.rateLimit.remaining;
  }

  snapshot(): BudgetSnapshot {
    return {
      circuit: this.circuit,
      reason: this.circuit === 'closed' ? undefined : this.reason,
      openUntil: this.circuit === 'closed' ? undefined : this.openUntil,
      consecutiveFailures: this.consecutiveFailures,
      rateLimit: { ...this.rateLimit },
      lastError: this.lastError,
    };
  }

  private fail(message: string, reason: 'rate-limited' | 'failing', waitMs: number | undefined): void {
    this.lastError = { message, at: this.now() };
    this.consecutiveFailures += 1;
    const wasProbe = this.probing;
    this.probing = false;
    // Requests already in flight when the circuit opened report their failures too: they must not extend
    // the window or count as further openings (only a failed probe re-opens).
    if (this.circuit !== 'closed' && !wasProbe) return;
    if (reason === 'rate-limited' || wasProbe || this.consecutiveFailures >= this.policy.failureThreshold) {
      this.open(reason, waitMs ?? this.backoff(), message);
    }
  }

  private succeed(): void {
    this.consecutiveFailures = 0;
    this.probing = false;
    this.openingsInARow = 0;
    if (this.circuit !== 'closed') {
      this.circuit = 'closed';
      this.reason = undefined;
      this.events.closed();
    }
  }

  private open(reason: 'rate-limited' | 'failing', waitMs: number, cause: string): void {
    this.circuit = 'open';
    this.reason = reason;
    this.openUntil = this.now() + waitMs;
    this.openingsInARow += 1;
    this.events.opened(reason, waitMs, cause, true);
  }

  /** base × 2^(openings in a row), capped. */
  private backoff(): number {
    return Math.min(this.policy.backoffMaxMs, this.policy.backoffBaseMs * 2 ** this.openingsInARow);
  }

  private failFast(now: number): RegistryError {
    const retryAfter = String(Math.max(1, Math.ceil((this.openUntil - now) / 1000)));
    if (this.reason === 'rate-limited') {
      return new RegistryError('TOOMANYREQUESTS', {
        message: `upstream ${this.upstreamName} is rate-limiting requests; not asking again before the window ends`,
        headers: { 'retry-after': retryAfter },
      });
    }
    return new RegistryError('UNAVAILABLE', {
      message: `upstream ${this.upstreamName} is failing; not asking again before the window ends`,
      headers: { 'retry-after': retryAfter },
    });
  }

  private readRateLimit(headers: Record<string, string | string[] | undefined>): void {
    const limit = parseRateLimitValue(first(headers['ratelimit-limit']));
    const remaining = parseRateLimitValue(first(headers['ratelimit-remaining']));
    if (limit !== undefined) {
      this.rateLimit.limit = limit.value;
      this.rateLimit.windowSeconds = limit.window ?? this.rateLimit.windowSeconds;
    }
    if (remaining !== undefined) {
      this.rateLimit.remaining = remaining.value;
      this.rateLimit.windowSeconds = remaining.window ?? this.rateLimit.windowSeconds;
    }
  }
}

function first(value: string | string[] | undefined): string | undefined {
  return Array.isArray(value) ? value[0] : value;
}

/** `100`, or Docker Hub's `100;w=21600`. */
export function parseRateLimitValue(text: string | undefined): { value: number; window: number | undefined } | undefined {
  const match = /^\s*(\d+)\s*(?:;\s*w\s*=\s*(\d+))?/.exec(text ?? '');
  if (!match) return undefined;
  return { value: Number(match[1]), window: match[2] === undefined ? undefined : Number(match[2]) };
}

/** Retry-After as seconds or an HTTP date, in ms from now; undefined when absent or unreadable. */
export function parseRetryAfter(text: string | undefined, now: number): number | undefined {
  if (text === undefined) return undefined;
  const trimmed = text.trim();
  if (/^\d+$/.test(trimmed)) return Number(trimmed) * 1000;
  const date = Date.parse(trimmed);
  return Number.isNaN(date) ? undefined : Math.max(0, date - now);
}
