// The error an ObjectStore driver throws when its storage fails (a full disk, an I/O error, a refused
// permission, a read-only filesystem, an S3 server down or refusing): not a bug in regmirror, never swallowed,
// answered 503 by the HTTP layer.

export class StorageError extends Error {
  override readonly name = 'StorageError';
  /** The system's code (ENOSPC, EIO, EACCES, EROFS …), or the object store's (NoSuchBucket, AccessDenied …), when it gave one. */
  readonly code: string | undefined;

  constructor(
    /** What the store was doing: read, write, commit, delete, list … */
    readonly operation: string,
    /** The key or temporary it worked on, for the log (never for a client: it names files). */
    readonly key: string | undefined,
    cause: unknown,
    code: string | undefined = systemErrorCode(cause),
  ) {
    // The cause's own message follows in logs (pino appends it): only its code here.
    super(`storage ${operation}${key === undefined ? '' : ` of ${key}`} failed${code === undefined ? '' : ` (${code})`}`, { cause });
    this.code = code;
  }
}

/** What a store operation threw, as the caller should see it: a system error becomes a StorageError; anything else (a bug) is left as it is. */
export function asStorageError(operation: string, key: string | undefined, error: unknown): unknown {
  if (error instanceof StorageError || systemErrorCode(error) === undefined) return error;
  return new StorageError(operation, key, error);
}

/** Runs one store operation, turning the failures the operating system reports into StorageErrors. */
export async function storageOperation<T>(operation: string, key: string | undefined, work: () => Promise<T>): Promise<T> {
  try {
    return await work();
  } catch (error) {
    throw asStorageError(operation, key, error);
  }
}

/** The errno code of an error the operating system reported (Node's system errors carry errno and code). */
export function systemErrorCode(error: unknown): string | undefined {
  if (!(error instanceof Error)) return undefined;
  const { code, errno } = error as Partial<NodeJS.ErrnoException>;
  return typeof code === 'string' && typeof errno === 'number' ? code : undefined;
}

/** Whether an error (a StorageError, or a system error underneath one) says the storage has no room left. */
export function isStorageFull(error: unknown): boolean {
  const code = error instanceof StorageError ? error.code : systemErrorCode(error);
  return code === 'ENOSPC' || code === 'EDQUOT';
}
