// A byte range of an open file as a Readable. Read as any stream, each chunk is a fresh buffer. Piped
// (how the HTTP server sends a stream), it reads into two buffers of its own and reuses each once the
// destination has taken its bytes: serving many large blobs at once then allocates nothing per chunk,
// so memory stays flat instead of waiting for the garbage collector to free a buffer per megabyte sent.

import type { FileHandle } from 'node:fs/promises';
import { Readable } from 'node:stream';

/** 1 MiB reads serve 2–3× faster than Node's 64 KiB default; the piped path reuses two such buffers. */
export const FILE_CHUNK_BYTES = 1024 * 1024;

export class FileRangeStream extends Readable {
  private position: number;
  /** True once pipe() has taken over: the Readable side then only reports the end. */
  private piped = false;

  /** Bytes start..end (inclusive; end undefined: to the end of the file) of handle, which this stream closes. */
  constructor(
    private readonly handle: FileHandle,
    start = 0,
    private readonly end = Number.POSITIVE_INFINITY,
  ) {
    super({ highWaterMark: FILE_CHUNK_BYTES });
    this.position = start;
  }

  override _read(): void {
    const length = this.remaining(FILE_CHUNK_BYTES);
    if (length === 0) {
      this.push(null);
      return;
    }
    this.handle.read(Buffer.allocUnsafe(length), 0, length, this.position).then(
      ({ bytesRead, buffer }) => {
        if (bytesRead === 0) {
          this.push(null);
          return;
        }
        this.position += bytesRead;
        this.push(bytesRead === length ? buffer : buffer.subarray(0, bytesRead));
      },
      (error: unknown) => this.destroy(error as Error),
    );
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    // FileHandle.close waits for a read still running.
    this.handle.close().then(
      () => callback(error),
      (closeError: unknown) => callback(error ?? (closeError as Error)),
    );
  }

  /**
   * Writes the bytes to destination from two reused buffers, a buffer refilled only after the destination
   * has called back for its previous write (for a socket: the kernel has the bytes). Ends the destination
   * unless `end: false`, then ends this stream ('end', then 'close'). A destination that fails stops it.
   */
  override pipe<T extends NodeJS.WritableStream>(destination: T, options?: { end?: boolean }): T {
    if (this.piped || this.readableFlowing !== null) throw new Error('a FileRangeStream is read once: piped, or as a stream');
    this.piped = true;
    this.pause();
    this.sendTo(destination as unknown as NodeJS.WritableStream & { destroyed?: boolean }).then(
      () => {
        if (options?.end !== false) destination.end();
        this.push(null);
        this.resume();
      },
      (error: unknown) => {
        // The destination's own failure (a client gone) is not this stream's error.
        if (!this.destroyed) this.destroy(error instanceof DestinationError ? undefined : (error as Error));
      },
    );
    return destination;
  }

  private async sendTo(destination: NodeJS.WritableStream & { destroyed?: boolean }): Promise<void> {
    const slots: [Slot, Slot] = [newSlot(), newSlot()];
    for (let turn = 0; ; turn ^= 1) {
      const slot = turn === 0 ? slots[0] : slots[1];
      // This buffer's previous bytes must be written before it is refilled.
      await slot.written;
      if (this.destroyed || destination.destroyed === true) throw new DestinationError();
      const length = this.remaining(slot.buffer.length);
      const { bytesRead } = length === 0 ? { bytesRead: 0 } : await this.handle.read(slot.buffer, 0, length, this.position);
      if (bytesRead === 0) break;
      this.position += bytesRead;
      const chunk = bytesRead === slot.buffer.length ? slot.buffer : slot.buffer.subarray(0, bytesRead);
      slot.written = new Promise<void>((resolve, reject) => {
        destination.write(chunk, (error?: Error | null) => (error ? reject(new DestinationError(undefined, { cause: error })) : resolve()));
      });
      // Marked handled here; the loop awaits it before reusing the buffer.
      slot.written.catch(() => undefined);
    }
    await Promise.all(slots.map((slot) => slot.written));
  }

  private remaining(at: number): number {
    return Math.max(0, Math.min(at, this.end + 1 - this.position));
  }
}

/** A buffer and the write of its last bytes. */
interface Slot {
  buffer: Buffer;
  written: Promise<void>;
}

function newSlot(): Slot {
  return { buffer: Buffer.allocUnsafe(FILE_CHUNK_BYTES), written: Promise.resolve() };
}

class DestinationError extends Error {}
