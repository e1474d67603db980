// Every error the registry speaks on the wire, registered once with its code and HTTP status
// (as distribution's errcode). Content code throws RegistryError; one place in http/ writes it.

export const ErrorCode = {
  BLOB_UNKNOWN: { status: 404, message: 'blob unknown to registry' },
  BLOB_UPLOAD_INVALID: { status: 400, message: 'blob upload invalid' },
  BLOB_UPLOAD_UNKNOWN: { status: 404, message: 'blob upload unknown to registry' },
  DIGEST_INVALID: { status: 400, message: 'provided digest did not match uploaded content' },
  MANIFEST_BLOB_UNKNOWN: { status: 404, message: 'blob unknown to registry' },
  MANIFEST_INVALID: { status: 400, message: 'manifest invalid' },
  MANIFEST_UNKNOWN: { status: 404, message: 'manifest unknown' },
  NAME_INVALID: { status: 400, message: 'invalid repository name' },
  NAME_UNKNOWN: { status: 404, message: 'repository name not known to registry' },
  SIZE_INVALID: { status: 400, message: 'provided length did not match content length' },
  TAG_INVALID: { status: 400, message: 'manifest tag did not match URI' },
  UNAUTHORIZED: { status: 401, message: 'authentication required' },
  DENIED: { status: 403, message: 'requested access to the resource is denied' },
  UNSUPPORTED: { status: 405, message: 'the operation is unsupported' },
  PAGINATION_NUMBER_INVALID: { status: 400, message: 'invalid number of results requested' },
  RANGE_INVALID: { status: 416, message: 'requested range not satisfiable' },
  TOOMANYREQUESTS: { status: 429, message: 'too many requests' },
  UPSTREAM_UNAVAILABLE: { status: 502, message: 'upstream registry unavailable' },
  UPSTREAM_TIMEOUT: { status: 504, message: 'upstream registry timed out' },
  UNAVAILABLE: { status: 503, message: 'service unavailable' },
  NOT_FOUND: { status: 404, message: 'not found' },
  INTERNAL: { status: 500, message: 'internal error' },
} as const satisfies Record<string, { status: number; message: string }>;

export type ErrorCodeName = keyof typeof ErrorCode;

export class RegistryError extends Error {
  readonly code: ErrorCodeName;
  readonly status: number;
  readonly detail: unknown;
  /** Extra response headers, e.g. Retry-After on 429, Content-Range on 416. */
  readonly headers: Record<string, string>;

  constructor(
    code: ErrorCodeName,
    options: { message?: string; detail?: unknown; headers?: Record<string, string>; cause?: unknown; status?: number } = {},
  ) {
    super(options.message ?? ErrorCode[code].message, { cause: options.cause });
    this.name = 'RegistryError';
    this.code = code;
    this.status = options.status ?? ErrorCode[code].status;
    this.detail = options.detail;
    this.headers = options.headers ?? {};
  }
}
