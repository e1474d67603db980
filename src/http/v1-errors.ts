// The one place that writes v1 errors on the wire: docker-registry's `{"error": "..."}` with its status and
// its no-cache headers. A failure of the storage is a 503; unknown errors become a bare 500: no stack, no
// paths, no addresses.

import type { FastifyError, FastifyReply, FastifyRequest } from 'fastify';
import { FillError } from '../mirror/blob-fill.js';
import { V1Error } from '../v1/errors.js';
import { clientGone, refuseRestOfBody } from './request-body.js';
import { pythonJson } from '../v1/grammar.js';
import { STORAGE_UNAVAILABLE_MESSAGE, storageFailureOf } from './storage-failure.js';

/** docker-registry's toolkit.response headers for answers that must not be cached. */
export const NO_CACHE_HEADERS = { 'cache-control': 'no-cache', expires: '-1', pragma: 'no-cache' } as const;

/** Storage failures, failed fills and what fastify itself rejects (bad content types, bad URLs) in the v1 shape. */
export function toV1Error(error: unknown): V1Error | undefined {
  // Before the error's own code: a fill that failed because the disk did is the disk's failure.
  const failure = storageFailureOf(error);
  if (failure !== undefined) return new V1Error('UNAVAILABLE', { message: STORAGE_UNAVAILABLE_MESSAGE, cause: failure });
  if (error instanceof V1Error) return error;
  // A layer fill that failed before this response sent its first byte.
  if (error instanceof FillError) return new V1Error('SOURCE_UNAVAILABLE', { message: 'the transfer from the source registry failed; retry' });
  const status = (error as Partial<FastifyError> | undefined)?.statusCode;
  if (typeof status !== 'number' || status < 400 || status >= 500) return undefined;
  if (status === 413) return new V1Error('BODY_TOO_LARGE');
  if (status === 405) return new V1Error('METHOD_NOT_ALLOWED');
  if (status === 404) return new V1Error('NOT_FOUND');
  return new V1Error('BAD_REQUEST');
}

export function sendV1Error(reply: FastifyReply, error: V1Error): FastifyReply {
  for (const header of ['content-length', 'content-range', 'x-docker-size', 'x-docker-checksum-payload', 'last-modified', 'accept-ranges']) {
    reply.removeHeader(header);
  }
  reply.code(error.status).headers(NO_CACHE_HEADERS).headers(error.headers).header('content-type', 'application/json');
  return reply.send(Buffer.from(pythonJson({ error: error.message })));
}

export function v1ErrorHandler(this: unknown, error: unknown, request: FastifyRequest, reply: FastifyReply): FastifyReply | undefined {
  if (reply.raw.headersSent) {
    // A layer cut short (a failed fill): the client must see a broken transfer, not a short body.
    reply.raw.destroy();
    return undefined;
  }
  if (clientGone(request.raw)) {
    // A push broken off by its client: nobody is left to answer, and it is not the registry's fault.
    request.log.info({ err: (error as Error).message }, 'client went away');
    reply.raw.destroy();
    return undefined;
  }
  refuseRestOfBody(request.raw, reply.raw);
  const v1Error = toV1Error(error);
  if (v1Error !== undefined) {
    const failure = storageFailureOf(v1Error);
    if (failure !== undefined) request.log.error({ err: failure }, 'storage unavailable');
    else if (v1Error.status >= 500) request.log.warn({ err: v1Error.message }, 'v1 request failed');
    return sendV1Error(reply, v1Error);
  }
  request.log.error({ err: error }, 'unexpected error');
  return sendV1Error(reply, new V1Error('INTERNAL'));
}
