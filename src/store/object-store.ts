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

export interface KeyPage {
  keys: string[];
  /** Where the next page starts (its `after`); undefined: this was the last. */
  next: string | undefined;
}

/** The most keys one listPage() returns (S3's own page). */
export const MAX_KEY_PAGE = 1_000;

/** Every key below the folder `prefix`, in lexical order, page by page: for folders known to be small. */
export async function listAll(store: Pick<ObjectStore, 'listPage'>, prefix: string, limit = MAX_KEY_PAGE): Promise<string[]> {
  const keys: string[] = [];
  let after: string | undefined;
  do {
    const page = await store.listPage(prefix, { after, limit });
    keys.push(...page.keys);
    after = page.next;
  } while (after !== undefined);
  return keys;
}

/** A page's limit as the stores take it: 1 to MAX_KEY_PAGE, else an error of the caller's. */
export function pageLimit(limit: number): number {
  if (!Number.isInteger(limit) || limit < 1 || limit > MAX_KEY_PAGE) throw new RangeError(`a page holds 1 to ${MAX_KEY_PAGE} keys, not ${limit}`);
  return limit;
}

/** Whether anything is stored below the folder `prefix` (one key listed). */
export async function holdsAny(store: Pick<ObjectStore, 'listPage'>, prefix: string): Promise<boolean> {
  return (await store.listPage(prefix, { limit: 1 })).keys.length > 0;
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
  /**
   * One page of the keys stored below the folder `prefix` (at any depth), in lexical order: at most `limit`
   * (1 to 1,000) after the key `after` (none: from the first). `next`, when there may be more, is the `after` of
   * the next page. A walk holds one page, however many keys there are (listAll() gathers them).
   */
  listPage(prefix: string, page: { after?: string | undefined; limit: number }): Promise<KeyPage>;
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
