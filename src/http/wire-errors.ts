// The one place that writes errors on the wire: {"errors":[{code,message,detail}]} with the status
// registered for the code. A failure of the storage is a 503 UNAVAILABLE; unknown errors become a bare
// 500 INTERNAL: no stack, no paths, no addresses.

import type { FastifyError, FastifyReply, FastifyRequest } from 'fastify';
import { FillError } from '../mirror/blob-fill.js';
import { ErrorCode, RegistryError } from '../registry/errors.js';
import { clientGone, refuseRestOfBody } from './request-body.js';
import { STORAGE_UNAVAILABLE_MESSAGE, storageFailureOf } from './storage-failure.js';

export function wireBody(error: RegistryError): string {
  const entry: { code: string; message: string; detail?: unknown } = { code: error.code, message: error.message };
  if (error.detail !== undefined) entry.detail = error.detail;
  return JSON.stringify({ errors: [entry] });
}

/** Maps storage failures, failed fills and what fastify itself rejects (bad bodies, bad URLs) to registry errors. */
export function toRegistryError(error: unknown): RegistryError | undefined {
  // Before the error's own code: a fill or a mapping that failed because the disk did is the disk's failure.
  const failure = storageFailureOf(error);
  if (failure !== undefined) return new RegistryError('UNAVAILABLE', { message: STORAGE_UNAVAILABLE_MESSAGE, cause: failure });
  if (error instanceof RegistryError) return error;
  // A fill that failed before this response sent its first byte.
  if (error instanceof FillError) return new RegistryError('UPSTREAM_UNAVAILABLE', { message: 'the upstream transfer failed; retry' });
  const fastifyError = error as Partial<FastifyError> | undefined;
  const status = fastifyError?.statusCode;
  if (typeof status === 'number' && status >= 400 && status < 500) {
    if (status === 413) return new RegistryError('SIZE_INVALID', { status: 413, message: 'request body too large' });
    if (status === 415) return new RegistryError('UNSUPPORTED', { status: 415, message: 'unsupported media type' });
    if (status === 405) return new RegistryError('UNSUPPORTED');
    return new RegistryError('UNSUPPORTED', { status, message: 'bad request' });
  }
  return undefined;
}

export function sendRegistryError(reply: FastifyReply, error: RegistryError, method: string): FastifyReply {
  reply.removeHeader('content-length');
  reply.removeHeader('content-range');
  reply.removeHeader('docker-content-digest');
  reply.removeHeader('etag');
  reply.code(error.status).headers(error.headers).header('content-type', 'application/json; charset=utf-8');
  return method === 'HEAD' ? reply.send() : reply.send(wireBody(error));
}

export function internalError(): RegistryError {
  return new RegistryError('INTERNAL', { message: ErrorCode.INTERNAL.message });
}

export function errorHandler(this: unknown, error: unknown, request: FastifyRequest, reply: FastifyReply): FastifyReply | undefined {
  if (reply.raw.headersSent) {
    reply.raw.destroy();
    return undefined;
  }
  if (clientGone(request.raw)) {
    // Nobody is left to answer: not the mirror's fault, not worth an error line.
    request.log.info({ err: (error as Error).message }, 'client went away');
    reply.raw.destroy();
    return undefined;
  }
  refuseRestOfBody(request.raw, reply.raw);
  const registryError = toRegistryError(error);
  if (registryError !== undefined) {
    const failure = storageFailureOf(registryError);
    if (failure !== undefined) request.log.error({ err: failure }, 'storage unavailable');
    return sendRegistryError(reply, registryError, request.method);
  }
  request.log.error({ err: error }, 'unexpected error');
  return sendRegistryError(reply, internalError(), request.method);
}
