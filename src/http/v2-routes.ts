// The OCI Distribution API (v2) over fastify: one wildcard route, the path parsed by v2-path.ts,
// content from the Mirror, and the protocol's headers (digest, ETag, ranges, conditional GET).

import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { MediaType } from '../oci/manifest.js';
import { contentRange } from '../oci/range.js';
import { isMediaType, referrersIndex } from '../oci/referrers.js';
import type { Digest } from '../oci/digest.js';
import { RegistryError } from '../registry/errors.js';
import type { BlobAnswer, Mirror } from '../mirror/mirror.js';
import type { Target, UpstreamRouter } from '../mirror/upstream-router.js';
import { parseV2Path, type V2Route } from './v2-path.js';
import { describeRequest } from './request-context.js';
import type { Action } from '../auth/access-rules.js';
import type { AuthGate, Caller } from './auth-gate.js';

/** distribution's default page size for listings. */
const DEFAULT_PAGE_SIZE = 100;
const MAX_PAGE_SIZE = 10_000;

const ALL_METHODS = ['GET', 'HEAD', 'PUT', 'POST', 'PATCH', 'DELETE', 'OPTIONS'] as const;

export interface V2RouteOptions {
  /**
   * A URI prefix nginx maps to the data directory (docs/nginx.md): a cached blob's GET, whole or a range,
   * is answered with X-Accel-Redirect and nginx sends the file. HEAD, 304 and misses (which stream while
   * they fill) stay here.
   */
  xAccelRedirect?: string | undefined;
  /**
   * A cached blob's whole GET is answered with a 307 to a short-lived URL of the store's (storage.s3.redirect);
   * HEAD, ranges, 304 and misses stay here.
   */
  redirect?: boolean | undefined;
  /** Who may do what (when `auth` is configured); undefined: everyone may pull everything. */
  gate?: AuthGate | undefined;
}

export function registerV2Routes(app: FastifyInstance, mirror: Mirror, router: UpstreamRouter, options: V2RouteOptions = {}): void {
  const delivery = options.xAccelRedirect !== undefined ? 'key' : options.redirect === true ? 'redirect' : 'stream';
  const handler = async (request: FastifyRequest, reply: FastifyReply): Promise<FastifyReply> => {
    reply.header('docker-distribution-api-version', 'registry/2.0');
    const { path, query } = splitUrl(request.raw.url ?? '/');
    const route = parseV2Path(path);
    if (route === undefined) throw new RegistryError('NOT_FOUND', { message: 'unknown endpoint' });
    describeRequest(request, { kind: route.kind });
    const caller = options.gate === undefined ? undefined : await admit(options.gate, route, request, query);
    return dispatch(route, request, reply, query, caller);
  };

  /** Who the caller is, and whether it may do what the request asks (else a 401, 403 or 429 is thrown). */
  async function admit(gate: AuthGate, route: V2Route, request: FastifyRequest, query: URLSearchParams): Promise<Caller> {
    const caller = await gate.identify(request);
    if (route.kind === 'base') gate.requireAuthenticated(request, caller);
    if (route.kind === 'base' || route.kind === 'catalog') return caller;
    const target = router.pick(route.name, { namespace: query.get('ns') ?? undefined, host: request.headers.host });
    gate.authorize(request, caller, {
      name: route.name,
      catalogName: catalogNameOf(target, router.defaultRegistry),
      private: target.upstream?.settings.private === true,
      action: actionOf(request.method),
    });
    return caller;
  }
  app.route({ method: [...ALL_METHODS], url: '/v2', handler });
  app.route({ method: [...ALL_METHODS], url: '/v2/*', handler });

  async function dispatch(route: V2Route, request: FastifyRequest, reply: FastifyReply, query: URLSearchParams, caller: Caller | undefined): Promise<FastifyReply> {
    const method = request.method;
    if (route.kind === 'upload' || (method !== 'GET' && method !== 'HEAD')) {
      throw new RegistryError('UNSUPPORTED', { message: 'this mirror does not accept pushes or deletes yet' });
    }
    const head = method === 'HEAD';
    switch (route.kind) {
      case 'base':
        return reply.header('content-type', 'application/json').send(head ? undefined : '{}');
      case 'catalog': {
        const page = readPage(query);
        const listed = await mirror.catalog({ ...(page.last === undefined ? {} : { last: page.last }), limit: page.limit + 1 }, router.defaultRegistry);
        // Only what the caller may pull (a page may then hold fewer than n names; its Link still leads on).
        const gate = options.gate;
        const names = gate === undefined || caller === undefined ? listed : listed.filter((name) => gate.mayList(caller, name));
        return sendPage(reply, head, '/v2/_catalog', { repositories: names.slice(0, page.limit) }, names, page.limit, undefined);
      }
      case 'tags': {
        const target = pickTarget(route.name, query, request, reply);
        const page = readPage(query);
        const list = await mirror.tags(target, route.name, { ...(page.last === undefined ? {} : { last: page.last }), limit: page.limit + 1 }, upstreamQuery(query));
        describeRequest(request, { cache: list.cache, upstream: target.registry });
        const path = `/v2/${route.name}/tags/list`;
        const ns = query.get('ns') ?? undefined;
        if (list.cache === 'miss') {
          // The upstream paged it: its next page, as a link to this mirror (never the upstream's own URL).
          if (list.next !== undefined) reply.header('link', nextLink(path, list.next.n ?? page.limit, list.next.last, ns));
          return sendJson(reply, head, { name: list.name, tags: list.tags });
        }
        return sendPage(reply, head, path, { name: list.name, tags: list.tags.slice(0, page.limit) }, list.tags, page.limit, ns);
      }
      case 'manifest': {
        const target = pickTarget(route.name, query, request, reply);
        const answer = await mirror.manifest(target, route.reference, request.headers.accept);
        describeRequest(request, { cache: answer.cache, upstream: target.registry });
        const { manifest } = answer;
        setContentHeaders(reply, manifest.digest);
        reply.header('content-type', manifest.mediaType);
        if (notModified(request, manifest.digest)) return reply.code(304).send();
        reply.header('content-length', String(manifest.bytes.length));
        return reply.send(head ? undefined : manifest.bytes);
      }
      case 'blob': {
        const target = pickTarget(route.name, query, request, reply);
        const answer = await mirror.blob(target, route.digest, head ? 'HEAD' : 'GET', request.headers.range, delivery);
        describeRequest(request, { cache: answer.cache, upstream: target.registry });
        return sendBlob(request, reply, answer, options.xAccelRedirect);
      }
      case 'referrers': {
        const artifactType = readArtifactType(query);
        const target = pickTarget(route.name, query, request, reply);
        const answer = await mirror.referrers(target, route.digest);
        describeRequest(request, { cache: answer.cache, upstream: target.registry });
        // The mirror filters whatever the upstream did: it asks for (and caches) the whole list.
        if (artifactType !== undefined) reply.header('oci-filters-applied', 'artifactType');
        // Bytes, not a string: fastify would add a charset to the media type the spec names.
        const body = Buffer.from(referrersIndex(answer.referrers, artifactType));
        reply.header('content-type', MediaType.ociIndex).header('content-length', String(body.length));
        return reply.send(head ? undefined : body);
      }
    }
  }

  function pickTarget(name: string, query: URLSearchParams, request: FastifyRequest, reply: FastifyReply): Target {
    const namespace = query.get('ns') ?? undefined;
    const target = router.pick(name, { namespace, host: request.headers.host });
    if (namespace !== undefined) reply.header('oci-namespace', namespace);
    return target;
  }
}

/** The repository as the rules and the catalog name it: the default upstream's bare, any other's under its registry. */
export function catalogNameOf(target: Target, defaultRegistry: string): string {
  return target.registry === defaultRegistry || target.registry === '' ? target.name : `${target.registry}/${target.name}`;
}

function actionOf(method: string): Action {
  if (method === 'GET' || method === 'HEAD') return 'pull';
  return method === 'DELETE' ? 'delete' : 'push';
}

function sendBlob(request: FastifyRequest, reply: FastifyReply, answer: BlobAnswer, xAccelRedirect: string | undefined): FastifyReply {
  setContentHeaders(reply, answer.digest);
  reply.header('content-type', 'application/octet-stream').header('accept-ranges', 'bytes');
  if (answer.range === undefined && notModified(request, answer.digest)) {
    answer.body?.destroy();
    return reply.code(304).send();
  }
  if (answer.storedKey !== undefined && xAccelRedirect !== undefined) {
    // nginx sends the file and applies the request's Range itself (already checked satisfiable here);
    // the length and status it sends are its own, the other headers pass through.
    return reply.header('x-accel-redirect', `${xAccelRedirect}/${answer.storedKey}`).send('');
  }
  if (answer.redirectUrl !== undefined) {
    // Signed for this blob for a short while: no cache in between may keep it for another client, or past then.
    return reply.code(307).header('location', answer.redirectUrl).header('cache-control', 'no-store').header('content-length', '0').send('');
  }
  if (answer.range !== undefined) {
    const { start, end } = answer.range;
    reply.code(206).header('content-range', contentRange(start, end, answer.size ?? '*'));
    reply.header('content-length', String(end - start + 1));
  } else if (answer.size !== undefined) {
    reply.header('content-length', String(answer.size));
  }
  return reply.send(answer.body ?? (request.method === 'HEAD' ? undefined : ''));
}

function setContentHeaders(reply: FastifyReply, digest: Digest): void {
  reply.header('docker-content-digest', digest).header('etag', `"${digest}"`);
}

function notModified(request: FastifyRequest, digest: Digest): boolean {
  const header = request.headers['if-none-match'];
  if (header === undefined) return false;
  return header.split(',').some((entry) => {
    const tag = entry.trim().replace(/^W\//, '').replace(/^"(.*)"$/, '$1');
    return tag === digest || tag === '*';
  });
}

function splitUrl(url: string): { path: string; query: URLSearchParams } {
  const mark = url.indexOf('?');
  if (mark === -1) return { path: url, query: new URLSearchParams() };
  return { path: url.slice(0, mark), query: new URLSearchParams(url.slice(mark + 1)) };
}

function readPage(query: URLSearchParams): { last: string | undefined; limit: number } {
  const n = query.get('n');
  let limit = DEFAULT_PAGE_SIZE;
  if (n !== null) {
    if (!/^\d+$/.test(n) || Number(n) > MAX_PAGE_SIZE) {
      throw new RegistryError('PAGINATION_NUMBER_INVALID', { detail: { n: n.slice(0, 20), max: MAX_PAGE_SIZE } });
    }
    limit = Number(n);
  }
  return { last: query.get('last') ?? undefined, limit };
}

/** The artifactType filter of a referrers request; one that is no media type can name no artifact: 400. */
function readArtifactType(query: URLSearchParams): string | undefined {
  const artifactType = query.get('artifactType');
  if (artifactType === null) return undefined;
  if (!isMediaType(artifactType)) {
    throw new RegistryError('UNSUPPORTED', { status: 400, message: 'artifactType is not a media type', detail: { artifactType: artifactType.slice(0, 200) } });
  }
  return artifactType;
}

/** The listing query passed to the upstream: only n and last. */
function upstreamQuery(query: URLSearchParams): string {
  const forwarded = new URLSearchParams();
  for (const key of ['n', 'last']) {
    const value = query.get(key);
    if (value !== null) forwarded.set(key, value);
  }
  const text = forwarded.toString();
  return text === '' ? '' : `?${text}`;
}

function sendJson(reply: FastifyReply, head: boolean, body: object): FastifyReply {
  const text = JSON.stringify(body);
  reply.header('content-type', 'application/json; charset=utf-8').header('content-length', String(Buffer.byteLength(text)));
  return reply.send(head ? undefined : text);
}

/** A page of a listing; `fetched` holds one entry more than the page when there is a next page. */
function sendPage(reply: FastifyReply, head: boolean, path: string, body: Record<string, unknown>, fetched: string[], limit: number, ns: string | undefined): FastifyReply {
  if (fetched.length > limit && limit > 0) reply.header('link', nextLink(path, limit, fetched[limit - 1] ?? '', ns));
  return sendJson(reply, head, body);
}

/** `Link: <path?n=…&last=…>; rel="next"`, relative to this mirror, keeping containerd's `ns`. */
function nextLink(path: string, n: number, last: string, ns: string | undefined): string {
  const query = new URLSearchParams({ n: String(n), last });
  if (ns !== undefined) query.set('ns', ns);
  return `<${path}?${query.toString()}>; rel="next"`;
}
