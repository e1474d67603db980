// How a request to a remote registry failed, in terms fit for a client: the kind of failure and a reason that
// completes "upstream X …", never an address. Each protocol turns it into its own wire error in one place
// (v2: UpstreamClient.unreachable, v1: V1SourceClient.unreachable).

import { AddressRefusedError } from './address-policy.js';

export type FailureKind =
  /** No connection, or it broke before an answer. */
  | 'unreachable'
  /** No answer, or not all of it, within a deadline. */
  | 'timeout'
  /** The answer was larger than the mirror takes. */
  | 'too-large'
  /** The upstream pointed the mirror somewhere it does not go (see AddressPolicy). */
  | 'refused'
  /** The request was aborted by the mirror itself (shutdown): says nothing about the upstream. */
  | 'aborted';

export class UpstreamFailure extends Error {
  override readonly name = 'UpstreamFailure';
  constructor(
    readonly kind: FailureKind,
    /** Completes "upstream X …" for a client: no address, no internal detail. */
    readonly reason: string,
    options?: { cause?: unknown },
  ) {
    super(reason, options);
  }
}

/** The failure behind an error thrown while talking to an upstream. */
export function failureOf(error: unknown): UpstreamFailure {
  if (error instanceof UpstreamFailure) return error;
  if (error instanceof AddressRefusedError) return new UpstreamFailure('refused', error.message, { cause: error });
  const code = (error as { code?: unknown } | undefined)?.code;
  const name = (error as { name?: unknown } | undefined)?.name;
  switch (code) {
    case 'UND_ERR_CONNECT_TIMEOUT':
      return new UpstreamFailure('timeout', 'did not accept a connection in time', { cause: error });
    case 'UND_ERR_HEADERS_TIMEOUT':
      return new UpstreamFailure('timeout', 'did not answer in time', { cause: error });
    case 'UND_ERR_BODY_TIMEOUT':
      return new UpstreamFailure('timeout', 'stopped sending data', { cause: error });
    case 'ECONNREFUSED':
    case 'ENOTFOUND':
    case 'EAI_AGAIN':
    case 'EHOSTUNREACH':
    case 'ENETUNREACH':
      return new UpstreamFailure('unreachable', 'is unreachable', { cause: error });
    case 'UND_ERR_SOCKET':
    case 'ECONNRESET':
    case 'EPIPE':
      return new UpstreamFailure('unreachable', 'closed the connection', { cause: error });
    case 'UND_ERR_MAX_REDIRECTIONS':
    case 'UND_ERR_REQ_RETRY':
      return new UpstreamFailure('unreachable', 'redirected too many times', { cause: error });
  }
  if (name === 'AbortError' || code === 'UND_ERR_ABORTED' || code === 'ABORT_ERR') return new UpstreamFailure('aborted', 'was not asked: the request was cancelled', { cause: error });
  return new UpstreamFailure('unreachable', 'failed', { cause: error });
}
