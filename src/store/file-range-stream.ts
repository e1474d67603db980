// A byte range of an open file as a Readable. Read as any stream, each chunk is a fresh buffer. Piped
// into an HTTP response or a socket (how the HTTP server sends a stream), it reads into two buffers of its
// own and reuses each once the socket has taken its bytes: serving many large blobs at once then allocates
// nothing per chunk, so memory stays flat instead of waiting for the garbage collector to free a buffer per
// megabyte sent.
//
// The piped path differs from Readable.pipe in what a response needs only: one destination, no 'data'
// events, and the destination is ended after this stream's 'end'. Piped anywhere else (a Transform that
// passes chunks on by reference calls back before the socket is done with them), it is a plain Readable.

import type { FileHandle } from 'node:fs/promises';
import { ServerResponse } from 'node:http';
import { Socket } from 'node:net';
import { Readable } from 'node:stream';
import { SMALL_BUFFER_BYTES, unlimitedBudget, type BufferBudget, type Reservation } from '../memory/buffer-budget.js';
import { asStorageError } from './storage-error.js';

/** 1 MiB reads serve 2–3× faster than Node's 64 KiB default; the piped path reuses two such buffers. */
export const FILE_CHUNK_BYTES = 1024 * 1024;

type Destination = ServerResponse | Socket;

export class FileRangeStream extends Readable {
  private position: number;
  /** True once pipe() has taken over: the Readable side then only reports the end. */
  private piped = false;
  /** The piped path's two buffers, from the process's send budget. */
  private reservation: Reservation | undefined;

  /**
   * Bytes start..end (inclusive; end undefined: to the end of the file) of handle, which this stream closes. The
   * piped path's buffers come from budget: 1 MiB each while it lasts, small ones past it.
   */
  constructor(
    private readonly handle: FileHandle,
    start = 0,
    private end = Number.POSITIVE_INFINITY,
    private readonly budget: BufferBudget = unlimitedBudget(),
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
      (error: unknown) => this.destroy(asStorageError('read', undefined, error) as Error),
    );
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    this.reservation?.release();
    // FileHandle.close waits for a read still running.
    this.handle.close().then(
      () => callback(error),
      (closeError: unknown) => callback(error ?? (closeError as Error)),
    );
  }

  /**
   * Into a response or socket: writes the bytes from two reused buffers, a buffer refilled only after the
   * destination called back for its previous write (the kernel has the bytes), then ends this stream and,
   * unless `end: false`, the destination. A destination that fails or closes first stops and closes it.
   */
  override pipe<T extends NodeJS.WritableStream>(destination: T, options?: { end?: boolean }): T {
    if (!(destination instanceof ServerResponse || destination instanceof Socket)) return super.pipe(destination, options);
    if (this.piped || this.readableFlowing !== null) throw new Error('a FileRangeStream is read once: piped, or as a stream');
    this.piped = true;
    this.pause();
    // A response whose connection is gone may never call back its last write: its 'close' stops us.
    destination.once('close', () => {
      if (!this.readableEnded) this.destroy();
    });
    this.sendTo(destination).then(
      () => {
        if (this.destroyed) return;
        if (options?.end !== false) this.once('end', () => destination.end());
        this.push(null);
        this.resume();
      },
      (error: unknown) => {
        // The destination's own failure (a client gone) is not this stream's error.
        if (!this.destroyed) this.destroy(error instanceof DestinationError ? undefined : (asStorageError('read', undefined, error) as Error));
      },
    );
    return destination;
  }

  private async sendTo(destination: Destination): Promise<void> {
    if (this.end === Number.POSITIVE_INFINITY) this.end = (await this.handle.stat()).size - 1;
    // A small blob gets buffers of its own size; past the budget, small ones.
    const wanted = Math.max(1, this.remaining(FILE_CHUNK_BYTES));
    this.reservation = this.budget.reserve(2 * wanted, 2 * Math.min(wanted, SMALL_BUFFER_BYTES));
    const size = this.reservation.bytes / 2;
    const slots: [Slot, Slot] = [newSlot(), newSlot()];
    for (let turn = 0; ; turn ^= 1) {
      const slot = turn === 0 ? slots[0] : slots[1];
      // This buffer's previous bytes must be written before it is refilled.
      await slot.written;
      if (this.destroyed || destination.destroyed) throw new DestinationError();
      const length = this.remaining(size);
      if (length === 0) break;
      slot.buffer ??= Buffer.allocUnsafe(size);
      const buffer = slot.buffer;
      const { bytesRead } = await this.handle.read(buffer, 0, length, this.position);
      if (bytesRead === 0) break;
      this.position += bytesRead;
      const chunk = bytesRead === buffer.length ? buffer : buffer.subarray(0, bytesRead);
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

/** A buffer (allocated on first use) and the write of its last bytes. */
interface Slot {
  buffer?: Buffer;
  written: Promise<void>;
}

function newSlot(): Slot {
  return { written: Promise.resolve() };
}

class DestinationError extends Error {}
