// The OCI Distribution API (v2) over fastify: one wildcard route, the path parsed by v2-path.ts, the repository's
// content service from the repository policy (hosted or mirrored), and the protocol's headers (digest, ETag,
// ranges, conditional GET, uploads' Location and Range).

import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { MediaType } from '../oci/manifest.js';
import { contentRange } from '../oci/range.js';
import { isMediaType, referrersIndex } from '../oci/referrers.js';
import { parseDigest, type Digest } from '../oci/digest.js';
import { isValidRepositoryName } from '../oci/name.js';
import type { Page } from '../meta/metadata-store.js';
import { RegistryError } from '../registry/errors.js';
import type { BlobAnswer, ChunkRange, RepositoryWrites, UploadStatus } from '../registry/content-service.js';
import type { RepositoryPolicy, ResolvedRepository } from '../mirror/repository-policy.js';
import { parseV2Path, type V2Route } from './v2-path.js';
import { describeRequest } from './request-context.js';
import { bodyChunks, refuseRestOfBody, streamBodiesOf } from './request-body.js';
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
  /** Who may do what (when `auth` is configured); undefined: everyone may pull everything (and push where hosted). */
  gate?: AuthGate | undefined;
}

export interface V2Content {
  policy: RepositoryPolicy;
  /** A page of the catalog: every repository, hosted and mirrored, as clients name them. */
  catalog: (page: Page) => Promise<string[]>;
}

export function registerV2Routes(app: FastifyInstance, content: V2Content, options: V2RouteOptions = {}): void {
  const { policy } = content;
  const delivery = options.xAccelRedirect !== undefined ? 'key' : options.redirect === true ? 'redirect' : 'stream';
  const handler = async (request: FastifyRequest, reply: FastifyReply): Promise<FastifyReply> => {
    reply.header('docker-distribution-api-version', 'registry/2.0');
    const { path, query } = splitUrl(request.raw.url ?? '/');
    const route = parseV2Path(path, request.method);
    if (route === undefined) throw new RegistryError('NOT_FOUND', { message: 'unknown endpoint' });
    describeRequest(request, { kind: route.kind });
    if (route.kind === 'base' || route.kind === 'catalog') {
      const caller = options.gate === undefined ? undefined : await options.gate.identify(request);
      if (route.kind === 'base' && caller !== undefined) options.gate?.requireAuthenticated(request, caller);
      return route.kind === 'base' ? sendBase(request, reply) : sendCatalog(request, reply, query, caller);
    }
    const namespace = query.get('ns') ?? undefined;
    const resolved = policy.resolve(route.name, { namespace, host: request.headers.host });
    const caller = options.gate === undefined ? undefined : await options.gate.identify(request);
    if (options.gate !== undefined && caller !== undefined) {
      options.gate.authorize(request, caller, { name: route.name, catalogName: resolved.catalogName, private: resolved.private, action: actionOf(request.method) });
    }
    // Echoed only when it routed the request to the upstream it names (a hosted repository ignores it).
    if (namespace !== undefined && resolved.registry !== '') reply.header('oci-namespace', namespace);
    describeRequest(request, { upstream: resolved.registry === '' ? undefined : resolved.registry });
    if (request.method !== 'GET' && request.method !== 'HEAD') return write(route, resolved, request, reply, query, caller);
    return read(route, resolved, request, reply, query);
  };

  // An encapsulated scope: uploads and manifest pushes stream their bodies from request.raw.
  void app.register((scope, _options, done) => {
    streamBodiesOf(scope, ['PUT', 'POST', 'PATCH']);
    scope.route({ method: [...ALL_METHODS], url: '/v2', handler });
    scope.route({ method: [...ALL_METHODS], url: '/v2/*', handler });
    done();
  });

  function sendBase(request: FastifyRequest, reply: FastifyReply): FastifyReply {
    if (request.method !== 'GET' && request.method !== 'HEAD') throw methodNotAllowed(request.method);
    return reply.header('content-type', 'application/json').send(request.method === 'HEAD' ? undefined : '{}');
  }

  async function sendCatalog(request: FastifyRequest, reply: FastifyReply, query: URLSearchParams, caller: Caller | undefined): Promise<FastifyReply> {
    if (request.method !== 'GET' && request.method !== 'HEAD') throw methodNotAllowed(request.method);
    const page = readPage(query);
    const listed = await content.catalog({ ...(page.last === undefined ? {} : { last: page.last }), limit: page.limit + 1 });
    // Only what the caller may pull (a page may then hold fewer than n names; its Link still leads on).
    const gate = options.gate;
    const names = gate === undefined || caller === undefined ? listed : listed.filter((name) => gate.mayList(caller, name));
    return sendPage(reply, request.method === 'HEAD', '/v2/_catalog', { repositories: names.slice(0, page.limit) }, listed, page.limit, undefined);
  }

  async function read(route: Exclude<V2Route, { kind: 'base' | 'catalog' }>, resolved: ResolvedRepository, request: FastifyRequest, reply: FastifyReply, query: URLSearchParams): Promise<FastifyReply> {
    const head = request.method === 'HEAD';
    const { service } = resolved;
    switch (route.kind) {
      case 'tags': {
        const page = readPage(query);
        const list = await service.tags({ ...(page.last === undefined ? {} : { last: page.last }), limit: page.limit + 1 });
        describeRequest(request, { cache: list.cache });
        return sendPage(reply, head, `/v2/${route.name}/tags/list`, { name: list.name, tags: list.tags.slice(0, page.limit) }, list.tags, page.limit, query.get('ns') ?? undefined);
      }
      case 'manifest': {
        const answer = await service.manifest(route.reference, request.headers.accept);
        describeRequest(request, { cache: answer.cache });
        const { manifest } = answer;
        setContentHeaders(reply, manifest.digest);
        reply.header('content-type', manifest.mediaType);
        if (notModified(request, manifest.digest)) return reply.code(304).send();
        reply.header('content-length', String(manifest.bytes.length));
        return reply.send(head ? undefined : manifest.bytes);
      }
      case 'blob': {
        const answer = await service.blob(route.digest, head ? 'HEAD' : 'GET', request.headers.range, delivery);
        describeRequest(request, { cache: answer.cache });
        return sendBlob(request, reply, answer, options.xAccelRedirect);
      }
      case 'referrers': {
        const artifactType = readArtifactType(query);
        const answer = await service.referrers(route.digest);
        describeRequest(request, { cache: answer.cache });
        // The whole list is kept (a mirror asks its upstream for all of it); the filter is applied here.
        if (artifactType !== undefined) reply.header('oci-filters-applied', 'artifactType');
        // Bytes, not a string: fastify would add a charset to the media type the spec names.
        const body = Buffer.from(referrersIndex(answer.referrers, artifactType));
        reply.header('content-type', MediaType.ociIndex).header('content-length', String(body.length));
        return reply.send(head ? undefined : body);
      }
      case 'upload':
        // A GET of an upload's status.
        return sendUploadStatus(reply.code(204), route.name, await requireWrites(resolved, route.name).uploadStatus(requireSession(route.session)));
    }
  }

  async function write(route: Exclude<V2Route, { kind: 'base' | 'catalog' }>, resolved: ResolvedRepository, request: FastifyRequest, reply: FastifyReply, query: URLSearchParams, caller: Caller | undefined): Promise<FastifyReply> {
    const method = request.method;
    const writes = requireWrites(resolved, route.name);
    const body = bodyChunks(request.raw);
    switch (route.kind) {
      case 'upload':
        if (route.session === undefined) {
          if (method !== 'POST') throw methodNotAllowed(method);
          return startUpload(writes, route.name, request, reply, query, caller);
        }
        switch (method) {
          case 'PATCH':
            return sendUploadStatus(reply.code(202), route.name, await writes.appendUpload(route.session, body, readContentRange(request)));
          case 'PUT': {
            const digest = await writes.completeUpload(route.session, requireDigestParameter(query), body, readContentRange(request));
            return sendBlobCreated(reply, route.name, digest);
          }
          case 'DELETE':
            await writes.cancelUpload(route.session);
            return reply.code(204).send();
          default:
            throw methodNotAllowed(method);
        }
      case 'manifest': {
        if (method === 'DELETE') {
          await writes.deleteManifest(route.reference);
          return reply.code(202).send();
        }
        if (method !== 'PUT') throw methodNotAllowed(method);
        const pushed = await writes.putManifest(route.reference, request.headers['content-type'], body);
        setContentHeaders(reply, pushed.digest);
        if (pushed.subject !== undefined) reply.header('oci-subject', pushed.subject);
        return reply.code(201).header('location', `/v2/${route.name}/manifests/${pushed.digest}`).send();
      }
      case 'blob':
        if (method !== 'DELETE') throw methodNotAllowed(method);
        await writes.deleteBlob(route.digest);
        return reply.code(202).send();
      default:
        throw methodNotAllowed(method);
    }
  }

  /**
   * POST …/blobs/uploads/: a whole blob (`?digest=`), a mount (`?mount=` with `from=`, or alone for an automatic one),
   * or a new session. A mount the caller may not read from, or of a blob its source does not hold, starts a session.
   */
  async function startUpload(writes: RepositoryWrites, name: string, request: FastifyRequest, reply: FastifyReply, query: URLSearchParams, caller: Caller | undefined): Promise<FastifyReply> {
    const mount = query.get('mount');
    const whole = query.get('digest');
    // Only a whole upload has a body to read: any other POST's is discarded, the connection kept.
    if (whole === null || mount !== null) refuseRestOfBody(request.raw, reply.raw);
    if (mount !== null) {
      const digest = requireDigest(mount);
      const from = mountSource(query.get('from'), request, caller);
      const started = await writes.startUpload({ digest, from: from ?? undefined });
      if (started.kind === 'mounted') return sendBlobCreated(reply, name, started.digest);
      return sendUploadStatus(reply.code(202), name, started.status);
    }
    if (whole !== null) return sendBlobCreated(reply, name, await writes.uploadWhole(requireDigest(whole), bodyChunks(request.raw)));
    const started = await writes.startUpload(undefined);
    if (started.kind !== 'session') throw new RegistryError('INTERNAL');
    return sendUploadStatus(reply.code(202), name, started.status);
  }

  /** A mount's source repository, when the caller may pull from it; null when it may not (a fresh upload then). */
  function mountSource(from: string | null, request: FastifyRequest, caller: Caller | undefined): ReturnType<RepositoryPolicy['repositoryOf']> | null | undefined {
    if (from === null) return undefined;
    if (!isValidRepositoryName(from)) throw new RegistryError('NAME_INVALID', { detail: { from: from.slice(0, 300) } });
    const source = policy.resolve(from, { host: request.headers.host });
    const gate = options.gate;
    if (gate !== undefined && caller !== undefined && !gate.allows(caller, { name: from, catalogName: source.catalogName, private: source.private, action: 'pull' })) return null;
    return source.service.repository;
  }
}

/** The write side of a hosted repository; a mirrored one is read-only: 405 UNSUPPORTED, in the spec's error shape. */
function requireWrites(resolved: ResolvedRepository, name: string): RepositoryWrites {
  if (resolved.service.writes === undefined) {
    throw new RegistryError('UNSUPPORTED', { message: `repository ${name} is mirrored: it takes no pushes or deletes`, detail: { name } });
  }
  return resolved.service.writes;
}

function methodNotAllowed(method: string): RegistryError {
  return new RegistryError('UNSUPPORTED', { message: `method ${method} is not allowed here` });
}

function requireSession(session: string | undefined): string {
  if (session === undefined) throw methodNotAllowed('GET');
  return session;
}

function requireDigest(text: string): Digest {
  const parsed = parseDigest(text);
  if (parsed.ok) return parsed.digest;
  throw new RegistryError('DIGEST_INVALID', { message: parsed.reason === 'unsupported' ? 'unsupported digest algorithm' : 'invalid digest', detail: { digest: text.slice(0, 200) } });
}

export function requireDigestParameter(query: URLSearchParams): Digest {
  const digest = query.get('digest');
  if (digest === null) throw new RegistryError('DIGEST_INVALID', { message: 'the digest query parameter is required to complete an upload' });
  return requireDigest(digest);
}

/** A chunk's Content-Range: `<start>-<end>` (also with a `bytes ` or `bytes=` unit, or a `/<total>`); none: undefined. */
export function readContentRange(request: FastifyRequest): ChunkRange | undefined {
  const header = request.headers['content-range'];
  if (header === undefined) return undefined;
  const match = /^\s*(?:bytes[ =])?(\d{1,15})-(\d{1,15})(?:\/(?:\d{1,15}|\*))?\s*$/.exec(header);
  if (match === null) throw new RegistryError('BLOB_UPLOAD_INVALID', { message: 'Content-Range is not <start>-<end>', detail: { contentRange: header.slice(0, 100) } });
  const start = Number(match[1]);
  const end = Number(match[2]);
  if (end < start) throw new RegistryError('RANGE_INVALID', { message: 'Content-Range ends before it starts' });
  return { start, end };
}

function sendUploadStatus(reply: FastifyReply, name: string, status: UploadStatus): FastifyReply {
  return reply
    .header('location', `/v2/${name}/blobs/uploads/${status.id}`)
    .header('range', `0-${Math.max(0, status.size - 1)}`)
    .header('docker-upload-uuid', status.id)
    .send();
}

function sendBlobCreated(reply: FastifyReply, name: string, digest: Digest): FastifyReply {
  setContentHeaders(reply, digest);
  return reply.code(201).header('location', `/v2/${name}/blobs/${digest}`).send();
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
