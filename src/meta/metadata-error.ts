// The error a MetadataStore driver throws when its database fails (busy past the timeout, full, an I/O
// error, a corrupt or unreadable file, a server gone or refusing): not a bug in regmirror, never swallowed,
// answered 503 by the HTTP layer.

/**
 * SQLite result codes that say the database or what is under it failed, not the SQL: the extended codes
 * (SQLITE_IOERR_WRITE, SQLITE_BUSY_SNAPSHOT …) start with these. Constraint, syntax and misuse errors are bugs.
 */
const SQLITE_FAILURES = ['SQLITE_BUSY', 'SQLITE_LOCKED', 'SQLITE_FULL', 'SQLITE_IOERR', 'SQLITE_CORRUPT', 'SQLITE_NOTADB', 'SQLITE_READONLY', 'SQLITE_CANTOPEN', 'SQLITE_PERM', 'SQLITE_NOMEM', 'SQLITE_PROTOCOL', 'SQLITE_NOLFS'];

export class MetadataError extends Error {
  override readonly name = 'MetadataError';
  /** The database's code (SQLITE_BUSY, SQLITE_IOERR_WRITE …; a SQLSTATE such as 57014, or ECONNREFUSED), when it gave one. */
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

/**
 * SQLSTATE classes and codes of PostgreSQL that say the server, the connection or the deployment failed, not the
 * SQL: connection exceptions (08), transaction rollbacks left after the driver's retries (40: deadlock,
 * serialization), insufficient resources (53: disk full, too many connections), operator intervention (57: a
 * statement timeout, a shutdown), system errors (58), internal errors (XX: corruption); a server that refuses the
 * role (28), knows no such database (3D000), is read-only (25006), denies a privilege (42501) or a lock (55P03).
 * Syntax, constraint and data errors are bugs.
 */
const POSTGRES_FAILURE_CLASSES = ['08', '28', '40', '53', '57', '58', 'XX'];
const POSTGRES_FAILURE_CODES = ['3D000', '25006', '42501', '55P03'];
/** What pg says, without a code, when the connection went away or could not be had in time. */
const POSTGRES_CONNECTION_LOST = /^(Connection terminated|timeout exceeded when trying to connect|Client has encountered a connection error|Query read timeout)/;

/** Whether an error thrown by pg (PostgreSQL) is a failure of the database or the network rather than of the statement. */
export function isPostgresFailure(error: unknown): boolean {
  const code = (error as { code?: unknown } | undefined)?.code;
  if (typeof code === 'string' && /^[0-9A-Z]{5}$/.test(code) && !code.startsWith('E')) {
    return POSTGRES_FAILURE_CLASSES.includes(code.slice(0, 2)) || POSTGRES_FAILURE_CODES.includes(code);
  }
  // No SQLSTATE class starts with E: these are Node's system errors (ECONNREFUSED, ECONNRESET, ETIMEDOUT, EPIPE …).
  if (typeof code === 'string' && /^E[A-Z0-9_]+$/.test(code)) return true;
  return error instanceof Error && POSTGRES_CONNECTION_LOST.test(error.message);
}
