// The memory every response together may hold for sending (limits.sendBuffers): a cached blob's read buffers, the
// window of a fill that readers share, each reader's queue. Within the budget a stream gets large buffers (fast);
// past it, small ones — so a crowd of clients that stopped reading costs kilobytes each, not megabytes, and nobody
// is refused.

export interface Reservation {
  /** The bytes granted: what was wanted, or the minimum once the budget is spent. */
  readonly bytes: number;
  /** Gives the bytes back; a second call does nothing. */
  release(): void;
}

export class BufferBudget {
  private inUse = 0;

  constructor(private readonly limitBytes: number) {}

  /** Bytes reserved now (the minimums granted past the limit included). */
  get used(): number {
    return this.inUse;
  }

  get limit(): number {
    return this.limitBytes;
  }

  /** Reserves `wanted` bytes when they fit in the budget, else `minimum` (always granted). */
  reserve(wanted: number, minimum: number): Reservation {
    const bytes = this.inUse + wanted <= this.limitBytes ? wanted : Math.min(wanted, minimum);
    this.inUse += bytes;
    let released = false;
    return {
      bytes,
      release: () => {
        if (released) return;
        released = true;
        this.inUse -= bytes;
      },
    };
  }
}

/** What a stream gets past the budget: enough to keep a socket busy, little enough for thousands of them. */
export const SMALL_BUFFER_BYTES = 64 * 1024;

/** A budget that never runs out, for tools and tests that serve nothing concurrently. */
export function unlimitedBudget(): BufferBudget {
  return new BufferBudget(Number.MAX_SAFE_INTEGER);
}
