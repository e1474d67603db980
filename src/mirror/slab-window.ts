// The newest bytes of a fill in memory: the upstream's chunks copied into slabs that the spool writes and the readers
// share by view, each slab going back to a process-wide pool once nothing holds a view of it. A fill then allocates
// nothing per chunk, and no megabytes of spent chunks wait for the garbage collector (which kept the process's
// memory high and cost it time).

/** A slab's size: a socket or spool write covers up to this much at once. */
export const SLAB_BYTES = 256 * 1024;
/**
 * Free slabs kept (12 MiB at most): about what one fill followed by eight clients has in use at its peak (its window,
 * and a slab or two per client in flight). A slab let go when the pool is full is left to the garbage collector, and
 * by then it has lived long enough to wait for a full collection: with 8 kept, 35-65 slabs of a fill with eight
 * clients went that way (10-16 MiB more at the peak); with 48, one.
 */
const POOLED_SLABS = 48;

/** Slabs no fill is using, ready to be written over. */
export class SlabPool {
  private readonly free: Buffer[] = [];

  constructor(private readonly keep: number) {}

  /** Free slabs held now. */
  get size(): number {
    return this.free.length;
  }

  take(): Buffer {
    return this.free.pop() ?? Buffer.allocUnsafeSlow(SLAB_BYTES);
  }

  put(bytes: Buffer): void {
    if (bytes.length === SLAB_BYTES && this.free.length < this.keep) this.free.push(bytes);
  }
}

export const slabPool = new SlabPool(POOLED_SLABS);

/**
 * Part of a fill's bytes, from position `start`. Views of it are handed out; its memory goes back to the pool only
 * when every holder has let go (the window, and each write in flight that hold() was called for), and never once a
 * view went to someone who will not say when they are done with it (escape()).
 */
export class Slab {
  /** Its first holder's hold (the window's, until it forgets the slab). */
  private holds = 1;
  private escaped = false;

  constructor(
    readonly start: number,
    readonly bytes: Buffer,
    private readonly pool: SlabPool,
  ) {}

  /** One more holder, who must call release() exactly once. */
  hold(): void {
    this.holds += 1;
  }

  release(): void {
    this.holds -= 1;
    if (this.holds === 0 && !this.escaped) this.pool.put(this.bytes);
  }

  /** A view was given away for good: this memory is never written over (the garbage collector frees it). */
  escape(): void {
    this.escaped = true;
  }
}

/** The slabs of a fill by position, oldest first. Bytes appended are never written over while a slab is held. */
export class SlabWindow {
  private slabs: Slab[] = [];
  /** The position after the last byte appended. */
  private end = 0;

  /** `size`: what the upstream announced; no slab is made larger than what remains of it. */
  constructor(
    private readonly size: number | undefined,
    private readonly pool: SlabPool = slabPool,
  ) {}

  /** The position of the oldest byte held, or undefined when none is. */
  get start(): number | undefined {
    return this.slabs[0]?.start;
  }

  /** Bytes held, counting the unused end of the newest slab. */
  get heldBytes(): number {
    return this.slabs.reduce((sum, slab) => sum + slab.bytes.length, 0);
  }

  /** Copies chunk in after what is held; returns views of the copy (one per slab it landed in). */
  append(chunk: Uint8Array): Uint8Array[] {
    const views: Uint8Array[] = [];
    let offset = 0;
    while (offset < chunk.length) {
      let slab = this.slabs.at(-1);
      if (slab === undefined || this.end === slab.start + slab.bytes.length) {
        slab = new Slab(this.end, this.newSlabBytes(), this.pool);
        this.slabs.push(slab);
      }
      const at = this.end - slab.start;
      const count = Math.min(slab.bytes.length - at, chunk.length - offset);
      slab.bytes.set(chunk.subarray(offset, offset + count), at);
      views.push(slab.bytes.subarray(at, at + count));
      offset += count;
      this.end += count;
    }
    return views;
  }

  /** Lets go of the oldest slabs that lie wholly before `position` while more than `keep` bytes remain after them. */
  forgetBefore(position: number, keep: number): void {
    let drop = 0;
    for (const slab of this.slabs) {
      const slabEnd = slab.start + slab.bytes.length;
      if (slabEnd > position || this.end - slabEnd < keep) break;
      drop += 1;
    }
    if (drop === 0) return;
    for (const slab of this.slabs.slice(0, drop)) slab.release();
    this.slabs = this.slabs.slice(drop);
  }

  /** Lets go of every slab. */
  clear(): void {
    for (const slab of this.slabs) slab.release();
    this.slabs = [];
  }

  /**
   * The bytes from position up to (not including) limit, as far as the slab holding position goes, and that slab;
   * undefined if no slab here holds position.
   */
  view(position: number, limit: number): { slab: Slab; bytes: Uint8Array } | undefined {
    if (position >= this.end) return undefined;
    // Readers that keep up ask for the newest slabs: look from the end.
    for (let index = this.slabs.length - 1; index >= 0; index--) {
      const slab = this.slabs[index];
      if (slab === undefined || position < slab.start) continue;
      const to = Math.min(limit, this.end, slab.start + slab.bytes.length);
      return { slab, bytes: slab.bytes.subarray(position - slab.start, to - slab.start) };
    }
    return undefined;
  }

  private newSlabBytes(): Buffer {
    const left = this.size === undefined ? SLAB_BYTES : this.size - this.end;
    // A small blob gets a slab its size (not pooled); past the announced size the fill fails anyway.
    return left > 0 && left < SLAB_BYTES ? Buffer.allocUnsafeSlow(left) : this.pool.take();
  }
}
