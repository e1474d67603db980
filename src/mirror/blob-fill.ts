// Single flight for blobs: one upstream GET per missing object, checked as it streams into a spool file,
// followed by every client that asks meanwhile (from byte 0, as bytes land), verified, then committed.
// A reader never sees the last byte of what it asked for before the content is verified (nor waits for the commit's
// disk sync after); on failure every reader still reading is cut, so no client mistakes a short or wrong body for a
// whole one.
// Readers that keep up are handed the upstream's own chunks from a window of the newest bytes in memory
// (shared, not copied: eight clients cost one copy; nothing may write into a chunk it is handed); a reader
// that falls behind the window reads the spool. With no reader, only what is not on disk yet is kept.
// What "verified" means is a ContentCheck: a digest for v2 blobs, a size and payload checksum for v1 layers.

import { EventEmitter } from 'node:events';
import { Readable } from 'node:stream';
import { SMALL_BUFFER_BYTES, type BufferBudget, type Reservation } from '../memory/buffer-budget.js';
import { DigestWriter, type Digest } from '../oci/digest.js';
import type { SpoolFile } from '../store/spool-file.js';

/** A reader's queue, and its reads from the spool, while the send budget lasts (past it: SMALL_BUFFER_BYTES). */
const READ_CHUNK_BYTES = 1024 * 1024;
/**
 * The newest bytes received, at least, kept in memory for readers that keep up (besides those not yet
 * written, which are always kept). A reader further behind reads them back from the spool.
 */
export const MEMORY_WINDOW_BYTES = 4 * 1024 * 1024;
/**
 * Upstream bytes received but not yet in the spool, at most: past this the fill stops reading until the disk
 * catches up. 4 MiB filled about 15% faster than 1 MiB here, and took 15–35 MiB more with 8 clients (bench/).
 */
export const MAX_UNWRITTEN_BYTES = 1024 * 1024;

export type FillState = 'filling' | 'committed' | 'failed';

export interface FillOptions {
  /** The longest the whole fill may take. */
  timeoutMs: number;
  /**
   * The process's send buffers: the window readers share and each reader's queue come from it, so readers that
   * stopped reading cost little once it is spent (they read the spool when they resume).
   */
  budget: BufferBudget;
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
  commit(spool: SpoolFile, size: number): Promise<void>;
  onBytes(count: number): void;
  /** Called once the fill has committed or failed, before its spool closes. */
  onSettled(state: FillState, error: Error | undefined): void;
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
  private readonly window = new ChunkWindow();
  /** The window's share of the send budget, held while the fill has readers. */
  private windowReservation: Reservation | undefined;
  private readers = 0;
  private spoolClosed = false;
  private readonly events = new EventEmitter();
  /** Settles when the fill is committed or has failed; never rejects. */
  readonly done: Promise<FillState>;

  constructor(
    private readonly check: ContentCheck,
    private readonly spool: SpoolFile,
    private readonly source: FillSource,
    private readonly hooks: FillHooks,
    private readonly options: FillOptions,
  ) {
    this.events.setMaxListeners(0);
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
    // (A reader of a failed fill fails at once, below.)
    if (this.spoolClosed && this.state === 'committed') throw new Error('this fill has committed and closed its spool');
    this.readers += 1;
    if (this.readers === 1 && this.state === 'filling') this.windowReservation = this.options.budget.reserve(MEMORY_WINDOW_BYTES, 0);
    const queue = this.options.budget.reserve(READ_CHUNK_BYTES, SMALL_BUFFER_BYTES);
    let position = start;
    let pumping = false;
    let released = false;
    const release = (): void => {
      if (released) return;
      released = true;
      queue.release();
      this.readers -= 1;
      if (this.readers === 0) this.releaseWindow();
      void this.closeSpoolIfIdle();
    };
    const reader: Readable = new Readable({
      highWaterMark: queue.bytes,
      read: () => {
        if (pumping) return;
        pumping = true;
        pump().catch((error: unknown) => reader.destroy(error as Error));
      },
      destroy: (error, callback) => {
        release();
        callback(error);
      },
    });
    // Pushes until the reader is full, the bytes run out (then waits for more) or the end. `pumping` is
    // cleared in the same tick the pump stops: a read() that comes after must start the next pump.
    const pump = async (): Promise<void> => {
      try {
        for (;;) {
          if (reader.destroyed) return;
          const last = end ?? (this.verified ? this.written - 1 : Number.POSITIVE_INFINITY);
          if (position > last) {
            reader.push(null);
            release();
            return;
          }
          if (this.state === 'failed') {
            // One error type for every cause (cut, lie, timeout, shutdown): the HTTP layer answers it as the upstream's fault.
            reader.destroy(new FillError('the upstream transfer failed', { cause: this.failure }));
            return;
          }
          // Until verified, hold back the newest byte and the last byte this reader asked for.
          const limit = this.verified ? Math.min(this.written, last + 1) : Math.min(this.received - 1, last);
          if (position < limit) {
            const chunk = this.window.slice(position, Math.min(limit, position + queue.bytes)) ?? (await this.readSpool(position, Math.min(limit, position + queue.bytes)));
            position += chunk.length;
            if (!reader.push(chunk)) return;
            continue;
          }
          await new Promise<void>((resolve) => this.events.once('progress', resolve));
        }
      } finally {
        pumping = false;
      }
    };
    return reader;
  }

  private async run(timeoutMs: number): Promise<FillState> {
    const timer = setTimeout(() => {
      this.source.body.destroy(new FillError(`fill did not finish within ${timeoutMs} ms`));
    }, timeoutMs);
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
        writer.push(chunk);
        this.window.append(this.received, chunk);
        this.received += chunk.length;
        this.events.emit('progress');
        if (writer.backlog >= MAX_UNWRITTEN_BYTES) await writer.drained();
      }
      await writer.drained();
      if (this.source.size !== undefined && this.written !== this.source.size) {
        throw new FillError(`upstream sent ${this.written} of ${this.source.size} bytes`);
      }
      this.check.finish(this.written);
      // Verified: readers need not wait for the commit (a disk sync of the whole blob, a rename, a record).
      this.verified = true;
      this.events.emit('progress');
      await this.hooks.commit(this.spool, this.written);
      this.state = 'committed';
    } catch (error) {
      this.failure = error instanceof Error ? error : new FillError(String(error));
      this.state = 'failed';
      this.window.clear();
      this.source.body.destroy();
      // A write still running must end before the spool goes.
      await writer.drained().catch(() => undefined);
      await this.spool.discard().catch(() => undefined);
    } finally {
      clearTimeout(timer);
      this.releaseWindow();
      this.hooks.onSettled(this.state, this.failure);
      this.events.emit('progress');
      await this.closeSpoolIfIdle();
    }
    return this.state;
  }

  /** Bytes from position (before the window: on disk) up to limit or where the window begins, never past `written`. */
  private async readSpool(position: number, limit: number): Promise<Buffer> {
    const onDisk = Math.min(limit, this.window.start ?? this.written);
    const chunk = await this.spool.readAt(position, Math.min(READ_CHUNK_BYTES, onDisk - position));
    if (chunk.length === 0) throw new FillError('the spool is shorter than what was written to it');
    return chunk;
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

  private async closeSpoolIfIdle(): Promise<void> {
    if (this.state === 'filling' || this.readers > 0) return;
    this.spoolClosed = true;
    await this.spool.close();
  }
}

/** The newest chunks of a fill by position, oldest first; views into them are handed to readers without copying. */
class ChunkWindow {
  private chunks: Array<{ start: number; bytes: Uint8Array }> = [];
  private bytes = 0;

  /** The position of the oldest byte held, or undefined when none is. */
  get start(): number | undefined {
    return this.chunks[0]?.start;
  }

  append(start: number, bytes: Uint8Array): void {
    this.chunks.push({ start, bytes });
    this.bytes += bytes.length;
  }

  /** Drops the oldest chunks that are in the spool (wholly before `written`) while more than `keep` bytes remain. */
  forgetBefore(written: number, keep: number): void {
    let drop = 0;
    let bytes = this.bytes;
    for (const chunk of this.chunks) {
      if (chunk.start + chunk.bytes.length > written || bytes - chunk.bytes.length < keep) break;
      bytes -= chunk.bytes.length;
      drop += 1;
    }
    if (drop === 0) return;
    this.chunks = this.chunks.slice(drop);
    this.bytes = bytes;
  }

  clear(): void {
    this.chunks = [];
    this.bytes = 0;
  }

  /** The bytes from position up to (not including) limit within the chunk holding position, or undefined if no chunk here holds it. */
  slice(position: number, limit: number): Uint8Array | undefined {
    let low = 0;
    let high = this.chunks.length - 1;
    while (low <= high) {
      const middle = (low + high) >>> 1;
      const chunk = this.chunks[middle];
      if (chunk === undefined) return undefined;
      if (position < chunk.start) high = middle - 1;
      else if (position >= chunk.start + chunk.bytes.length) low = middle + 1;
      else return chunk.bytes.subarray(position - chunk.start, Math.min(chunk.bytes.length, limit - chunk.start));
    }
    return undefined;
  }
}

/** Appends chunks to a spool one write at a time, each write taking every chunk that arrived meanwhile. */
class WriteBehind {
  private queue: Uint8Array[] = [];
  private queuedBytes = 0;
  private flushing: Promise<void> | undefined;
  private failure: Error | undefined;

  constructor(
    private readonly spool: SpoolFile,
    private readonly on: { written(bytes: number): void; failed(error: Error): void },
  ) {}

  /** Bytes pushed and not written yet. */
  get backlog(): number {
    return this.queuedBytes;
  }

  /** Queues a chunk; throws the error of an earlier write that failed. */
  push(chunk: Uint8Array): void {
    if (this.failure !== undefined) throw this.failure;
    this.queue.push(chunk);
    this.queuedBytes += chunk.length;
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
