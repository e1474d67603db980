// The v1 content service: the local v1 registry first, the source on a miss — layers through verified single-flight
// fills, json/ancestry/repository json cached for good, tags and image lists for a TTL (stale on failure).

import { setMaxListeners } from 'node:events';
import type { Readable } from 'node:stream';
import type { MetadataStore } from '../meta/metadata-store.js';
import { abortFills, BlobFill, type ContentCheck, type FillSource, type FillState } from '../mirror/blob-fill.js';
import { SingleFlight } from '../flight/single-flight.js';
import type { ClusterFills } from '../mirror/mirror.js';
import type { BufferBudget } from '../memory/buffer-budget.js';
import type { Logger } from '../mirror/mirror.js';
import { parseRangeSpec, resolveRange, unsatisfiedRange } from '../oci/range.js';
import type { V1RepositoryName } from '../store/layout.js';
import type { ByteRange, ObjectWriter } from '../store/object-store.js';
import { contentLength, headerValue, type UpstreamResponse } from '../upstream/fetcher.js';
import type { CacheOutcome, Metrics } from '../telemetry/metrics.js';
import { isSourceOutage, layerTooLarge, V1Error, type V1ErrorCodeName } from './errors.js';
import {
  DEFAULT_REPOSITORY_JSON,
  isImageId,
  mergeSearchResults,
  parseAncestry,
  parseChecksumHeader,
  parseIndexImages,
  parseImageJson,
  parseJson,
  parseSearchAnswer,
  parseTagList,
  repositoryPath,
  verifiableChecksums,
  type SearchAnswer,
} from './grammar.js';
import { layerCheck } from './layer-check.js';
import { V1Registry, type ImageState } from './registry.js';
import { SOURCE_NAME, type SourceRequest, type V1SourceClient } from './source-client.js';

/** Image json, ancestry, repository json, tag lists, image lists and search answers are small. */
const MAX_DOCUMENT_BYTES = 8 * 1024 * 1024;

/** What a request tells the mirror about its client, for the source: never credentials. */
export interface SourceContext {
  /** The repository the client's (mirror-issued) token names: it picks the source token for image requests. */
  repository?: string;
  /** Allow-listed client headers (see forwardedHeaders). */
  headers?: Record<string, string>;
}

export interface ImageJsonAnswer {
  bytes: Buffer;
  /** X-Docker-Size: the layer's size, when known. */
  size: number | undefined;
  checksums: string[];
  cache: CacheOutcome;
}

export interface LayerAnswer {
  /** Undefined only while a source that announced no size is being streamed. */
  size: number | undefined;
  /** Set on a 206. */
  range?: ByteRange;
  body: Readable | undefined;
  cache: CacheOutcome;
}

export interface Answer<T> {
  value: T;
  cache: CacheOutcome;
}

export interface V1MirrorOptions {
  tagsCacheTtlMs: number;
  fillTimeoutMs: number;
  /**
   * Refuse every write (push, tag, delete): this instance mirrors (a v1 source, or any v2 upstream), and what
   * it mirrors must not be shadowed or poisoned by a client.
   */
  readOnly: boolean;
  /** The largest layer a push may send, in bytes. */
  maxLayerBytes: number;
  /** The process's send buffers, which layer fills and their readers draw from. */
  budget: BufferBudget;
  /**
   * Several nodes on one database and bucket (src/cluster/): one node fills a layer for all; the others wait for its
   * commit (v1 layers are not streamed between nodes) and read the layer from the bucket.
   */
  cluster?: Pick<ClusterFills, 'askAlone'>;
}

export class V1Mirror {
  /** Layer fills in progress, by image id: the single flight. */
  private readonly fills = new SingleFlight<string, BlobFill>();
  /** Document fetches in progress, by cache key: concurrent misses share one source request. */
  private readonly flights = new SingleFlight<string, unknown>();
  private readonly shutdown = new AbortController();

  constructor(
    private readonly local: V1Registry,
    private readonly source: V1SourceClient | undefined,
    private readonly meta: MetadataStore,
    private readonly metrics: Metrics,
    private readonly options: V1MirrorOptions,
    private readonly log: Logger,
    private readonly now: () => number = Date.now,
  ) {
    setMaxListeners(0, this.shutdown.signal);
  }

  get mirroring(): boolean {
    return this.source !== undefined;
  }

  // ---- pushes, tags and deletes: a plain registry's (refused when this instance mirrors) ----

  /** The first step of an image's push; `pushedFor` (with auth) records the repository whose push it is. */
  async putImageJson(id: string, body: Buffer, pushedFor?: V1RepositoryName): Promise<void> {
    this.requireWritable();
    await this.local.putImageJson(id, body);
    if (pushedFor !== undefined) await this.meta.putDocument(pushedForKey(id), Buffer.from(repositoryPath(pushedFor)), this.now());
  }

  /** The repository (`namespace/name`) an image was pushed for, when a push under auth recorded it. */
  async pushedFor(id: string): Promise<string | undefined> {
    return (await this.meta.getDocument(pushedForKey(id)))?.body.toString('utf8');
  }

  /** Whether the image is here: absent, being pushed, or complete. */
  imageState(id: string): Promise<ImageState> {
    return this.local.imageState(id);
  }

  /** A layer push; more than maxLayerBytes (announced or sent) is refused and nothing is kept. */
  async putImageLayer(id: string, body: AsyncIterable<Uint8Array>, announcedBytes: number | undefined): Promise<void> {
    this.requireWritable();
    if (announcedBytes !== undefined && announcedBytes > this.options.maxLayerBytes) throw layerTooLarge(this.options.maxLayerBytes);
    await this.local.putImageLayer(id, body, this.options.maxLayerBytes);
  }

  async putImageChecksum(id: string, header: string | undefined): Promise<void> {
    this.requireWritable();
    await this.local.putImageChecksum(id, header);
  }

  async putTag(name: V1RepositoryName, tag: string, body: Buffer, userAgent: string): Promise<void> {
    this.requireWritable();
    await this.local.putTag(name, tag, body, userAgent);
  }

  async deleteTag(name: V1RepositoryName, tag: string): Promise<void> {
    this.requireWritable();
    await this.local.deleteTag(name, tag);
  }

  async deleteRepository(name: V1RepositoryName): Promise<void> {
    this.requireWritable();
    await this.local.deleteRepository(name);
  }

  async setAccess(name: V1RepositoryName, body: Buffer): Promise<void> {
    this.requireWritable();
    await this.local.setAccess(name, body);
  }

  /** The index's PUT of a repository's image list (a push); an empty body is a no-op as in docker-registry. */
  async putIndexImages(name: V1RepositoryName, body: Buffer): Promise<void> {
    this.requireWritable();
    await this.local.putIndexImages(name, body);
  }

  /** The index's DELETE of a repository's image list: docker-registry kept the list until the repository was deleted. */
  deleteIndexImages(): void {
    this.requireWritable();
  }

  isPrivate(name: V1RepositoryName): Promise<boolean> {
    return this.local.isPrivate(name);
  }

  tagJson(name: V1RepositoryName, tag: string): Promise<Buffer | undefined> {
    return this.local.tagJson(name, tag);
  }

  /** The storage key of a layer that is here (for a web server in front to send); undefined when it is not. */
  async storedLayerKey(id: string): Promise<string | undefined> {
    return (await this.local.layerSize(id)) === undefined ? undefined : this.local.layerKey(id);
  }

  private requireWritable(): void {
    if (this.options.readOnly) throw new V1Error('READ_ONLY');
  }

  // ---- images ----

  async imageJson(id: string, context: SourceContext): Promise<ImageJsonAnswer> {
    const stored = await this.local.imageJson(id);
    if (stored !== undefined) {
      const size = stored.layerSize ?? (await this.announcedSize(id));
      return { bytes: stored.bytes, size, checksums: stored.checksums, cache: 'hit' };
    }
    const source = this.requireSource('IMAGE_NOT_FOUND');
    return this.flight(`json:${id}`, async () => ({ ...(await this.fetchImageJson(source, id, context)), cache: 'miss' as const }));
  }

  async ancestry(id: string, context: SourceContext): Promise<Answer<Buffer>> {
    const stored = await this.local.ancestry(id);
    if (stored !== undefined) return { value: stored, cache: 'hit' };
    const source = this.requireSource('IMAGE_NOT_FOUND');
    return this.flight(`ancestry:${id}`, async () => {
      const bytes = await this.fetchDocument(source, { target: 'registry', path: `/v1/images/${id}/ancestry`, kind: 'v1-image', ...context }, 'IMAGE_NOT_FOUND');
      if (parseAncestry(bytes, id) === undefined) throw invalidFromSource('ancestry');
      await this.local.storeAncestry(id, bytes);
      return { value: bytes, cache: 'miss' as const };
    });
  }

  /**
   * The repositories here (`namespace/name`) that hold an image: those whose tags reach it through its ancestry, and
   * the one it was pushed for (its push is not tagged yet, or its tag moved on).
   */
  async imageHolders(id: string): Promise<string[]> {
    const holders = await this.local.imageHolders(id);
    const pushedFor = await this.pushedFor(id);
    return pushedFor === undefined || holders.includes(pushedFor) ? holders : [...holders, pushedFor];
  }

  /** Whether a repository holds an image: here (see imageHolders), or, mirroring, the source's tags of it reach the image. */
  async holdsImage(name: V1RepositoryName, id: string, context: SourceContext): Promise<boolean> {
    if ((await this.imageHolders(id)).includes(repositoryPath(name))) return true;
    if (this.source === undefined) return false;
    // What is not there, or not complete, reaches nothing; a source that fails is the request's failure.
    const found = <T>(error: unknown, absent: T): T => {
      if (error instanceof V1Error && error.status < 500) return absent;
      throw error;
    };
    const tags = await this.tags(name, context).then(
      (answer) => answer.value,
      (error: unknown) => found(error, {}),
    );
    const tagged = [...new Set(Object.values(tags))].filter(isImageId);
    if (tagged.includes(id)) return true;
    for (const image of tagged) {
      const ancestry = await this.ancestry(image, context).then(
        (answer) => parseAncestry(answer.value, image),
        (error: unknown) => found(error, undefined),
      );
      if (ancestry?.includes(id) === true) return true;
    }
    return false;
  }

  /** Whether the image is here, complete: only then is a conditional GET answered 304. */
  async hasImage(id: string): Promise<boolean> {
    return (await this.local.imageState(id)) === 'complete';
  }

  /** waited: this request already waited once for another node's fill of the layer (a cluster's). */
  async layer(id: string, rangeHeader: string | undefined, context: SourceContext, waited = false): Promise<LayerAnswer> {
    const size = await this.local.layerSize(id);
    if (size !== undefined) return this.storedLayer(id, size, rangeHeader);
    const source = this.requireSource('IMAGE_NOT_FOUND');
    const inProgress = this.fills.get(id);
    const fill = await (inProgress ?? this.coldLayer(source, id, context));
    if (fill === undefined) {
      // Another node of the cluster filled it while this request waited: in the store now, or its fill failed
      // (asked again); waited once already and that node still fills: retry later.
      if (waited && (await this.local.layerSize(id)) === undefined) throw new V1Error('SOURCE_UNAVAILABLE', { message: 'another node of the cluster is filling this layer; retry' });
      return this.layer(id, rangeHeader, context, true);
    }
    // A fill joined (here, or after a wait for the cluster) may have committed meanwhile: its spool is then no longer ours to read.
    if (fill.status === 'committed') return this.layer(id, rangeHeader, context, waited);
    const cache = inProgress === undefined ? 'miss' : 'fill';
    // A source that announced no size: a whole layer streams chunked, a range waits for the verified layer.
    if (parseRangeSpec(rangeHeader) === undefined) return { size: fill.size, body: fill.createReader(), cache };
    if (fill.size === undefined) return this.afterFill(id, fill, rangeHeader);
    const range = resolveRange(rangeHeader, fill.size);
    if (range.kind === 'unsatisfiable') throw unsatisfiable(fill.size);
    if (range.kind === 'none') return { size: fill.size, body: fill.createReader(), cache };
    return { size: fill.size, range: { start: range.start, end: range.end }, body: fill.createReader(range.start, range.end), cache };
  }

  /** Stops (at shutdown): fills in progress are aborted, nothing partial is committed. */
  async close(reason: Error): Promise<void> {
    this.shutdown.abort(reason);
    await abortFills(this.fills.running(), reason);
    await this.source?.close();
  }

  private async storedLayer(id: string, size: number, rangeHeader: string | undefined): Promise<LayerAnswer> {
    const range = resolveRange(rangeHeader, size);
    if (range.kind === 'unsatisfiable') throw unsatisfiable(size);
    const byteRange = range.kind === 'range' ? { start: range.start, end: range.end } : undefined;
    // A 0-byte layer is served (docker-registry answered 416).
    const body = size === 0 ? undefined : await this.local.openLayer(id, byteRange);
    if (size !== 0 && body === undefined) throw new V1Error('IMAGE_NOT_FOUND');
    return { size, ...(byteRange === undefined ? {} : { range: byteRange }), body, cache: 'hit' };
  }

  /** A range of a layer whose source announced no size: answered from the verified layer. */
  private async afterFill(id: string, fill: BlobFill, rangeHeader: string | undefined): Promise<LayerAnswer> {
    if ((await fill.done) !== 'committed') throw new V1Error('SOURCE_UNAVAILABLE', { message: 'source registry sent an unusable layer' });
    const size = fill.size ?? 0;
    return { ...(await this.storedLayer(id, size, rangeHeader)), cache: 'miss' };
  }

  /**
   * A layer neither stored nor being filled here: filled from the source, in a cluster by one node for all (it holds
   * the question `v1-layer:<id>` until the fill settles). undefined: another node filled it while this one waited.
   */
  private coldLayer(source: V1SourceClient, id: string, context: SourceContext): Promise<BlobFill | undefined> {
    const cluster = this.options.cluster;
    if (cluster === undefined) return this.startFill(source, id, context);
    return new Promise((resolve, reject) => {
      let started = false;
      cluster
        .askAlone(`v1-layer:${id}`, async () => {
          const fill = await this.startFill(source, id, context);
          started = true;
          resolve(fill);
          await fill.done;
        })
        .then(
          (asked) => {
            if (asked === undefined) resolve(undefined);
          },
          (error: unknown) => {
            if (!started) reject(error instanceof Error ? error : new Error(String(error)));
          },
        );
    });
  }

  private startFill(source: V1SourceClient, id: string, context: SourceContext): Promise<BlobFill> {
    const start = async (): Promise<BlobFill> => {
      // The json first: the layer is verified against the checksum and size the source sent with it.
      const json = await this.imageJson(id, context);
      const promise = { json: json.bytes, size: json.size, checksums: json.checksums };
      const spool = await this.local.createLayerWriter(id);
      try {
        const response = await source.send({ target: 'registry', path: `/v1/images/${id}/layer`, kind: 'v1-layer', ...context, signal: this.shutdown.signal });
        if (response.status !== 200) throw await this.sourceError(source, response, 'IMAGE_NOT_FOUND');
        const length = contentLength(response.headers);
        if (length === undefined && promise.size === undefined && verifiableChecksums(promise.checksums).length === 0) {
          // Nothing to check the bytes against: a body cut short would be committed as the layer.
          response.body.destroy();
          throw new V1Error('SOURCE_UNAVAILABLE', { message: 'source registry sent a layer with no size and no payload checksum: it cannot be verified' });
        }
        if (length !== undefined && promise.size !== undefined && length !== promise.size) {
          response.body.destroy();
          throw new V1Error('SOURCE_UNAVAILABLE', { message: `source registry sent a layer of ${length} bytes, not the ${promise.size} it announced` });
        }
        return this.newFill(source, id, spool, { body: response.body, size: length ?? promise.size }, layerCheck(promise));
      } catch (error) {
        await spool.abort();
        throw error;
      }
    };
    return this.fills.run(id, start, (fill) => fill.done);
  }

  /** A fill, registered under the image id (by startFill) until it settles. */
  private newFill(source: V1SourceClient, id: string, spool: ObjectWriter, body: FillSource, check: ContentCheck): BlobFill {
    this.metrics.fillsInProgress.inc();
    return new BlobFill(
      check,
      spool,
      body,
      {
        commit: async (file) => {
          await this.local.commitLayer(id, file);
          // The layer's own size answers X-Docker-Size from now on.
          await this.meta.deleteDocument(sizeKey(id));
        },
        onBytes: (count) => source.countBytes('v1-layer', count),
        onSettled: (state: FillState, error) => {
          this.metrics.fillsInProgress.dec();
          this.metrics.fills.inc({ upstream: SOURCE_NAME, outcome: state });
          if (state === 'failed') this.log.warn({ upstream: SOURCE_NAME, image: id, err: error?.message }, 'v1 layer fill failed');
        },
      },
      { timeoutMs: this.options.fillTimeoutMs, budget: this.options.budget },
    );
  }

  private async fetchImageJson(source: V1SourceClient, id: string, context: SourceContext): Promise<Omit<ImageJsonAnswer, 'cache'>> {
    const response = await source.send({ target: 'registry', path: `/v1/images/${id}/json`, kind: 'v1-image', ...context, document: true });
    if (response.status !== 200) throw await this.sourceError(source, response, 'IMAGE_NOT_FOUND');
    const bytes = await source.readDocument(response, 'v1-image', MAX_DOCUMENT_BYTES);
    try {
      parseImageJson(bytes, id);
    } catch {
      throw invalidFromSource('image json');
    }
    const sizeText = headerValue(response.headers['x-docker-size']);
    const size = sizeText !== undefined && /^\d{1,15}$/.test(sizeText) ? Number(sizeText) : undefined;
    // docker-registry 0.9 sent X-Docker-Payload-Checksum; the documented name is X-Docker-Checksum-Payload.
    const checksums = parseChecksumHeader(response.headers['x-docker-checksum-payload'] ?? response.headers['x-docker-payload-checksum']);
    if (size !== undefined) await this.meta.putDocument(sizeKey(id), Buffer.from(String(size)), this.now());
    await this.local.storeImageJson(id, bytes, checksums);
    return { bytes, size, checksums };
  }

  /** The layer size the source announced with the image json, kept until the layer is here. */
  private async announcedSize(id: string): Promise<number | undefined> {
    const document = await this.meta.getDocument(sizeKey(id));
    const text = document?.body.toString('utf8');
    return text !== undefined && /^\d{1,15}$/.test(text) ? Number(text) : undefined;
  }

  // ---- repositories ----

  async tags(name: V1RepositoryName, context: SourceContext): Promise<Answer<Record<string, string>>> {
    const stored = await this.local.tags(name);
    if (stored !== undefined) return { value: stored, cache: 'hit' };
    this.requireSource('REPOSITORY_NOT_FOUND');
    const { body, cache } = await this.mirroredTags(name, context);
    return { value: parseTagList(body) ?? {}, cache };
  }

  /** A tag: local, else from the source's tag list of the repository (cached for the TTL). */
  async tag(name: V1RepositoryName, tag: string, context: SourceContext): Promise<Answer<string>> {
    const stored = await this.local.tag(name, tag);
    if (stored !== undefined) return { value: stored, cache: 'hit' };
    this.requireSource('TAG_NOT_FOUND');
    const { body, cache } = await this.mirroredTags(name, context).catch((error: unknown) => {
      throw error instanceof V1Error && error.code === 'REPOSITORY_NOT_FOUND' ? new V1Error('TAG_NOT_FOUND') : error;
    });
    const tags = parseTagList(body);
    // Own properties only: a tag named `constructor` must not find Object.prototype's.
    const id = tags !== undefined && Object.hasOwn(tags, tag) ? tags[tag] : undefined;
    if (id === undefined) throw new V1Error('TAG_NOT_FOUND');
    return { value: id, cache };
  }

  private mirroredTags(name: V1RepositoryName, context: SourceContext): Promise<{ body: Buffer; cache: CacheOutcome }> {
    const repository = repositoryPath(name);
    return this.cachedDocument(`v1/tags/${repository}`, async (source) => {
      const bytes = await this.fetchDocument(source, { target: 'registry', path: `/v1/repositories/${repository}/tags`, kind: 'v1-tags', ...context, repository }, 'REPOSITORY_NOT_FOUND');
      if (parseTagList(bytes) === undefined) throw invalidFromSource('tag list');
      return bytes;
    });
  }

  /** The repository json: local, else the source's (stored once fetched), else docker-registry's default. */
  async repositoryJson(name: V1RepositoryName, context: SourceContext): Promise<Answer<unknown>> {
    const stored = await this.local.repositoryJson(name);
    const parsed = stored === undefined ? undefined : parseJson(stored);
    if (parsed?.ok === true) return { value: parsed.value, cache: 'hit' };
    const source = this.source;
    if (source === undefined) return { value: DEFAULT_REPOSITORY_JSON, cache: 'none' };
    const repository = repositoryPath(name);
    return this.flight(`repository-json:${repository}`, async () => {
      try {
        const bytes = await this.fetchDocument(source, { target: 'registry', path: `/v1/repositories/${repository}/json`, kind: 'v1-tags', ...context, repository }, 'NOT_FOUND');
        const value = parseJson(bytes);
        if (!value.ok || typeof value.value !== 'object' || value.value === null) throw invalidFromSource('repository json');
        await this.local.storeRepositoryJson(name, bytes);
        return { value: value.value, cache: 'miss' as const };
      } catch (error) {
        if (error instanceof V1Error && error.code === 'NOT_FOUND') return { value: DEFAULT_REPOSITORY_JSON, cache: 'none' as const };
        throw error;
      }
    });
  }

  /** The index's image list of a repository: local (pushed here), else the source index's, cached for the TTL. */
  async indexImages(name: V1RepositoryName, context: SourceContext): Promise<Answer<Buffer>> {
    const stored = await this.local.indexImages(name);
    if (stored !== undefined) return { value: stored, cache: 'hit' };
    this.requireSource('INDEX_IMAGES_NOT_FOUND');
    const repository = repositoryPath(name);
    const { body, cache } = await this.cachedDocument(`v1/images/${repository}`, async (source) => {
      const bytes = await this.fetchDocument(source, { target: 'index', path: `/v1/repositories/${repository}/images`, kind: 'v1-index', ...context, repository }, 'INDEX_IMAGES_NOT_FOUND');
      if (parseIndexImages(bytes) === undefined) throw invalidFromSource('image list');
      return bytes;
    });
    return { value: body, cache };
  }

  /** Local repositories matching the term, merged with the source index's answer when mirroring. */
  async search(term: string, context: SourceContext): Promise<Answer<SearchAnswer>> {
    const local = await this.local.search(term);
    let results = local;
    let cache: CacheOutcome = 'hit';
    if (this.source !== undefined) {
      try {
        const bytes = await this.fetchDocument(this.source, { target: 'index', path: `/v1/search?q=${encodeURIComponent(term)}`, kind: 'v1-search', ...context }, 'NOT_FOUND');
        const found = parseSearchAnswer(bytes);
        if (found === undefined) throw invalidFromSource('search answer');
        results = mergeSearchResults(local, found);
        cache = 'miss';
      } catch (error) {
        // A source that is down, or has no search, leaves the local results as the answer; anything else is a fault.
        if (!isSourceOutage(error) && !(error instanceof V1Error && error.code === 'NOT_FOUND')) throw error;
        this.log.warn({ upstream: SOURCE_NAME, err: (error as Error).message }, 'v1 search: source not merged');
        cache = 'stale';
      }
    }
    return { value: { query: term, num_results: results.length, results }, cache };
  }

  // ---- shared ----

  private requireSource(notFound: V1ErrorCodeName): V1SourceClient {
    if (this.source === undefined) throw new V1Error(notFound);
    return this.source;
  }

  /** A document cached in the metadata store for the tags TTL; served stale when the source fails. */
  private async cachedDocument(key: string, fetch: (source: V1SourceClient) => Promise<Buffer>): Promise<{ body: Buffer; cache: CacheOutcome }> {
    const source = this.requireSource('NOT_FOUND');
    const cached = await this.meta.getDocument(key);
    if (cached !== undefined && this.now() - cached.fetchedAt < this.options.tagsCacheTtlMs) return { body: Buffer.from(cached.body), cache: 'hit' };
    return this.flight(key, async () => {
      try {
        const body = await fetch(source);
        await this.meta.putDocument(key, body, this.now());
        return { body, cache: 'miss' as const };
      } catch (error) {
        if (cached !== undefined && isSourceOutage(error)) {
          this.log.warn({ upstream: SOURCE_NAME, document: key, err: (error as Error).message }, 'v1: serving stale document');
          return { body: Buffer.from(cached.body), cache: 'stale' as const };
        }
        if (error instanceof V1Error && error.status === 404) await this.meta.deleteDocument(key);
        throw error;
      }
    });
  }

  /** GETs a small document; a 404 becomes `notFound`, any other failure a 502. */
  private async fetchDocument(source: V1SourceClient, request: SourceRequest, notFound: V1ErrorCodeName): Promise<Buffer> {
    const response = await source.send({ ...request, document: true });
    if (response.status !== 200) throw await this.sourceError(source, response, notFound);
    return source.readDocument(response, request.kind, MAX_DOCUMENT_BYTES);
  }

  private async sourceError(source: V1SourceClient, response: UpstreamResponse, notFound: V1ErrorCodeName): Promise<V1Error> {
    await response.body.dump().catch(() => undefined);
    return response.status === 404 ? new V1Error(notFound) : source.errorFor(response);
  }

  /** Concurrent misses of one document share one source request. */
  private flight<T>(key: string, work: () => Promise<T>): Promise<T> {
    return this.flights.run(key, work) as Promise<T>;
  }
}

function sizeKey(id: string): string {
  return `v1/image-size/${id}`;
}

function pushedForKey(id: string): string {
  return `v1/pushed-for/${id}`;
}

function invalidFromSource(what: string): V1Error {
  return new V1Error('SOURCE_UNAVAILABLE', { message: `source registry sent an invalid ${what}` });
}

function unsatisfiable(size: number): V1Error {
  return new V1Error('RANGE_NOT_SATISFIABLE', { headers: { 'content-range': unsatisfiedRange(size) } });
}

