// The ObjectStore interface: content by key, written whole and visible only once verified.
// Drivers: fs (default) and s3, both run object-store.conformance.ts. Every method throws a
// StorageError (storage-error.ts) when the storage itself fails; a missing key is not a failure.

import type { Readable } from 'node:stream';

export interface ByteRange {
  /** First byte, inclusive. */
  start: number;
  /** Last byte, inclusive. */
  end: number;
}

export interface ObjectStat {
  size: number;
  /** When it was last written (ms since epoch): GC leaves what is younger than its grace. */
  modifiedAt: number;
}

export interface TemporaryInfo {
  /** Its name in the store's folder of temporaries. */
  name: string;
  size: number;
  /** When it was last written (ms since epoch): a fill in progress writes to its temporary all along. */
  modifiedAt: number;
}

export interface ObjectStore {
  stat(key: string): Promise<ObjectStat | undefined>;
  /** A stream of the object (or one range of it); undefined when it does not exist. */
  read(key: string, range?: ByteRange): Promise<Readable | undefined>;
  readBytes(key: string): Promise<Buffer | undefined>;
  /** Writes small content atomically: a reader sees all of it or nothing. */
  putBytes(key: string, bytes: Uint8Array): Promise<void>;
  /**
   * A writer for content that streams in, visible under a key only once its commit succeeds. `key`: where it
   * will be committed, when known at the start (the s3 driver then uploads it there as it arrives).
   */
  createWriter(key?: string): Promise<ObjectWriter>;
  /**
   * A short-lived URL a client may GET the object from itself (a redirect), when the store offers one: s3 with
   * storage.s3.redirect on. undefined otherwise (and for fs, whose files nginx may send instead: docs/nginx.md).
   */
  redirectUrl(key: string): Promise<string | undefined>;
  delete(key: string): Promise<void>;
  /** Every key stored below the folder `prefix` (at any depth), in lexical order; [] when there is none. */
  list(prefix: string): Promise<string[]>;
  /** The same keys in no particular order, found as the store is walked: for folders too large to hold in memory. */
  keys(prefix: string): AsyncIterable<string>;
  /** The temporaries there are now: writes in progress, or left by a crash when no process uses the store. */
  listTemporaries(): Promise<TemporaryInfo[]>;
  /** Removes temporaries left by a crash. Returns how many it removed. */
  removeStaleTemporaries(): Promise<number>;
  /** Removes one temporary (found abandoned by GC); nothing when it is already gone. */
  removeTemporary(name: string): Promise<void>;
}

/**
 * Content on its way into the store. What was appended can be read back by position at once (followers of a
 * fill read it there, from a local file: both drivers keep one), and stays readable after commit until close().
 * Nothing of it is visible under a key before commit(key) resolves; abort() leaves nothing behind.
 */
export interface ObjectWriter {
  /** Bytes appended so far. */
  readonly size: number;
  append(chunk: Uint8Array): Promise<void>;
  /** Appends the chunks in order, in as few writes as the system allows. */
  appendAll(chunks: readonly Uint8Array[]): Promise<void>;
  /** Reads up to length bytes at position; fewer at the end of what is written. */
  readAt(position: number, length: number): Promise<Buffer>;
  /** Reads into target (as much as fits) from position; returns the bytes read, fewer at the end of what is written. */
  readInto(target: Uint8Array, position: number): Promise<number>;
  /** Makes the content (verified by the caller) visible under key, whole, in one atomic step. Once only. */
  commit(key: string): Promise<void>;
  /** Gives the content up: nothing becomes visible, nothing is left (a no-op after commit but for close()). */
  abort(): Promise<void>;
  /** Lets go of the local copy's handle (after commit or abort). */
  close(): Promise<void>;
}
