// A temporary local file that a fill writes while readers follow it by position.
// One read-write handle serves both; it stays valid after the file is renamed into place. Failures of the
// disk are StorageErrors.

import { open, rm, type FileHandle } from 'node:fs/promises';
import { storageOperation } from './storage-error.js';

export class SpoolFile {
  private constructor(
    readonly path: string,
    private readonly handle: FileHandle,
  ) {}

  static async create(path: string): Promise<SpoolFile> {
    const handle = await storageOperation('create', path, () => open(path, 'wx+', 0o644));
    return new SpoolFile(path, handle);
  }

  private appendAt = 0;
  private closed = false;

  get size(): number {
    return this.appendAt;
  }

  async append(chunk: Uint8Array): Promise<void> {
    let offset = 0;
    while (offset < chunk.length) {
      const { bytesWritten } = await storageOperation('write', this.path, () => this.handle.write(chunk, offset, chunk.length - offset, this.appendAt));
      offset += bytesWritten;
      this.appendAt += bytesWritten;
    }
  }

  /** Appends the chunks in order, in as few writes as the system allows (one writev, usually). */
  async appendAll(chunks: readonly Uint8Array[]): Promise<void> {
    let rest = chunks.filter((chunk) => chunk.length > 0);
    while (rest.length > 0) {
      const { bytesWritten } = await storageOperation('write', this.path, () => this.handle.writev(rest, this.appendAt));
      if (bytesWritten <= 0) throw new Error('a spool write made no progress');
      this.appendAt += bytesWritten;
      rest = withoutLeadingBytes(rest, bytesWritten);
    }
  }

  /** Reads up to length bytes at position; fewer at the end of what is written. */
  async readAt(position: number, length: number): Promise<Buffer> {
    const buffer = Buffer.allocUnsafe(length);
    const { bytesRead } = await storageOperation('read', this.path, () => this.handle.read(buffer, 0, length, position));
    return bytesRead === length ? buffer : buffer.subarray(0, bytesRead);
  }

  /** Reads into target (as much as fits) from position; returns the bytes read, fewer at the end of what is written. */
  async readInto(target: Uint8Array, position: number): Promise<number> {
    const { bytesRead } = await this.handle.read(target, 0, target.length, position);
    return bytesRead;
  }

  async sync(): Promise<void> {
    await storageOperation('sync', this.path, () => this.handle.datasync());
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await storageOperation('close', this.path, () => this.handle.close());
  }

  /** Closes and deletes the file; for a spool that will never be committed. */
  async discard(): Promise<void> {
    await this.close();
    await storageOperation('remove', this.path, () => rm(this.path, { force: true }));
  }
}

/** The chunks after their first count bytes (a partial write). */
function withoutLeadingBytes(chunks: readonly Uint8Array[], count: number): Uint8Array[] {
  let skip = count;
  const rest: Uint8Array[] = [];
  for (const chunk of chunks) {
    if (skip >= chunk.length) {
      skip -= chunk.length;
      continue;
    }
    rest.push(skip > 0 ? chunk.subarray(skip) : chunk);
    skip = 0;
  }
  return rest;
}
