// Reads of blobs and manifests noted in memory (touchBlob, touchManifest) until a driver writes them together:
// one write every few seconds instead of one per cache hit. Shared by the MetadataStore drivers.

import type { Digest } from '../oci/digest.js';

/** How long a read may stay noted before the driver writes it by itself. */
export const ACCESS_FLUSH_MS = 5_000;

/** Reads taken to be written: digest and the latest read, blobs and manifests apart. */
export interface TakenReads {
  blobs: Array<[Digest, number]>;
  manifests: Array<[Digest, number]>;
}

export class NotedReads {
  /** Digest → the latest read noted. */
  private readonly blobs = new Map<Digest, number>();
  private readonly manifests = new Map<Digest, number>();
  private timer: NodeJS.Timeout | undefined;

  /** `flush` writes them (the driver's flushAccess): run once ACCESS_FLUSH_MS after the first read noted. */
  constructor(private readonly flush: () => Promise<void>) {}

  get empty(): boolean {
    return this.blobs.size === 0 && this.manifests.size === 0;
  }

  noteBlob(digest: Digest, at: number): void {
    this.note(this.blobs, digest, at);
  }

  noteManifest(digest: Digest, at: number): void {
    this.note(this.manifests, digest, at);
  }

  private note(reads: Map<Digest, number>, digest: Digest, at: number): void {
    reads.set(digest, Math.max(at, reads.get(digest) ?? 0));
    // The timer's own failures are dropped: the reads are noted again (restore), and a later flush, or the close, reports.
    this.timer ??= setTimeout(() => void this.flush().catch(() => undefined), ACCESS_FLUSH_MS).unref();
  }

  /** Everything noted so far, forgotten here: the caller writes it, and gives it back (restore) if the write fails. */
  take(): TakenReads {
    this.stop();
    const taken = { blobs: [...this.blobs], manifests: [...this.manifests] };
    this.blobs.clear();
    this.manifests.clear();
    return taken;
  }

  /** Notes again reads a failed write did not write (a read noted since stays, if later). */
  restore(taken: TakenReads): void {
    for (const [digest, at] of taken.blobs) this.noteBlob(digest, at);
    for (const [digest, at] of taken.manifests) this.noteManifest(digest, at);
  }

  /** No write by the timer until a read is noted again. */
  stop(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
  }
}
