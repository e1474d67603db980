// Single flight for blobs: one upstream GET per missing object, checked as it streams into a spool file,
// followed by every client that asks meanwhile (from byte 0, as bytes land), verified, then committed.
// A reader never sees the last byte of what it asked for before the content is verified (nor waits for the commit's
// disk sync after); on failure every reader still reading is cut, so no client mistakes a short or wrong body for a
// whole one.
// The newest bytes are kept in memory, in pooled slabs (slab-window.ts) that the spool writes and the readers that
// keep up share by view (eight clients cost one copy); a reader that falls behind the window reads the spool. With no
// reader, only what is not on disk yet is kept. A reader piped to a response writes to it directly (FillReader).
// What "verified" means is a ContentCheck: a digest for v2 blobs, a size and payload checksum for v1 layers.

import { Readable } from 'node:stream';
import { SMALL_BUFFER_BYTES, type BufferBudget, type Reservation } from '../memory/buffer-budget.js';
import { DigestWriter, type Digest } from '../oci/digest.js';
import type { ObjectWriter } from '../store/object-store.js';
import { Slab, SLAB_BYTES, slabPool, SlabWindow, type SlabPool } from './slab-window.js';

/** A reader's queue, and its reads from the spool, while the send budget lasts (past it: SMALL_BUFFER_BYTES). */
const READ_CHUNK_BYTES = 1024 * 1024;
/**
 * The newest bytes received, at least, kept in memory for readers that keep up (besides those not yet
 * written, which are always kept). A reader further behind reads them back from the spool.
 */
export const MEMORY_WINDOW_BYTES = 4 * 1024 * 1024;
/**
 * Upstream bytes received but not yet in the spool, at most: past this the fill stops reading until the disk
 * catches up. They are the window's own slabs (no memory beside it). With 1 MiB a cold 500 MiB fill here spent a
 * quarter of its time waiting for spool writes to come back; 2 MiB filled as fast as 4 (0.24 vs 0.25 GB/s).
 * Drawn from the send budget: past it a fill keeps one slab unwritten, so 64 fills at once on a slow disk cost
 * the budget plus 64 slabs, not 64 × 2 MiB.
 */
export const MAX_UNWRITTEN_BYTES = 2 * 1024 * 1024;

export type FillState = 'filling' | 'committed' | 'failed';

export interface FillOptions {
  /** The longest the whole fill may take. */
  timeoutMs: number;
  /**
   * The process's send buffers: the window readers share and each reader's queue come from it, so readers that
   * stopped reading cost little once it is spent (they read the spool when they resume).
   */
  budget: BufferBudget;
  /** Where the window's slabs come from and go back to: the process's pool unless given. */
  slabs?: SlabPool;
}

export interface FillSource {
  /** The upstream body. */
  body: AsyncIterable<Uint8Array> & { destroy(error?: Error): void };
  /** The size the upstream announced, if it did. */
  size: number | undefined;
}

/** Verifies content as it streams: finish() throws a FillError when it is not what was promised. */
export interface ContentCheck {
  update(chunk: Uint8Array): void;
  finish(size: number): void;
}

/** The check for content addressed by digest. */
export function digestCheck(expected: Digest): ContentCheck {
  const hash = new DigestWriter();
  return {
    update: (chunk) => hash.update(chunk),
    finish: () => {
      const actual = hash.digest();
      if (actual !== expected) throw new FillError(`upstream content has digest ${actual}, not ${expected}`);
    },
  };
}

export interface FillHooks {
  /** Makes the verified spool visible in the store and records it; throws to fail the fill. */
  commit(spool: ObjectWriter, size: number): Promise<void>;
  onBytes(count: number): void;
  /** Called once the fill has committed or failed, before its spool closes. */
  onSettled(state: FillState, error: Error | undefined): void;
  /**
   * The spool is never committed (a relay of another node's fill, which that node commits): once settled and
   * unread it is discarded, not closed and kept.
   */
  discardSpool?: boolean;
}

/** Aborts the fills (at shutdown) and waits until each has settled: nothing partial is committed. */
export async function abortFills(flights: readonly Promise<BlobFill>[], reason: Error): Promise<void> {
  const settled = await Promise.allSettled(flights);
  const running = settled.flatMap((result) => (result.status === 'fulfilled' ? [result.value] : []));
  for (const fill of running) fill.abort(reason);
  await Promise.all(running.map((fill) => fill.done));
}

export class FillError extends Error {
  override readonly name = 'FillError';
}

export class BlobFill {
  private state: FillState = 'filling';
  private failure: Error | undefined;
  /** Bytes received from the upstream and checked against the announced size (in the window or the spool). */
  private received = 0;
  /** Bytes in the spool. */
  private written = 0;
  /** Set once the whole content is in the spool and the check passed: readers may have their last bytes. */
  private verified = false;
  private readonly slabs: SlabPool;
  private readonly window: SlabWindow;
  /** The window's share of the send budget, held while the fill has readers. */
  private windowReservation: Reservation | undefined;
  private readers = 0;
  private spoolClosed = false;
  private readonly progress = new Progress();
  /** Settles when the fill is committed or has failed; never rejects. */
  readonly done: Promise<FillState>;

  constructor(
    private readonly check: ContentCheck,
    private readonly spool: ObjectWriter,
    private readonly source: FillSource,
    private readonly hooks: FillHooks,
    private readonly options: FillOptions,
  ) {
    this.slabs = options.slabs ?? slabPool;
    this.window = new SlabWindow(source.size, this.slabs);
    this.done = this.run(options.timeoutMs);
  }

  /** The announced size, or the verified one once committed. */
  get size(): number | undefined {
    return this.state === 'committed' ? this.written : this.source.size;
  }

  get status(): FillState {
    return this.state;
  }

  /** Stops the fill (at shutdown); readers are destroyed and nothing is committed. */
  abort(reason: Error): void {
    this.source.body.destroy(reason);
  }

  /** A stream of bytes start..end (inclusive; end undefined: to the end), following the fill. */
  createReader(start = 0, end?: number): Readable {
    // Committed with no reader left, the spool is closed: the blob is read from the store instead.
    // (A reader of a failed fill fails at once, on its first read.)
    if (this.spoolClosed && this.state === 'committed') throw new Error('this fill has committed and closed its spool');
    this.readers += 1;
    if (this.readers === 1 && this.state === 'filling') this.windowReservation = this.options.budget.reserve(MEMORY_WINDOW_BYTES, 0);
    const queue = this.options.budget.reserve(READ_CHUNK_BYTES, SMALL_BUFFER_BYTES);
    const feed: FillFeed = {
      next: (position, max) => this.next(position, end, max),
      readSpool: (from, to) => this.readSpool(from, to),
      readSpoolSlab: (from, to) => this.readSpoolSlab(from, to),
      progress: () => this.progress.next(),
      left: () => {
        queue.release();
        this.readers -= 1;
        if (this.readers === 0) this.releaseWindow();
        void this.closeSpoolIfIdle();
      },
    };
    return new FillReader(feed, start, queue.bytes);
  }

  /** What a reader at `position` that wants bytes up to `end` (inclusive; undefined: all) gets next, at most `max` bytes. */
  private next(position: number, end: number | undefined, max: number): Step {
    const last = end ?? (this.verified ? this.written - 1 : Number.POSITIVE_INFINITY);
    if (position > last) return { kind: 'done' };
    // One error type for every cause (cut, lie, timeout, shutdown): the HTTP layer answers it as the upstream's fault.
    if (this.state === 'failed') return { kind: 'failed', error: new FillError('the upstream transfer failed', { cause: this.failure }) };
    // Until verified, hold back the newest byte and the last byte this reader asked for.
    const limit = this.verified ? Math.min(this.written, last + 1) : Math.min(this.received - 1, last);
    if (position >= limit) return { kind: 'wait' };
    const to = Math.min(limit, position + max);
    const inMemory = this.window.view(position, to);
    if (inMemory !== undefined) return { kind: 'memory', ...inMemory };
    // Before the window: on disk. (The window holds everything not written yet.)
    return { kind: 'spool', from: position, to: Math.min(to, this.window.start ?? this.written, position + READ_CHUNK_BYTES) };
  }

  private async run(timeoutMs: number): Promise<FillState> {
    const timer = setTimeout(() => {
      this.source.body.destroy(new FillError(`fill did not finish within ${timeoutMs} ms`));
    }, timeoutMs);
    const unwritten = this.options.budget.reserve(MAX_UNWRITTEN_BYTES, SLAB_BYTES);
    // The disk write of one batch overlaps the network read and hashing of the next.
    const writer = new WriteBehind(this.spool, {
      written: (bytes) => {
        this.written += bytes;
        // With no reader, only what is not on disk yet stays in memory.
        this.window.forgetBefore(this.written, this.windowReservation?.bytes ?? 0);
      },
      // Stop reading at once: the loop may be waiting for the upstream's next chunk.
      failed: (error) => this.source.body.destroy(error),
    });
    try {
      for await (const chunk of this.source.body) {
        if (chunk.length === 0) continue;
        this.check.update(chunk);
        this.hooks.onBytes(chunk.length);
        if (this.source.size !== undefined && this.received + chunk.length > this.source.size) {
          throw new FillError(`upstream sent more than the ${this.source.size} bytes it announced`);
        }
        writer.push(this.window.append(chunk));
        this.received += chunk.length;
        this.progress.notify();
        if (writer.backlog >= unwritten.bytes) await writer.drained();
      }
      await writer.drained();
      if (this.source.size !== undefined && this.written !== this.source.size) {
        throw new FillError(`upstream sent ${this.written} of ${this.source.size} bytes`);
      }
      this.check.finish(this.written);
      // Verified: readers need not wait for the commit (a disk sync of the whole blob, a rename, a record).
      this.verified = true;
      this.progress.notify();
      await this.hooks.commit(this.spool, this.written);
      this.state = 'committed';
    } catch (error) {
      this.failure = error instanceof Error ? error : new FillError(String(error));
      this.state = 'failed';
      this.source.body.destroy();
      // A write still running must end before the spool goes, and before its slabs can be written over.
      await writer.drained().catch(() => undefined);
      this.window.clear();
      await this.spool.abort().catch(() => undefined);
    } finally {
      clearTimeout(timer);
      unwritten.release();
      this.releaseWindow();
      // Every byte is on disk (or the fill failed): readers still reading, stalled ones too, read the spool, and
      // the window's slabs go back to the pool with its share of the budget, not when the last reader leaves.
      this.window.clear();
      this.hooks.onSettled(this.state, this.failure);
      this.progress.notify();
      await this.closeSpoolIfIdle();
    }
    return this.state;
  }

  /** Bytes from..to (not including to) from the spool: only what next() said is on disk. */
  private async readSpool(from: number, to: number): Promise<Buffer> {
    const chunk = await this.spool.readAt(from, to - from);
    if (chunk.length === 0) throw new FillError('the spool is shorter than what was written to it');
    return chunk;
  }

  /** As readSpool (at most a slab's worth), into a slab of the pool that the caller holds and must release. */
  private async readSpoolSlab(from: number, to: number): Promise<{ slab: Slab; bytes: Uint8Array }> {
    const slab = new Slab(from, this.slabs.take(), this.slabs);
    try {
      const count = await this.spool.readInto(slab.bytes.subarray(0, Math.min(to - from, SLAB_BYTES)), from);
      if (count === 0) throw new FillError('the spool is shorter than what was written to it');
      return { slab, bytes: slab.bytes.subarray(0, count) };
    } catch (error) {
      slab.release();
      throw error;
    }
  }

  /** Why the fill failed, for the log. */
  get error(): Error | undefined {
    return this.failure;
  }

  /** Once nothing follows the fill live, its window is no longer memory readers need. */
  private releaseWindow(): void {
    this.windowReservation?.release();
    this.windowReservation = undefined;
  }

  /** Once settled with no reader left, nobody needs the spool or the window: the slabs go back to the pool. */
  private async closeSpoolIfIdle(): Promise<void> {
    if (this.state === 'filling' || this.readers > 0) return;
    this.window.clear();
    this.spoolClosed = true;
    await (this.hooks.discardSpool === true ? this.spool.abort() : this.spool.close());
  }
}

/** What a reader gets next from its fill. */
type Step =
  | { kind: 'done' }
  | { kind: 'failed'; error: FillError }
  | { kind: 'wait' }
  | { kind: 'memory'; slab: Slab; bytes: Uint8Array }
  | { kind: 'spool'; from: number; to: number };

/** What a FillReader needs of its fill. */
interface FillFeed {
  next(position: number, max: number): Step;
  readSpool(from: number, to: number): Promise<Buffer>;
  /** Spool bytes in a slab of the pool: the caller holds it once and must release it. */
  readSpoolSlab(from: number, to: number): Promise<{ slab: Slab; bytes: Uint8Array }>;
  /** Resolves when the fill has moved (more bytes, verified, settled). */
  progress(): Promise<void>;
  /** The reader is done (ended or destroyed): called once. */
  left(): void;
}

/** A response or any other writable a reader can be piped to. */
type Destination = NodeJS.WritableStream & { destroyed?: boolean };

/**
 * A reader of a fill. Read as a stream by any consumer, it pushes views of the fill's slabs, which are then never
 * reused (nobody says when they are done with them). Piped whole to a destination (the HTTP layer sends a body so),
 * it writes to it directly instead: no stream in between, and each slab goes back to the pool once the socket has
 * taken its bytes (the write's callback).
 */
class FillReader extends Readable {
  private position: number;
  private pumping = false;
  private piped = false;
  private hasLeft = false;

  constructor(
    private readonly feed: FillFeed,
    start: number,
    /** The most it may have queued at once: its reservation from the send budget. */
    private readonly queueBytes: number,
  ) {
    super({ highWaterMark: queueBytes });
    this.position = start;
  }

  override pipe<T extends NodeJS.WritableStream>(destination: T, options?: { end?: boolean }): T {
    if (this.piped || this.pumping || this.readableFlowing !== null || options?.end === false) return super.pipe(destination, options);
    this.piped = true;
    this.follow(this.writingTo(destination)).catch((error: unknown) => this.destroy(error as Error));
    return destination;
  }

  override _read(): void {
    if (this.pumping || this.piped) return;
    this.pumping = true;
    this.follow(this.pushing()).catch((error: unknown) => this.destroy(error as Error));
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    this.leave();
    callback(error);
  }

  /**
   * Passes the fill's bytes to sink until the end, a failure, or the sink says to stop (a stream that is full: its
   * next read() starts this again, so `pumping` is cleared in the same tick this stops).
   */
  private async follow(sink: Sink): Promise<void> {
    try {
      for (;;) {
        if (this.destroyed) return;
        if (sink.gone()) {
          this.destroy();
          return;
        }
        const step = this.feed.next(this.position, this.queueBytes);
        let more: boolean;
        switch (step.kind) {
          case 'done':
            sink.end();
            this.leave();
            return;
          case 'failed':
            this.destroy(step.error);
            return;
          case 'wait':
            await this.feed.progress();
            continue;
          case 'memory': {
            this.position += step.bytes.length;
            const passed = sink.pass(step.bytes, step.slab);
            more = typeof passed === 'boolean' ? passed : await passed;
            break;
          }
          case 'spool': {
            const read = await sink.read(step.from, step.to);
            this.position += read.bytes.length;
            let passed: boolean | Promise<boolean>;
            try {
              passed = sink.pass(read.bytes, read.slab);
            } finally {
              read.slab?.release();
            }
            more = typeof passed === 'boolean' ? passed : await passed;
            break;
          }
        }
        // Returns in the tick the stream said it is full (no await after push): see above.
        if (!more) return;
      }
    } finally {
      this.pumping = false;
    }
  }

  /** Read as a stream: its chunks are views given away for good, so their slabs are never reused. */
  private pushing(): Sink {
    return {
      gone: () => false,
      read: async (from, to) => ({ slab: undefined, bytes: await this.feed.readSpool(from, to) }),
      pass: (bytes, slab) => {
        slab?.escape();
        return this.push(bytes);
      },
      end: () => this.push(null),
    };
  }

  /** Piped: writes to destination, waiting for it to drain; this stream carries no bytes, only its end. */
  private writingTo(destination: Destination): Sink {
    // Past the send budget a reader's queue is small: it writes copies that size, and holds no slab while stalled.
    const copies = this.queueBytes < SLAB_BYTES;
    return {
      gone: () => destination.destroyed === true,
      // Into a slab of the pool (which goes back once the destination has taken its bytes), or a copy's own buffer.
      read: async (from, to) => (copies ? { slab: undefined, bytes: await this.feed.readSpool(from, to) } : this.feed.readSpoolSlab(from, to)),
      pass: (bytes, slab) => {
        const flowing = slab === undefined ? destination.write(bytes) : copies ? destination.write(Buffer.from(bytes)) : writeHeld(destination, slab, bytes);
        return flowing || drained(destination).then(() => true);
      },
      end: () => {
        // This stream ends first: whoever waits for its end before the destination's (fastify does) sees it.
        this.push(null);
        this.resume();
        destination.end();
      },
    };
  }

  private leave(): void {
    if (this.hasLeft) return;
    this.hasLeft = true;
    this.feed.left();
  }
}

/** Where a reader passes the fill's bytes. */
interface Sink {
  /** Whoever it passed them to is gone: the reader stops. */
  gone(): boolean;
  /** Reads from..to of the spool (or less); a slab returned is held once, for the reader to release after pass(). */
  read(from: number, to: number): Promise<{ slab: Slab | undefined; bytes: Uint8Array }>;
  /** Passes on bytes (of a slab, if given); false, or a promise of it: stop until called again. */
  pass(bytes: Uint8Array, slab: Slab | undefined): boolean | Promise<boolean>;
  end(): void;
}

/**
 * Writes a view of a slab, holding the slab until the destination calls back (it has taken the bytes, or failed). A
 * destination that never calls back (one destroyed meanwhile) keeps it from the pool for good, which is safe.
 */
function writeHeld(destination: Destination, slab: Slab, bytes: Uint8Array): boolean {
  slab.hold();
  try {
    return destination.write(bytes, () => slab.release());
  } catch (error) {
    // Refused outright (a write after the end, a body longer than its Content-Length): no callback will come.
    slab.release();
    throw error;
  }
}

/** Resolves when destination drains, or closes (the loop then sees it destroyed). */
function drained(destination: Destination): Promise<void> {
  if (destination.destroyed === true) return Promise.resolve();
  return new Promise((resolve) => {
    const done = (): void => {
      destination.removeListener('drain', done);
      destination.removeListener('close', done);
      destination.removeListener('error', done);
      resolve();
    };
    destination.on('drain', done);
    destination.on('close', done);
    destination.on('error', done);
  });
}

/**
 * Wakes the readers waiting for a fill's next bytes: once per turn of the event loop however many chunks arrived in
 * it, so a reader that keeps up takes them in one step.
 */
class Progress {
  private waiters: Array<() => void> = [];
  private scheduled = false;

  /** Resolves at the next notify(), after the microtasks of the turn that called it. */
  next(): Promise<void> {
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  notify(): void {
    if (this.scheduled || this.waiters.length === 0) return;
    this.scheduled = true;
    process.nextTick(() => {
      this.scheduled = false;
      const waiters = this.waiters;
      this.waiters = [];
      for (const wake of waiters) wake();
    });
  }
}

/** Appends views to a spool one write at a time, each write taking everything that arrived meanwhile. */
class WriteBehind {
  private queue: Uint8Array[] = [];
  private queuedBytes = 0;
  private flushing: Promise<void> | undefined;
  private failure: Error | undefined;

  constructor(
    private readonly spool: ObjectWriter,
    private readonly on: { written(bytes: number): void; failed(error: Error): void },
  ) {}

  /** Bytes pushed and not written yet. */
  get backlog(): number {
    return this.queuedBytes;
  }

  /** Queues views of bytes that stay as they are until written; throws the error of an earlier write that failed. */
  push(views: readonly Uint8Array[]): void {
    if (this.failure !== undefined) throw this.failure;
    for (const view of views) {
      const last = this.queue.at(-1);
      // A view that continues the last one in the same slab joins it: one write covers a slab, not each chunk.
      if (last !== undefined && last.buffer === view.buffer && last.byteOffset + last.length === view.byteOffset) {
        this.queue[this.queue.length - 1] = new Uint8Array(last.buffer, last.byteOffset, last.length + view.length);
      } else {
        this.queue.push(view);
      }
      this.queuedBytes += view.length;
    }
    this.flushing ??= this.flush();
  }

  /** Resolves once everything pushed is written; rejects with the first write error. */
  async drained(): Promise<void> {
    while (this.flushing !== undefined) await this.flushing;
    if (this.failure !== undefined) throw this.failure;
  }

  /**
   * Never rejects: a failure is kept for push() and drained(). Started only with chunks queued and no failure,
   * so it always awaits a write before its finally clears `flushing` (a push meanwhile joins this flush).
   */
  private async flush(): Promise<void> {
    try {
      while (this.queue.length > 0 && this.failure === undefined) {
        const batch = this.queue;
        const bytes = this.queuedBytes;
        this.queue = [];
        this.queuedBytes = 0;
        await this.spool.appendAll(batch);
        this.on.written(bytes);
      }
    } catch (error) {
      this.failure = error instanceof Error ? error : new Error(String(error));
      this.queue = [];
      this.queuedBytes = 0;
      this.on.failed(this.failure);
    } finally {
      this.flushing = undefined;
    }
  }
}
