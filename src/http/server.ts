// The HTTP server: fastify configured for a registry (no automatic HEAD, no body parsing, no request
// timeout for long pulls), the v2 routes, health and metrics endpoints, and one JSON access-log line
// per request with its cache outcome.

import { createServer, type RequestListener, type Server } from 'node:http';
import { createServer as createHttpsServer, type ServerOptions as HttpsServerOptions } from 'node:https';
import Fastify, { LogController, type FastifyBaseLogger, type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import { RegistryError } from '../registry/errors.js';
import type { Metrics } from '../telemetry/metrics.js';
import { describeRequest, factsOf } from './request-context.js';
import { createTurnBudget, TURN_BUDGET_MS } from './accept-fairness.js';
import type { InFlightRequests } from './in-flight.js';
import { discardBody, hasBody, lingerForDiscardedBody } from './request-body.js';
import { V1Error } from '../v1/errors.js';
import { sendV1Error, toV1Error } from './v1-errors.js';
import { isV1Url, registerV1Routes, type V1RouteOptions } from './v1-routes.js';
import type { AuthGate } from './auth-gate.js';
import { registerV2Routes, type V2Content, type V2RouteOptions } from './v2-routes.js';
import { dropHandshakesOnClose } from './tls.js';
import { CLUSTER_PATH, registerClusterRoutes, type LocalFillSource } from '../cluster/fill-route.js';
import { registerClusterUploadRoutes } from '../cluster/upload-route.js';
import type { UploadSessions } from '../registry/uploads.js';
import { errorHandler, internalError, sendRegistryError, toRegistryError } from './wire-errors.js';

/** How long an idle keep-alive connection is kept (fastify's default, which applies only to servers it creates). */
const KEEP_ALIVE_TIMEOUT_MS = 72_000;

export interface ServerParts {
  /** The v2 API's repositories (hosted and mirrored) and its catalog. */
  content: V2Content;
  metrics: Metrics;
  logger: FastifyBaseLogger;
  /** Whether the process is ready to serve (storage open, not shutting down). */
  ready: () => boolean;
  /** The operator's view of each upstream (circuit, budget, last error) and of the cache, served at /_regmirror/status. */
  status: () => Promise<object>;
  /** Runs garbage collection now (POST /_regmirror/gc), or says what it would remove (?dryRun=true). */
  collectGarbage: (request: { dryRun: boolean }) => Promise<object>;
  /** Serve /metrics and /_regmirror/* here too (false when they have a listener of their own). */
  adminRoutes: boolean;
  /** A client that sends or takes no bytes for this long is dropped (its upload's temporary removed). */
  clientIdleMs: number;
  /** Counts the requests being answered, for a graceful stop. */
  inFlight: InFlightRequests;
  /** The Docker Registry v1 API, when enabled. */
  v1?: V1RouteOptions;
  v2?: V2RouteOptions;
  /** Who may do what, when `auth` is configured: the v2 API, its token realm, and the admin routes here. */
  gate?: AuthGate | undefined;
  /** An https server with these options (http/tls.ts); undefined: plain http. */
  tls?: HttpsServerOptions;
  /** In a cluster: the internal endpoints the other nodes follow this node's fills and reach its upload sessions through. */
  cluster?: { secret: string; fills: LocalFillSource; uploads: UploadSessions };
}

export function buildServer(parts: ServerParts): FastifyInstance {
  const turns = createTurnBudget(TURN_BUDGET_MS);
  const app = Fastify({
    // Request work is started in turns of about TURN_BUDGET_MS (accept-fairness.ts), so a saturated process still
    // accepts and reads new connections every few milliseconds. fastify applies its own timeout options only to a
    // server it creates: this one gets them here.
    serverFactory: (handler) => {
      const server = createRawServer(parts.tls, (request, response) => turns.admit(() => handler(request, response)));
      // No limit on a whole request (multi-GB pulls and pushes); a connection idle for clientIdleMs is dropped instead.
      server.requestTimeout = 0;
      server.setTimeout(parts.clientIdleMs);
      server.keepAliveTimeout = KEEP_ALIVE_TIMEOUT_MS;
      return server;
    },
    loggerInstance: parts.logger,
    logController: new LogController({ disableRequestLogging: true }),
    exposeHeadRoutes: false,
    routerOptions: { maxParamLength: 8192 },
    // A stop drains first (app.ts): requests that still arrive are answered as usual, /readyz with its 503.
    return503OnClosing: false,
    forceCloseConnections: 'idle',
    // The mirror reads no request bodies yet; refuse large ones early.
    bodyLimit: 1024 * 1024,
    // A malformed URL (a bad percent escape) is the client's mistake: answer it in the shape of the API it was for.
    frameworkErrors: (error, request, reply) => {
      if (parts.v1 !== undefined && isV1Url(request.raw.url)) {
        void sendV1Error(reply, toV1Error(error) ?? new V1Error('BAD_REQUEST'));
        return;
      }
      void sendRegistryError(reply, toRegistryError(error) ?? internalError(), request.method);
    },
  });
  dropHandshakesOnClose(app);
  // The v2 routes read no body: no parser (JSON or text) may run and answer a 400 before the route's 405; what a
  // client sends anyway is discarded (see request-body.ts).
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('*', (_request, payload, done) => {
    discardBody(payload);
    done(null);
  });
  app.setErrorHandler(errorHandler);
  app.setNotFoundHandler((request, reply) => {
    describeRequest(request, { kind: 'other' });
    // The v1 routes take the seven methods of HTTP/1.1 that registries use; any other is the v1 API's 405.
    if (parts.v1 !== undefined && isV1Url(request.raw.url)) return sendV1Error(reply, new V1Error('METHOD_NOT_ALLOWED'));
    return sendRegistryError(reply, new RegistryError('NOT_FOUND', { message: 'unknown endpoint' }), request.method);
  });

  // A response cut short (a failed fill destroys it, a client hangs up) emits 'close' but never 'finish',
  // so fastify skips onResponse: 'close' logs it then, once, marked aborted.
  const logged = new WeakSet<FastifyRequest>();
  app.addHook('onRequest', (request, reply, done) => {
    // Never more (nor fewer) body bytes than the Content-Length sent: extra bytes would be read by the client as
    // the next response on its keep-alive connection. Node then fails the write and the connection is cut.
    reply.raw.strictContentLength = true;
    parts.inFlight.started();
    reply.raw.once('close', () => {
      parts.inFlight.ended();
      logAccess(request, reply);
    });
    // fastify hands no body of a GET or HEAD to a parser: what a client sends anyway is discarded here.
    if ((request.method === 'GET' || request.method === 'HEAD') && hasBody(request.raw)) discardBody(request.raw);
    done();
  });
  app.addHook('preHandler', (request, reply, done) => {
    lingerForDiscardedBody(request.raw, reply.raw);
    done();
  });
  app.addHook('onResponse', (request, reply, done) => {
    logAccess(request, reply);
    done();
  });

  function logAccess(request: FastifyRequest, reply: FastifyReply): void {
    if (logged.has(request)) return;
    logged.add(request);
    const facts = factsOf(request);
    // 0: the connection closed before any status was sent.
    const status = reply.raw.headersSent ? reply.statusCode : 0;
    const finished = reply.raw.writableFinished;
    const length = Number(reply.getHeader('content-length') ?? 0);
    const bytes = request.method === 'HEAD' || !finished || !Number.isFinite(length) ? 0 : length;
    const cache = facts.cache ?? 'none';
    parts.metrics.requests.inc({ method: request.method, kind: facts.kind ?? 'other', status: String(status), cache });
    if (bytes > 0) parts.metrics.responseBytes.inc({ cache, upstream: facts.upstream ?? '' }, bytes);
    request.log.info(
      {
        method: request.method,
        path: (request.raw.url ?? '').slice(0, 1024),
        status,
        bytes,
        ...(finished ? {} : { aborted: true }),
        cache,
        upstream: facts.upstream,
        durationMs: Math.round(reply.elapsedTime * 10) / 10,
        remote: request.ip,
      },
      'request',
    );
  }

  registerHealthRoutes(app, parts);
  if (parts.adminRoutes) registerAdminRoutes(app, parts);
  parts.gate?.registerTokenRoute(app);
  if (parts.cluster !== undefined) {
    registerClusterRoutes(app, parts.cluster.secret, parts.cluster.fills);
    registerClusterUploadRoutes(app, parts.cluster.secret, parts.cluster.uploads);
  }
  registerV2Routes(app, parts.content, { ...parts.v2, gate: parts.gate });
  if (parts.v1 !== undefined) registerV1Routes(app, parts.v1);
  return app;
}

/** The listener of its own for /metrics and /_regmirror/* (admin.listen), with the health checks beside them. */
export function buildAdminServer(parts: Pick<ServerParts, 'metrics' | 'logger' | 'ready' | 'status' | 'collectGarbage' | 'tls'>): FastifyInstance {
  const app = Fastify({
    serverFactory: (handler) => {
      const server = createRawServer(parts.tls, handler);
      server.keepAliveTimeout = KEEP_ALIVE_TIMEOUT_MS;
      return server;
    },
    loggerInstance: parts.logger,
    logController: new LogController({ disableRequestLogging: true }),
    forceCloseConnections: true,
  });
  dropHandshakesOnClose(app);
  registerHealthRoutes(app, parts);
  registerAdminRoutes(app, parts);
  return app;
}

/** http, or https over the TLS options; fastify's routes work on either unchanged. */
function createRawServer(tls: HttpsServerOptions | undefined, handler: RequestListener): Server {
  return tls === undefined ? createServer(handler) : createHttpsServer(tls, handler);
}

function registerHealthRoutes(app: FastifyInstance, parts: Pick<ServerParts, 'ready'>): void {
  app.get('/healthz', (_request, reply) => reply.send({ status: 'ok' }));
  app.get('/readyz', (_request, reply) => {
    const ready = parts.ready();
    return reply.code(ready ? 200 : 503).send({ status: ready ? 'ready' : 'not ready' });
  });
}

function registerAdminRoutes(app: FastifyInstance, parts: Pick<ServerParts, 'metrics' | 'status' | 'collectGarbage' | 'gate'>): void {
  const gate = parts.gate;
  if (gate !== undefined) {
    // On the registry's listener with auth on: a user the rules make an admin (the admin listener needs none).
    app.addHook('onRequest', async (request) => {
      const path = request.url.split('?', 1)[0] ?? '';
      // The cluster's endpoints check the nodes' shared secret instead (cluster/fill-route.ts).
      if (path === '/metrics' || (path.startsWith('/_regmirror/') && !path.startsWith(CLUSTER_PATH))) gate.requireAdmin(request, await gate.identify(request));
    });
  }
  app.get('/_regmirror/status', async (_request, reply) => reply.send(await parts.status()));
  app.post<{ Querystring: { dryRun?: string } }>('/_regmirror/gc', async (request, reply) => {
    const dryRun = request.query.dryRun;
    if (dryRun !== undefined && dryRun !== 'true' && dryRun !== 'false') {
      return reply.code(400).send({ error: 'dryRun is true or false' });
    }
    return reply.send(await parts.collectGarbage({ dryRun: dryRun === 'true' }));
  });
  app.get('/metrics', async (_request, reply) => {
    reply.header('content-type', parts.metrics.registry.contentType);
    return reply.send(await parts.metrics.registry.metrics());
  });
}
