// Negative answers, remembered for a short time: a client looping over a missing tag or blob costs the upstream
// one request per TTL, not one per try (an upstream's rate limit is spent on content that exists).

import { RegistryError } from '../registry/errors.js';
import { BoundedCache } from '../registry/bounded-cache.js';

/** At most this many answers are remembered; the least recently asked go first. */
const MAX_ENTRIES = 10_000;

interface Remembered {
  error: RegistryError;
  expiresAt: number;
}

export class NotFoundCache {
  private readonly answers = new BoundedCache<string, Remembered>(MAX_ENTRIES, () => 1);

  constructor(
    private readonly ttlMs: number,
    private readonly now: () => number = Date.now,
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
    try {
      return await work();
    } catch (error) {
      if (this.ttlMs > 0 && isUpstreamNotFound(error)) this.answers.set(key, { error, expiresAt: this.now() + this.ttlMs });
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
  return new RegistryError(error.code, { message: error.message, detail: error.detail, headers: error.headers });
}
