// The part of an ObjectWriter both drivers share: the bytes go to a local spool file first, which followers
// read by position and which stays readable after commit. Each driver adds how a commit makes it visible.

import type { ObjectWriter } from './object-store.js';
import type { SpoolFile } from './spool-file.js';

export abstract class SpooledWriter implements ObjectWriter {
  protected state: 'writing' | 'committing' | 'committed' | 'aborted' = 'writing';

  protected constructor(protected readonly spool: SpoolFile) {}

  /** The local file (for tests and tools of the driver; not part of ObjectWriter). */
  get path(): string {
    return this.spool.path;
  }

  get size(): number {
    return this.spool.size;
  }

  async append(chunk: Uint8Array): Promise<void> {
    this.requireWriting();
    await this.spool.append(chunk);
    this.appended();
  }

  async appendAll(chunks: readonly Uint8Array[]): Promise<void> {
    this.requireWriting();
    await this.spool.appendAll(chunks);
    this.appended();
  }

  readAt(position: number, length: number): Promise<Buffer> {
    return this.spool.readAt(position, length);
  }

  readInto(target: Uint8Array, position: number): Promise<number> {
    return this.spool.readInto(target, position);
  }

  async commit(key: string): Promise<void> {
    if (this.state !== 'writing') throw new Error(`cannot commit a writer that is ${this.state}`);
    this.state = 'committing';
    try {
      await this.publish(key);
    } catch (error) {
      // A failed commit leaves nothing: what the driver started is undone, the spool goes.
      this.state = 'aborted';
      await this.undo().catch(() => undefined);
      await this.spool.discard().catch(() => undefined);
      throw error;
    }
    this.state = 'committed';
  }

  async abort(): Promise<void> {
    if (this.state === 'committed' || this.state === 'committing') {
      await this.close();
      return;
    }
    this.state = 'aborted';
    try {
      await this.undo();
    } finally {
      await this.spool.discard();
    }
  }

  close(): Promise<void> {
    return this.spool.close();
  }

  /** Called after every append: the spool holds `size` bytes. */
  protected appended(): void {}

  /** Makes the spool's content visible under key. */
  protected abstract publish(key: string): Promise<void>;

  /** Undoes whatever the driver did beside the spool (an upload started). The spool itself is discarded after. */
  protected abstract undo(): Promise<void>;

  private requireWriting(): void {
    if (this.state !== 'writing') throw new Error(`cannot append to a writer that is ${this.state}`);
  }
}
