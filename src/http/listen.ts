// Binds the HTTP server: the configured address; by default every interface, IPv6 and IPv4 together, or IPv4
// alone on a host without IPv6. Any other failure (the port taken, not permitted) stops the start, saying why.
// The registry's listener takes new connections fairly under load (accept-fairness.ts).

import { Server as TlsServer } from 'node:tls';
import type { FastifyInstance } from 'fastify';
import type { ListenAddress } from '../config/load.js';
import { ACCEPT_COPIES, addAcceptCopies, LISTEN_BACKLOG, type AcceptCopies } from './accept-fairness.js';

export class ListenError extends Error {
  override readonly name = 'ListenError';
}

/** Errors of a listen on '::' that mean this host has no IPv6, not that the port is unusable. */
const NO_IPV6 = new Set(['EAFNOSUPPORT', 'EADDRNOTAVAIL']);

export function isIpv6Unavailable(error: unknown): boolean {
  const code = (error as { code?: unknown } | undefined)?.code;
  return typeof code === 'string' && NO_IPV6.has(code);
}

export interface ListenOptions {
  /**
   * Poll the listening socket through ACCEPT_COPIES more descriptors, so a saturated process still takes many new
   * connections per event-loop turn (the registry's listener; see accept-fairness.ts). Failing that, it warns.
   */
  fairAccept?: { warn(error: Error): void };
}

/** Binds where (host undefined: every interface) and returns the address bound. */
export async function listen(app: FastifyInstance, where: ListenAddress, options: ListenOptions = {}): Promise<{ host: string; port: number }> {
  let copies: AcceptCopies | undefined;
  const fairAccept = options.fairAccept;
  // Registered before listening (fastify takes no hooks after): no connection is taken through a copy once the
  // server stops listening.
  if (fairAccept !== undefined) {
    app.addHook('preClose', (done) => {
      copies?.close();
      done();
    });
  }
  await bind(app, where.host, where.port);
  if (fairAccept !== undefined) copies = addAcceptCopies(app.server, { copies: ACCEPT_COPIES, backlog: LISTEN_BACKLOG }, (error) => fairAccept.warn(error));
  const bound = app.server.address();
  return typeof bound === 'object' && bound !== null ? { host: bound.address, port: bound.port } : { host: '', port: where.port };
}

async function bind(app: FastifyInstance, host: string | undefined, port: number): Promise<void> {
  // fastify names the scheme after its own https option, which a server made by a serverFactory does not set.
  const secure = app.server instanceof TlsServer;
  const listenTextResolver = (address: string): string => `Server listening at ${secure ? address.replace(/^http:/, 'https:') : address}`;
  if (host !== undefined) {
    await app.listen({ host, port, backlog: LISTEN_BACKLOG, listenTextResolver }).catch((error: unknown) => {
      throw listenError(`${host.includes(':') ? `[${host}]` : host}:${port}`, error);
    });
    return;
  }
  try {
    await app.listen({ host: '::', port, ipv6Only: false, backlog: LISTEN_BACKLOG, listenTextResolver });
    return;
  } catch (error) {
    if (!isIpv6Unavailable(error)) throw listenError(`:${port} (every interface)`, error);
  }
  await app.listen({ host: '0.0.0.0', port, backlog: LISTEN_BACKLOG, listenTextResolver }).catch((error: unknown) => {
    throw listenError(`0.0.0.0:${port} (no IPv6 on this host)`, error);
  });
}

function listenError(address: string, error: unknown): ListenError {
  return new ListenError(`cannot listen on ${address}`, { cause: error });
}
