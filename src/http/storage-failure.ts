// Failures of the data directory (the object store's disk, the metadata database) as the HTTP layer sees
// them: not the client's fault nor a bug, but the service unavailable, answered 503 and logged as errors.

import { MetadataError } from '../meta/metadata-error.js';
import { StorageError } from '../store/storage-error.js';

/** How deep a chain of causes is searched: a fill's error wraps its cause, which may wrap another. */
const MAX_CAUSES = 8;

/** The storage failure an error is, or was caused by (a fill that failed on a full disk), if any. */
export function storageFailureOf(error: unknown): StorageError | MetadataError | undefined {
  let current = error;
  for (let depth = 0; depth < MAX_CAUSES && current instanceof Error; depth++) {
    if (current instanceof StorageError || current instanceof MetadataError) return current;
    current = current.cause;
  }
  return undefined;
}

/** What a client is told: nothing of files or the database. */
export const STORAGE_UNAVAILABLE_MESSAGE = 'storage unavailable; retry later';
