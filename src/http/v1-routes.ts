// The Docker Registry v1 API over fastify as docker-registry 0.9 served it (registry, standalone index, search),
// content from the V1Mirror; in its own scope, bodies are read raw: layers streamed, JSON limited.

import { randomInt } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { contentRange } from '../oci/range.js';
import { V1Error } from '../v1/errors.js';
import { DEFAULT_REPOSITORY_JSON, parseJson, parseRepositoryName, parseV1Path, pythonJson, repositoryPath, type SearchResult, type V1Route } from '../v1/grammar.js';
import type { ImageJsonAnswer, SourceContext, V1Mirror } from '../v1/mirror.js';
import { forwardedHeaders, SOURCE_NAME } from '../v1/source-client.js';
import type { CacheOutcome } from '../telemetry/metrics.js';
import type { V1RepositoryName } from '../store/layout.js';
import { bodyChunks, streamBodiesOf } from './request-body.js';
import { describeRequest } from './request-context.js';
import type { V1Admission, V1AuthGuard } from './v1-auth.js';
import { NO_CACHE_HEADERS, v1ErrorHandler } from './v1-errors.js';

/** The docker-registry release whose API this is. */
const REGISTRY_VERSION = '0.9.1';
/** JSON bodies (image json, image lists, tags) are small; layers stream without a limit. */
const MAX_JSON_BODY_BYTES = 8 * 1024 * 1024;
/** set_cache_headers: images never change, so caches may keep them a year. */
const IMAGE_TTL_S = 31_536_000;
const TOKEN_ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789';

const ALL_METHODS = ['GET', 'HEAD', 'PUT', 'POST', 'PATCH', 'DELETE', 'OPTIONS'] as const;

export interface V1RouteOptions {
  mirror: V1Mirror;
  /** Serve the index routes (users, image lists, tokens), as docker-registry's `standalone`. */
  standalone: boolean;
  /** nginx_x_accel_redirect: a URI prefix nginx maps to the data directory (no trailing slash). */
  nginxXAccelRedirect: string | undefined;
  /** Who may do what, when `auth` is configured (v1-auth.ts); undefined: anyone may do anything, as docker-registry. */
  guard?: V1AuthGuard | undefined;
}

/**
 * Whether a request URL is for the v1 API (whose errors have docker-registry's shape): `/_ping` or under `/v1/`, as
 * the router sees it (escapes of unreserved characters decoded).
 */
export function isV1Url(url: string | undefined): boolean {
  if (url === undefined) return false;
  const end = url.search(/[?#]/);
  const path = (end === -1 ? url : url.slice(0, end)).replace(/%([0-9A-Fa-f]{2})/g, (escape, code: string) => {
    const char = String.fromCharCode(Number.parseInt(code, 16));
    return /[A-Za-z0-9._~-]/.test(char) ? char : escape;
  });
  return path === '/_ping' || path.startsWith('/v1/');
}

export function registerV1Routes(app: FastifyInstance, options: V1RouteOptions): void {
  const { mirror, guard } = options;

  // An encapsulated scope: its own body handling and error writer, leaving the v2 routes as they are.
  void app.register((scope, _options, done) => {
    // Bodies of writes stay unread in request.raw: layers stream from it, JSON is read with a limit.
    streamBodiesOf(scope, ['PUT', 'POST']);
    scope.setErrorHandler(v1ErrorHandler);
    scope.route({ method: [...ALL_METHODS], url: '/_ping', handler });
    scope.route({ method: [...ALL_METHODS], url: '/v1/*', handler });
    done();
  });

  async function handler(request: FastifyRequest, reply: FastifyReply): Promise<FastifyReply> {
    reply.header('x-docker-registry-version', REGISTRY_VERSION);
    const url = request.raw.url ?? '/';
    const mark = url.indexOf('?');
    const path = mark === -1 ? url : url.slice(0, mark);
    const query = new URLSearchParams(mark === -1 ? '' : url.slice(mark + 1));
    describeRequest(request, { kind: 'v1-other' });
    const route = parseV1Path(path);
    if (route === undefined) throw new V1Error('NOT_FOUND');
    describeRequest(request, { kind: kindOf(route), ...(mirror.mirroring ? { upstream: SOURCE_NAME } : {}) });
    const method = request.method;
    if (method === 'HEAD' || method === 'OPTIONS' || method === 'PATCH') throw new V1Error('METHOD_NOT_ALLOWED');
    const context: SourceContext = { headers: forwardedHeaders(request.headers), ...clientRepository(request) };
    // Every request, before anything is read or written: with auth, who the caller is and whether it may.
    const admission = await guard?.admit(route, request, options.standalone, context);
    const noted = <T extends { cache: CacheOutcome }>(answer: T): T => note(request, answer);
    const setIndexHeaders = (name: V1RepositoryName, access: 'read' | 'write' | 'delete'): Promise<void> => indexHeaders(request, reply, name, access, admission, guard);

    switch (route.kind) {
      case 'ping': {
        allow(method, ['GET']);
        const standalone = mirror.mirroring ? 'mirror' : options.standalone ? 'True' : 'False';
        return sendJson(reply.header('x-docker-registry-standalone', standalone), 200, '{}');
      }
      case 'image':
        return image(route, request, reply, context, admission);
      case 'tags':
        if (method === 'DELETE') return deleteRepository(route.name, reply);
        allow(method, ['GET']);
        return sendJson(reply, 200, pythonJson(noted(await mirror.tags(route.name, context)).value));
      case 'tag':
        switch (allow(method, ['GET', 'PUT', 'DELETE'])) {
          case 'GET':
            return sendJson(reply, 200, pythonJson(noted(await mirror.tag(route.name, route.tag, context)).value));
          case 'PUT': {
            const body = await readJsonBody(request.raw);
            if (admission !== undefined) await guard?.requireTaggable(admission, route.name, body, context);
            await mirror.putTag(route.name, route.tag, body, request.headers['user-agent'] ?? '');
            return sendJson(reply, 200, 'true');
          }
          default:
            await mirror.deleteTag(route.name, route.tag);
            return sendJson(reply, 200, 'true');
        }
      case 'tag-json': {
        allow(method, ['GET']);
        const stored = await mirror.tagJson(route.name, route.tag);
        const parsed = stored === undefined ? undefined : parseJson(stored);
        return sendJson(reply, 200, pythonJson(parsed?.ok === true ? parsed.value : DEFAULT_REPOSITORY_JSON));
      }
      case 'repository-json':
        allow(method, ['GET']);
        return sendJson(reply, 200, pythonJson(noted(await mirror.repositoryJson(route.name, context)).value));
      case 'properties':
        if (allow(method, ['GET', 'PUT']) === 'PUT') {
          await mirror.setAccess(route.name, await readJsonBody(request.raw));
          return sendJson(reply, 200, 'true');
        }
        return sendJson(reply, 200, pythonJson({ access: (await mirror.isPrivate(route.name)) ? 'private' : 'public' }));
      case 'repository':
        // DELETE belongs to the registry; PUT to the index.
        if (method === 'DELETE') return deleteRepository(route.name, reply);
        requireStandalone();
        allow(method, ['PUT']);
        await mirror.putIndexImages(route.name, await readJsonBody(request.raw));
        await setIndexHeaders(route.name, 'write');
        return sendJson(reply, 200, '""');
      case 'index-images':
        requireStandalone();
        switch (allow(method, ['GET', 'PUT', 'DELETE'])) {
          case 'GET': {
            const answer = noted(await mirror.indexImages(route.name, context));
            await setIndexHeaders(route.name, 'read');
            return sendJson(reply, 200, answer.value);
          }
          case 'PUT':
            await mirror.putIndexImages(route.name, await readJsonBody(request.raw));
            await setIndexHeaders(route.name, 'write');
            return reply.code(204).send();
          default:
            mirror.deleteIndexImages();
            await setIndexHeaders(route.name, 'delete');
            return reply.code(204).send();
        }
      case 'auth':
        requireStandalone();
        allow(method, ['PUT']);
        return sendJson(reply, 200, '"OK"');
      case 'users':
        requireStandalone();
        if (allow(method, ['GET', 'POST']) === 'GET') return sendJson(reply, 200, '"OK"');
        if (!parseJson(await readJsonBody(request.raw)).ok) throw new V1Error('JSON_UNDECODABLE');
        return sendJson(reply, 201, '"User Created"');
      case 'user':
        requireStandalone();
        allow(method, ['PUT']);
        return reply.headers(NO_CACHE_HEADERS).code(204).send();
      case 'search': {
        allow(method, ['GET']);
        const answer = noted(await mirror.search(query.get('q') ?? '', context));
        if (guard === undefined || admission === undefined) return sendJson(reply, 200, pythonJson(answer.value));
        // Only what the caller may pull.
        const results: SearchResult[] = [];
        for (const result of answer.value.results) if (await guard.mayList(admission, result.name)) results.push(result);
        return sendJson(reply, 200, pythonJson({ ...answer.value, num_results: results.length, results }));
      }
    }
  }

  async function image(
    route: Extract<V1Route, { kind: 'image' }>,
    request: FastifyRequest,
    reply: FastifyReply,
    context: SourceContext,
    admission: V1Admission | undefined,
  ): Promise<FastifyReply> {
    const { id } = route;
    const method = request.method;
    if (route.resource === 'checksum') {
      allow(method, ['PUT']);
      await mirror.putImageChecksum(id, request.headers['x-docker-checksum-payload'] as string | undefined);
      return sendJson(reply, 200, 'true');
    }
    if (method === 'PUT' && route.resource === 'json') {
      const body = await readJsonBody(request.raw);
      if (admission !== undefined) await guard?.requireParent(admission, id, body, context);
      await mirror.putImageJson(id, body, admission?.pushFor);
      return sendJson(reply, 200, 'true');
    }
    if (method === 'PUT' && route.resource === 'layer') {
      await mirror.putImageLayer(id, bodyChunks(request.raw), declaredLength(request.raw));
      return sendJson(reply, 200, 'true');
    }
    allow(method, ['GET']);
    setImageCacheHeaders(reply);
    // docker-registry answered every conditional GET with 304, even for images it did not have.
    if (request.headers['if-modified-since'] !== undefined && (await mirror.hasImage(id))) {
      describeRequest(request, { cache: 'hit' });
      return reply.code(304).send();
    }
    switch (route.resource) {
      case 'json':
        return sendImageJson(reply, note(request, await mirror.imageJson(id, context)));
      case 'ancestry': {
        const answer = note(request, await mirror.ancestry(id, context));
        const parsed = parseJson(answer.value);
        return sendJson(reply, 200, parsed.ok ? pythonJson(parsed.value) : answer.value, true);
      }
      default:
        return layer(id, request, reply, context);
    }
  }

  async function layer(id: string, request: FastifyRequest, reply: FastifyReply, context: SourceContext): Promise<FastifyReply> {
    reply.header('content-type', 'application/octet-stream').header('accept-ranges', 'bytes');
    const accel = options.nginxXAccelRedirect;
    // Offload to nginx only what is here: a miss streams from the fill like any other.
    const key = accel === undefined ? undefined : await mirror.storedLayerKey(id);
    if (key !== undefined) {
      describeRequest(request, { cache: 'hit' });
      return reply.header('x-accel-redirect', `${accel}/${key}`).send('');
    }
    const answer = note(request, await mirror.layer(id, request.headers.range, context));
    if (answer.range !== undefined) {
      const { start, end } = answer.range;
      reply.code(206).header('content-range', contentRange(start, end, answer.size ?? '*')).header('content-length', String(end - start + 1));
    } else if (answer.size !== undefined) {
      reply.header('content-length', String(answer.size));
    }
    return reply.send(answer.body ?? '');
  }

  async function deleteRepository(name: V1RepositoryName, reply: FastifyReply): Promise<FastifyReply> {
    await mirror.deleteRepository(name);
    return sendJson(reply, 200, 'true');
  }

  function requireStandalone(): void {
    if (!options.standalone) throw new V1Error('NOT_FOUND');
  }
}

/** Records the cache outcome for the access log and metrics. */
function note<T extends { cache: CacheOutcome }>(request: FastifyRequest, answer: T): T {
  describeRequest(request, { cache: answer.cache });
  return answer;
}

function sendImageJson(reply: FastifyReply, answer: ImageJsonAnswer): FastifyReply {
  if (answer.size !== undefined) reply.header('x-docker-size', String(answer.size));
  // One header line per checksum, as docker-registry sent its list.
  if (answer.checksums.length > 0) reply.header('x-docker-checksum-payload', answer.checksums.length === 1 ? answer.checksums[0] : answer.checksums);
  return sendJson(reply, 200, answer.bytes, true);
}

/** A JSON answer with docker-registry's headers: no-cache unless `cacheable` (image resources). */
function sendJson(reply: FastifyReply, status: number, body: string | Buffer, cacheable = false): FastifyReply {
  if (!cacheable) reply.headers(NO_CACHE_HEADERS);
  // A Buffer, so fastify adds no charset: docker-registry sent a bare application/json.
  return reply.code(status).header('content-type', 'application/json').send(typeof body === 'string' ? Buffer.from(body) : body);
}

function setImageCacheHeaders(reply: FastifyReply): void {
  reply
    .header('cache-control', `public, max-age=${IMAGE_TTL_S}`)
    .header('expires', new Date(Date.now() + IMAGE_TTL_S * 1000).toUTCString())
    .header('last-modified', 'Thu, 01 Jan 1970 00:00:00 GMT');
}

/**
 * The standalone index's answer headers: the endpoints are this server (the Host the client used), and the
 * token, when the client asks for one, is the mirror's own, never a source's: with auth, one of the guard's, signed
 * and checked on every request; without, random, as docker-registry's standalone index gave (and never checked).
 */
async function indexHeaders(
  request: FastifyRequest,
  reply: FastifyReply,
  name: V1RepositoryName,
  access: 'read' | 'write' | 'delete',
  admission: V1Admission | undefined,
  guard: V1AuthGuard | undefined,
): Promise<void> {
  const host = request.headers.host;
  const { localAddress, localPort } = request.raw.socket;
  const local = localAddress?.includes(':') === true ? `[${localAddress}]:${localPort}` : `${localAddress}:${localPort}`;
  reply.header('x-docker-endpoints', host !== undefined && /^[A-Za-z0-9.:[\]-]{1,300}$/.test(host) ? host : local);
  if (request.headers['x-docker-token']?.toString().toLowerCase() !== 'true') return;
  const token = guard !== undefined && admission !== undefined ? await guard.token(admission, name, access) : randomToken(name, access);
  reply.header('x-docker-token', token).header('www-authenticate', token);
}

function randomToken(name: V1RepositoryName, access: 'read' | 'write' | 'delete'): string {
  let signature = '';
  for (let index = 0; index < 16; index++) signature += TOKEN_ALPHABET[randomInt(TOKEN_ALPHABET.length)];
  return `Token signature=${signature},repository="${repositoryPath(name)}",access=${access}`;
}

/** The repository a client's token names (a token this server issued): it picks the source's token for image requests. */
function clientRepository(request: FastifyRequest): { repository?: string } {
  const match = /repository="?([^",\s]+)"?/.exec(request.headers.authorization ?? '');
  if (!match) return {};
  try {
    return { repository: repositoryPath(parseRepositoryName(match[1] ?? '')) };
  } catch {
    return {};
  }
}

function allow<M extends string>(method: string, methods: readonly M[]): M {
  if (!(methods as readonly string[]).includes(method)) throw new V1Error('METHOD_NOT_ALLOWED');
  return method as M;
}

function kindOf(route: V1Route): string {
  return route.kind === 'image' ? `v1-${route.resource}` : `v1-${route.kind}`;
}

/** The Content-Length a request announced, when it is a plain number. */
function declaredLength(body: IncomingMessage): number | undefined {
  const text = body.headers['content-length'];
  return text !== undefined && /^\d{1,15}$/.test(text) ? Number(text) : undefined;
}

/** Reads a JSON request body whole, refusing more than MAX_JSON_BODY_BYTES. */
async function readJsonBody(body: IncomingMessage): Promise<Buffer> {
  const declared = declaredLength(body);
  if (declared !== undefined && declared > MAX_JSON_BODY_BYTES) throw new V1Error('BODY_TOO_LARGE');
  const chunks: Uint8Array[] = [];
  let total = 0;
  for await (const chunk of bodyChunks(body)) {
    total += chunk.length;
    if (total > MAX_JSON_BODY_BYTES) throw new V1Error('BODY_TOO_LARGE');
    chunks.push(chunk);
  }
  return Buffer.concat(chunks);
}
