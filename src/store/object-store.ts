// The ObjectStore interface: content by key, written whole and visible only once verified.
// Drivers: fs (default) and s3, both run object-store.conformance.ts. Every method throws a
// StorageError (storage-error.ts) when the storage itself fails; a missing key is not a failure.

import type { Readable } from 'node:stream';
import type { SpoolFile } from './spool-file.js';

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
  /** A local temporary file for content that streams in; commitSpool makes it visible. */
  createSpool(): Promise<SpoolFile>;
  /** Makes a verified spool visible under key, in one atomic step. The spool's handle stays readable. */
  commitSpool(spool: SpoolFile, key: string): Promise<void>;
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
