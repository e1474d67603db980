// Request bodies the routes do not read. They are read and thrown away as they arrive, and the connection is not
// closed under a body still arriving: closing with unread input makes the kernel reset the connection, and a reset
// drops the end of the response still on its way to the client (a GET with a body and `Connection: close` lost most
// of a blob). Past a limit the client is cut off.

import type { IncomingMessage, ServerResponse } from 'node:http';
import type { FastifyInstance } from 'fastify';

/**
 * A body no route reads (a GET's, a refused push's rest) is discarded up to this many bytes; past it the client is
 * cut off rather than read for ever.
 */
export const DISCARDED_BODY_LIMIT = 16 * 1024 * 1024;

const discarding = new WeakSet<IncomingMessage>();

/** Reads and discards the rest of a request's body; more than DISCARDED_BODY_LIMIT bytes and the connection is cut. */
export function discardBody(body: IncomingMessage): void {
  discarding.add(body);
  let seen = 0;
  body.on('data', (chunk: Buffer) => {
    seen += chunk.length;
    if (seen > DISCARDED_BODY_LIMIT) body.socket.destroy();
  });
  body.resume();
}

/** Whether the client has gone away (a body it broke off, a connection it closed): nobody is left to answer. */
export function clientGone(request: IncomingMessage): boolean {
  // node clears the socket of a request once it is torn down.
  const socket = request.socket as IncomingMessage['socket'] | null;
  return socket === null || socket.destroyed;
}

/**
 * A request body to read as chunks, which stays open when the reader stops early (a push refused part-way): the
 * rest is then discarded and the client reads the refusal, instead of a torn-down connection.
 */
export function bodyChunks(request: IncomingMessage): AsyncIterable<Uint8Array> {
  return { [Symbol.asyncIterator]: () => request.iterator({ destroyOnReturn: false }) };
}

/**
 * For a request whose body is being discarded: the response does not close the connection (node would, for a
 * client that sent `Connection: close`, with the body's rest unread); the client closes it once it has the answer.
 */
export function lingerForDiscardedBody(request: IncomingMessage, response: ServerResponse): void {
  if (discarding.has(request) && !request.complete) response.shouldKeepAlive = true;
}

/**
 * Before an error answer to a request whose body is still arriving (a push refused, or too large): the rest is
 * discarded (up to DISCARDED_BODY_LIMIT, then the connection is cut), so the client can read the answer instead of
 * losing it to a reset.
 */
export function refuseRestOfBody(request: IncomingMessage, response: ServerResponse): void {
  if (request.complete || discarding.has(request)) return;
  discardBody(request);
  lingerForDiscardedBody(request, response);
}

/** Whether a request announces a body (fastify parses none for GET and HEAD: such a body is discarded here). */
export function hasBody(request: IncomingMessage): boolean {
  const length = request.headers['content-length'];
  return (length !== undefined && length !== '0') || request.headers['transfer-encoding'] !== undefined;
}

/**
 * A scope's body handling: the bodies of `methods` stay unread in request.raw for the route to stream (uploads,
 * pushes); any other method's body is discarded. No parser (JSON or text) runs, so none answers before the route.
 */
export function streamBodiesOf(scope: FastifyInstance, methods: readonly string[]): void {
  scope.removeAllContentTypeParsers();
  scope.addContentTypeParser('*', (request, payload, parsed) => {
    if (!methods.includes(request.method)) discardBody(payload);
    parsed(null);
  });
}
