// Every error the v1 API speaks, registered once with docker-registry 0.9's status and message.
// v1 code throws V1Error; http/v1-errors.ts is the one place that writes it as {"error": "..."}.

export const V1ErrorCode = {
  INVALID_IMAGE_ID: { status: 404, message: 'Invalid image ID' },
  IMAGE_NOT_FOUND: { status: 404, message: 'Image not found' },
  IMAGE_IN_PROGRESS: { status: 400, message: 'Image is being uploaded, retry later' },
  IMAGE_EXISTS: { status: 409, message: 'Image already exists' },
  INVALID_JSON: { status: 400, message: 'Invalid JSON' },
  JSON_WITHOUT_ID: { status: 400, message: "Missing key `id' in JSON" },
  JSON_ID_MISMATCH: { status: 400, message: 'JSON data contains invalid id' },
  PARENT_UNKNOWN: { status: 400, message: 'Image depends on a non existing parent' },
  CHECKSUM_ABSENT: { status: 412, message: "Missing Image's checksum" },
  CHECKSUM_EMPTY: { status: 400, message: "Missing Image's checksum" },
  CHECKSUM_MISMATCH: { status: 400, message: 'Checksum mismatch' },
  CHECKSUM_NOT_SETTABLE: { status: 409, message: 'Cannot set this image checksum' },
  LAYER_NOT_UPLOADED: { status: 400, message: 'Image layer not uploaded yet' },
  TAG_NOT_FOUND: { status: 404, message: 'Tag not found' },
  TAG_INVALID: { status: 400, message: 'Invalid tag name (must match ^[\\w][\\w.-]{0,127}$)' },
  INVALID_DATA: { status: 400, message: 'Invalid data' },
  REPOSITORY_NOT_FOUND: { status: 404, message: 'Repository not found' },
  REPOSITORY_NAME_INVALID: { status: 400, message: 'Invalid repository name' },
  INDEX_IMAGES_NOT_FOUND: { status: 404, message: 'images not found' },
  JSON_UNDECODABLE: { status: 400, message: 'Error Decoding JSON' },
  RANGE_NOT_SATISFIABLE: { status: 416, message: 'Requested range not satisfiable' },
  BODY_TOO_LARGE: { status: 413, message: 'Request body too large' },
  BAD_REQUEST: { status: 400, message: 'Bad request' },
  NOT_FOUND: { status: 404, message: 'Not found' },
  METHOD_NOT_ALLOWED: { status: 405, message: 'Method not allowed' },
  READ_ONLY: { status: 405, message: 'This registry is a mirror: pushes, tags and deletes are refused' },
  UNAUTHORIZED: { status: 401, message: 'Requires authorization' },
  DENIED: { status: 403, message: 'Access denied' },
  TOO_MANY_LOGINS: { status: 429, message: 'Too many failed logins, retry later' },
  SOURCE_UNAVAILABLE: { status: 502, message: 'Source registry unavailable' },
  UNAVAILABLE: { status: 503, message: 'Service unavailable' },
  INTERNAL: { status: 500, message: 'Internal error' },
} as const satisfies Record<string, { status: number; message: string }>;

export type V1ErrorCodeName = keyof typeof V1ErrorCode;

export class V1Error extends Error {
  override readonly name = 'V1Error';
  readonly code: V1ErrorCodeName;
  readonly status: number;
  /** Extra response headers, e.g. Content-Range on 416. */
  readonly headers: Record<string, string>;

  constructor(code: V1ErrorCodeName, options: { message?: string; headers?: Record<string, string>; cause?: unknown } = {}) {
    super(options.message ?? V1ErrorCode[code].message, { cause: options.cause });
    this.code = code;
    this.status = V1ErrorCode[code].status;
    this.headers = options.headers ?? {};
  }
}

/** Source failures that cached content may cover: the source is unreachable or failing. */
export function isSourceOutage(error: unknown): boolean {
  return error instanceof V1Error && error.code === 'SOURCE_UNAVAILABLE';
}

/** A pushed layer larger than the registry takes (limits.uploadSize). */
export function layerTooLarge(limit: number): V1Error {
  return new V1Error('BODY_TOO_LARGE', { message: `Layer larger than the ${limit} bytes this registry takes` });
}
