// The error a MetadataStore driver throws when its database fails (busy past the timeout, full, an I/O
// error, a corrupt or unreadable file): not a bug in regmirror, never swallowed, answered 503 by the HTTP layer.

/**
 * SQLite result codes that say the database or what is under it failed, not the SQL: the extended codes
 * (SQLITE_IOERR_WRITE, SQLITE_BUSY_SNAPSHOT …) start with these. Constraint, syntax and misuse errors are bugs.
 */
const SQLITE_FAILURES = ['SQLITE_BUSY', 'SQLITE_LOCKED', 'SQLITE_FULL', 'SQLITE_IOERR', 'SQLITE_CORRUPT', 'SQLITE_NOTADB', 'SQLITE_READONLY', 'SQLITE_CANTOPEN', 'SQLITE_PERM', 'SQLITE_NOMEM', 'SQLITE_PROTOCOL', 'SQLITE_NOLFS'];

export class MetadataError extends Error {
  override readonly name = 'MetadataError';
  /** The database's code (SQLITE_BUSY, SQLITE_FULL, SQLITE_IOERR_WRITE …), when it gave one. */
  readonly code: string | undefined;

  constructor(
    /** What the store was doing: open, getBlob, putTag … */
    readonly operation: string,
    cause: unknown,
  ) {
    const code = (cause as { code?: unknown } | undefined)?.code;
    // The cause's own message follows in logs (pino appends it): only its code here.
    super(`metadata ${operation} failed${typeof code === 'string' ? ` (${code})` : ''}`, { cause });
    this.code = typeof code === 'string' ? code : undefined;
  }
}

/** Whether an error thrown by SQLite is a failure of the database rather than of the statement. */
export function isSqliteFailure(error: unknown): boolean {
  const code = (error as { code?: unknown } | undefined)?.code;
  return typeof code === 'string' && SQLITE_FAILURES.some((failure) => code === failure || code.startsWith(`${failure}_`));
}
