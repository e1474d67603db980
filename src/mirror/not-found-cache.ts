// Negative answers, remembered for a short time: a client looping over a missing tag or blob costs the upstream
// one request per TTL, not one per try (an upstream's rate limit is spent on content that exists). In a cluster the
// answers are shared: a 404 one node had is answered by every node until it expires.

import { RegistryError, type ErrorCodeName } from '../registry/errors.js';
import { BoundedCache } from '../registry/bounded-cache.js';

/** At most this many answers are remembered; the least recently asked go first. */
const MAX_ENTRIES = 10_000;

interface Remembered {
  error: RegistryError;
  expiresAt: number;
}

/** A remembered answer as the nodes of a cluster share it. */
export interface SharedNotFoundAnswer {
  code: ErrorCodeName;
  status: number;
  message: string;
  detail: unknown;
  headers: Record<string, string>;
  /** ms since epoch. */
  expiresAt: number;
}

/** Where the nodes of a cluster share their answers (cluster/cluster.ts); neither call throws. */
export interface SharedNotFound {
  recallNotFound(key: string): Promise<SharedNotFoundAnswer | undefined>;
  rememberNotFound(key: string, answer: SharedNotFoundAnswer): Promise<void>;
}

export class NotFoundCache {
  private readonly answers = new BoundedCache<string, Remembered>(MAX_ENTRIES, () => 1);

  constructor(
    private readonly ttlMs: number,
    private readonly now: () => number = Date.now,
    private readonly shared?: SharedNotFound,
  ) {}

  /**
   * Runs work unless the upstream said "not found" for key within the TTL (then that answer is thrown again);
   * a "not found" from the upstream (a 404 naming it) is remembered.
   */
  async guard<T>(key: string, work: () => Promise<T>): Promise<T> {
    const remembered = this.answers.get(key);
    if (remembered !== undefined) {
      if (remembered.expiresAt > this.now()) throw copy(remembered.error);
      this.answers.delete(key);
    }
    if (this.ttlMs > 0 && this.shared !== undefined) {
      const answer = await this.shared.recallNotFound(key);
      if (answer !== undefined && answer.expiresAt > this.now()) {
        const error = new RegistryError(answer.code, { message: answer.message, detail: answer.detail, headers: answer.headers, status: answer.status });
        this.answers.set(key, { error, expiresAt: answer.expiresAt });
        throw copy(error);
      }
    }
    try {
      return await work();
    } catch (error) {
      if (this.ttlMs > 0 && isUpstreamNotFound(error)) {
        const expiresAt = this.now() + this.ttlMs;
        this.answers.set(key, { error, expiresAt });
        await this.shared?.rememberNotFound(key, { code: error.code, status: error.status, message: error.message, detail: error.detail, headers: error.headers, expiresAt });
      }
      throw error;
    }
  }

  /** Forgets key (the content has been found meanwhile). */
  forget(key: string): void {
    this.answers.delete(key);
  }
}

/** A 404 that the upstream gave (UpstreamClient.errorFor names it in the detail). */
function isUpstreamNotFound(error: unknown): error is RegistryError {
  return error instanceof RegistryError && error.status === 404 && typeof (error.detail as { upstream?: unknown } | undefined)?.upstream === 'string';
}

function copy(error: RegistryError): RegistryError {
  return new RegistryError(error.code, { message: error.message, detail: error.detail, headers: error.headers, status: error.status });
}
