// The content service the HTTP layer calls: the local registry first, and on a miss the request's
// upstream — blobs through single-flight fills, manifests by digest kept for good, manifests by tag
// fresh for a TTL, revalidated with HEAD, and served stale when the upstream fails.

import { setMaxListeners } from 'node:events';
import type { Readable } from 'node:stream';
import { digestOf, isDigest, type Digest } from '../oci/digest.js';
import {
  acceptedMediaTypes,
  type AcceptedTypes,
  accepts,
  defaultPlatformChild,
  isIndexMediaType,
  MAX_MANIFEST_BYTES,
  parseManifest,
  UPSTREAM_MANIFEST_ACCEPT,
} from '../oci/manifest.js';
import { nextLinkTarget } from '../oci/link-header.js';
import { parseRangeSpec, resolveRange, unsatisfiedRange } from '../oci/range.js';
import type { Page, RepositoryRef } from '../meta/metadata-store.js';
import { RegistryError } from '../registry/errors.js';
import type { LocalRegistry, StoredManifest } from '../registry/local-registry.js';
import type { BlobAnswer, BlobDelivery, ManifestAnswer, Reference, ReferrersAnswer, TagList } from '../registry/content-service.js';
import { isStorageFull } from '../store/storage-error.js';
import type { CacheOutcome, Metrics } from '../telemetry/metrics.js';
import { SingleFlight } from '../flight/single-flight.js';
import type { BufferBudget } from '../memory/buffer-budget.js';
import { contentLength, headerValue, type UpstreamResponse } from '../upstream/fetcher.js';
import { abortFills, BlobFill, digestCheck } from './blob-fill.js';
import { freshnessOf, isUpstreamOutage } from './freshness.js';
import { NotFoundCache, type SharedNotFound } from './not-found-cache.js';
import { MirroredReferrers } from './referrers.js';
import type { UpstreamRequest } from './upstream-client.js';
import type { Target, Upstream } from './upstream-router.js';

export interface MirrorOptions {
  /** The longest a whole blob fill may take. */
  fillTimeoutMs: number;
  /** The process's send buffers, which fills and their readers draw from. */
  budget: BufferBudget;
  /** How long an upstream's "not found" is remembered (0: not at all). */
  notFoundTtlMs: number;
  /** Told when a fill failed for want of space (eviction then runs at once). */
  onStorageFull?: () => void;
  /** Tags served stale however old when their upstream fails (pinned images'); others up to maxStaleness. */
  keepsStale?: (repository: RepositoryRef, tag: string) => boolean;
  /**
   * Serve a cached blob or manifest by digest only under a repository that holds it (with auth: content fetched
   * for one repository is not readable under another name). A repository not yet known to hold it is asked of
   * its upstream once (a HEAD), then linked.
   */
  confirmHolding?: boolean;
  /**
   * Several nodes on one database and bucket (src/cluster/): one upstream fill per blob, and one upstream question
   * per tag or manifest, for them all; "not found" answers shared.
   */
  cluster?: ClusterFills & SharedNotFound;
}

/** The cluster's part in blob fills and upstream questions (src/cluster/cluster.ts). */
export interface ClusterFills {
  /** Before this node fills digest from its upstream; throws an error isHeldElsewhere() knows when another node fills it. */
  lease(digest: Digest): Promise<{ release(): void }>;
  isHeldElsewhere(error: unknown): boolean;
  /**
   * The other node's fill, streamed from it from byte 0 as it arrives there (not verified: the caller verifies);
   * undefined when that node cannot be reached, or the blob is committed.
   */
  peerFill(digest: Digest): Promise<{ size: number | undefined; body: Readable } | undefined>;
  /** Waits until the blob is committed or the other node gave its lease up (then: look again); throws when the wait is over. */
  waitForFill(digest: Digest): Promise<void>;
  /**
   * Runs work as the only node asking the upstream this question; undefined when another node asked it meanwhile
   * (this one waited for it to end: look again).
   */
  askAlone<T>(question: string, work: () => Promise<T>): Promise<{ value: T } | undefined>;
}

export interface Logger {
  warn(fields: object, message: string): void;
  info(fields: object, message: string): void;
}

export class Mirror {
  /** Blob fills in progress, by digest: the single flight. A fill stays registered until it settles. */
  private readonly fills = new SingleFlight<Digest, BlobFill>();
  /** Manifest fetches and tag revalidations in progress, by registry/name:reference. */
  private readonly manifestFlights = new SingleFlight<string, ManifestAnswer>();
  /** Upstream confirmations that a repository holds a digest, in progress, by registry/name@kind:digest. */
  private readonly holdingFlights = new SingleFlight<string, void>();
  /** Aborted at shutdown: a fill still waiting for upstream headers must not hold the stop until they time out. */
  private readonly shutdown = new AbortController();
  private readonly notFound: NotFoundCache;
  private readonly referrerLists: MirroredReferrers;

  constructor(
    private readonly local: LocalRegistry,
    private readonly metrics: Metrics,
    private readonly options: MirrorOptions,
    private readonly log: Logger,
    private readonly now: () => number = Date.now,
  ) {
    // Every fill's upstream request listens on this one signal while it runs.
    setMaxListeners(0, this.shutdown.signal);
    this.notFound = new NotFoundCache(options.notFoundTtlMs, now, options.cluster);
    this.referrerLists = new MirroredReferrers({
      manifestByTag: (target, tag) => this.manifestByTag(target, tag),
      isTagCached: async (target, tag) => (await local.getTag(repositoryOf(target), tag)) !== undefined,
      documents: local.meta,
      log,
      now,
      askOnce: (question, ask, afterOther) => this.askOnce(question, ask, afterOther),
    });
  }

  // ---- blobs ----

  async blob(target: Target, digest: Digest, method: 'GET' | 'HEAD', rangeHeader: string | undefined, delivery: BlobDelivery = 'stream'): Promise<BlobAnswer> {
    const cachedSize = await this.local.statBlob(digest);
    if (cachedSize !== undefined) {
      await this.confirmHeld(target, digest, 'blob');
      const answer = await this.local.serveBlob(digest, cachedSize, method, rangeHeader, delivery);
      if (answer !== undefined) return answer;
    }
    const upstream = target.upstream;
    if (upstream === undefined) throw new RegistryError('BLOB_UNKNOWN', { detail: { digest } });
    const inProgress = this.fills.get(digest);
    if (inProgress === undefined) return this.notFound.guard(`${target.registry}/${target.name}@blob:${digest}`, () => this.coldBlob(upstream, target, digest, method, rangeHeader));
    // A fill another repository started: this one must hold the blob too.
    await this.confirmHeld(target, digest, 'blob');
    if (method === 'HEAD') return this.headColdBlob(upstream, target, digest, inProgress);
    // The fill may have settled while we waited for it: then its spool is no longer ours to read.
    let fill: BlobFill;
    try {
      fill = await inProgress;
    } catch (error) {
      if (this.options.cluster?.isHeldElsewhere(error) !== true) throw error;
      return this.followElsewhere(target, digest, method, rangeHeader);
    }
    if (fill.status === 'committed') return this.blob(target, digest, method, rangeHeader, delivery);
    if (fill.status === 'failed') throw upstream.client.unreachable(fill.error);
    if (parseRangeSpec(rangeHeader) !== undefined) return this.rangeFromFill(digest, fill, rangeHeader, 'fill');
    return { digest, size: fill.size, body: fill.createReader(), cache: 'fill' };
  }

  /** A blob neither cached nor being filled: asked of the upstream. */
  private async coldBlob(upstream: Upstream, target: Target, digest: Digest, method: 'GET' | 'HEAD', rangeHeader: string | undefined): Promise<BlobAnswer> {
    if (method === 'HEAD') return this.headColdBlob(upstream, target, digest, undefined);
    let fill: BlobFill;
    try {
      fill = await this.startFill(upstream, target, digest);
    } catch (error) {
      if (this.options.cluster?.isHeldElsewhere(error) !== true) throw error;
      return this.followElsewhere(target, digest, method, rangeHeader);
    }
    // In a cluster this request may have waited (for the shared "not found" answers) after it found no fill: it may
    // have joined one that started and settled meanwhile, whose spool is no longer to be read.
    if (fill.status === 'committed') return this.blob(target, digest, method, rangeHeader);
    if (fill.status === 'failed') throw upstream.client.unreachable(fill.error);
    // A Range is served from the fill, not asked of the upstream: bytes passed through could not be verified,
    // and a range of a fill gets its last byte only once the whole blob is.
    if (parseRangeSpec(rangeHeader) !== undefined) return this.rangeFromFill(digest, fill, rangeHeader, 'miss');
    return { digest, size: fill.size, body: fill.createReader(), cache: 'miss' };
  }

  /** Another node fills the blob and it could not be relayed here: once it committed or gave up its lease, asked again. */
  private async followElsewhere(target: Target, digest: Digest, method: 'GET' | 'HEAD', rangeHeader: string | undefined): Promise<BlobAnswer> {
    // The other node's fill may be for another repository: this one must hold the blob too.
    await this.confirmHeld(target, digest, 'blob');
    try {
      await this.options.cluster?.waitForFill(digest);
    } catch (error) {
      this.metrics.clusterFollows.inc({ outcome: 'failed' });
      throw error;
    }
    this.metrics.clusterFollows.inc({ outcome: 'waited' });
    return this.blob(target, digest, method, rangeHeader);
  }

  /**
   * Another node fills the blob: its fill, streamed from it, becomes a fill of this node's that is never committed
   * (that node commits), which this node's clients follow as they follow one of its own: one stream per node and
   * blob, verified here, every reader's last byte held until it is. Throws heldElsewhere when that node cannot be
   * reached (the requests then wait for its commit).
   */
  private async relayFill(cluster: ClusterFills, target: Target, digest: Digest, heldElsewhere: unknown): Promise<BlobFill> {
    // The other node's fill may be for another repository: this one must hold the blob too.
    await this.confirmHeld(target, digest, 'blob');
    const peer = await cluster.peerFill(digest);
    if (peer === undefined) throw heldElsewhere;
    let spool;
    try {
      // A temporary of this node's, never committed: no key, nothing sent to the store.
      spool = await this.local.createBlobWriter();
    } catch (error) {
      peer.body.destroy();
      throw error;
    }
    this.metrics.clusterFollows.inc({ outcome: 'streamed' });
    return new BlobFill(
      digestCheck(digest),
      spool,
      peer,
      {
        // Verified (its readers have had every byte): kept as this node's fill until the other node has committed
        // (or given its lease up), so that the requests meanwhile join it instead of relaying the blob again.
        commit: () => cluster.waitForFill(digest).catch(() => undefined),
        onBytes: () => undefined,
        onSettled: (state, error) => {
          if (state !== 'failed') return;
          this.metrics.clusterFollows.inc({ outcome: 'failed' });
          this.log.warn({ digest, err: error?.message }, "cluster: another node's fill, relayed here, failed");
        },
        discardSpool: true,
      },
      { timeoutMs: this.options.fillTimeoutMs, budget: this.options.budget },
    );
  }

  /** Aborts every fill in progress (shutdown): nothing partial is committed. */
  async abortFills(reason: Error): Promise<void> {
    this.shutdown.abort(reason);
    await abortFills(this.fills.running(), reason);
  }

  private async headColdBlob(upstream: Upstream, target: Target, digest: Digest, inProgress: Promise<BlobFill> | undefined): Promise<BlobAnswer> {
    if (inProgress !== undefined) {
      // Filled by another node: the upstream's HEAD answers (it costs no blob fetch).
      const fill = await inProgress.catch((error: unknown) => {
        if (this.options.cluster?.isHeldElsewhere(error) === true) return undefined;
        throw error;
      });
      if (fill?.size !== undefined) return { digest, size: fill.size, cache: 'fill' };
    }
    const response = await upstream.client.send(blobRequest(target, digest, 'HEAD'));
    await response.body.dump();
    if (response.status !== 200) throw upstream.client.errorFor(response, 'BLOB_UNKNOWN');
    return { digest, size: contentLength(response.headers), cache: 'miss' };
  }

  private rangeFromFill(digest: Digest, fill: BlobFill, rangeHeader: string | undefined, cache: CacheOutcome): BlobAnswer {
    const size = fill.size;
    if (size === undefined) throw new RegistryError('UPSTREAM_UNAVAILABLE', { message: 'blob size not known yet; retry' });
    const range = resolveRange(rangeHeader, size);
    if (range.kind === 'unsatisfiable') {
      throw new RegistryError('RANGE_INVALID', { headers: { 'content-range': unsatisfiedRange(size) } });
    }
    if (range.kind === 'none') return { digest, size, body: fill.createReader(), cache };
    return { digest, size, range: { start: range.start, end: range.end }, body: fill.createReader(range.start, range.end), cache };
  }

  private startFill(upstream: Upstream, target: Target, digest: Digest): Promise<BlobFill> {
    return this.runFill(digest, async () => {
      // In a cluster, no node fills without the digest's lease, held until the fill settles; another node's fill is
      // relayed here instead (or, when it cannot be, waited for).
      const cluster = this.options.cluster;
      let lease;
      try {
        lease = await cluster?.lease(digest);
      } catch (error) {
        if (cluster?.isHeldElsewhere(error) !== true) throw error;
        return this.relayFill(cluster, target, digest, error);
      }
      try {
        const response = await upstream.client.send({ ...blobRequest(target, digest, 'GET'), signal: this.shutdown.signal });
        if (response.status !== 200) {
          await response.body.dump();
          throw upstream.client.errorFor(response, 'BLOB_UNKNOWN');
        }
        const fill = await this.adoptFill(upstream, target, digest, response);
        void fill.done.then(() => lease?.release());
        return fill;
      } catch (error) {
        lease?.release();
        throw error;
      }
    });
  }

  /** A reader of this node's fill of digest from byte 0, while it runs (another node's client follows it). */
  async followLocalFill(digest: Digest): Promise<{ size: number | undefined; body: Readable } | undefined> {
    const fill = await this.fills.get(digest)?.catch(() => undefined);
    if (fill === undefined || fill.status !== 'filling') return undefined;
    return { size: fill.size, body: fill.createReader() };
  }

  /** A fill registered under its digest from the upstream request until the fill settles. */
  private runFill(digest: Digest, start: () => Promise<BlobFill>): Promise<BlobFill> {
    return this.fills.run(digest, start, (fill) => fill.done);
  }

  /** Turns an upstream 200 into a fill. */
  private async adoptFill(upstream: Upstream, target: Target, digest: Digest, response: UpstreamResponse): Promise<BlobFill> {
    const registry = upstream.settings.registry;
    let spool;
    try {
      spool = await this.local.createBlobWriter(digest);
    } catch (error) {
      response.body.destroy();
      throw error;
    }
    this.metrics.fillsInProgress.inc();
    return new BlobFill(
      digestCheck(digest),
      spool,
      { body: response.body, size: contentLength(response.headers) },
      {
        commit: (file, size) => this.local.commitBlob(file, digest, size, repositoryOf(target)),
        onBytes: (count) => upstream.client.countBytes('blob', count),
        onSettled: (state, error) => {
          this.metrics.fillsInProgress.dec();
          this.metrics.fills.inc({ upstream: registry, outcome: state });
          if (state === 'failed') this.log.warn({ upstream: registry, digest, err: error?.message }, 'blob fill failed');
          if (isStorageFull(error)) this.options.onStorageFull?.();
        },
      },
      { timeoutMs: this.options.fillTimeoutMs, budget: this.options.budget },
    );
  }

  // ---- manifests ----

  async manifest(target: Target, reference: Reference, accept: string | string[] | undefined): Promise<ManifestAnswer> {
    const answer = reference.kind === 'digest' ? await this.manifestByDigest(target, reference.digest) : await this.manifestByTag(target, reference.tag);
    return this.negotiate(target, answer, acceptedMediaTypes(accept));
  }

  /** Serves the stored type if the client takes it; for an index it cannot read, its linux/amd64 child. */
  private async negotiate(target: Target, answer: ManifestAnswer, accepted: AcceptedTypes | undefined): Promise<ManifestAnswer> {
    const { manifest } = answer;
    if (accepts(accepted, manifest.mediaType)) return answer;
    if (isIndexMediaType(manifest.mediaType)) {
      const parsed = parseManifest(manifest.bytes, manifest.mediaType);
      const child = parsed.ok ? defaultPlatformChild(parsed.children) : undefined;
      if (child !== undefined && accepts(accepted, child.mediaType)) {
        const childAnswer = await this.manifestByDigest(target, child.digest);
        if (accepts(accepted, childAnswer.manifest.mediaType)) return childAnswer;
      }
    }
    throw new RegistryError('MANIFEST_UNKNOWN', {
      message: `manifest is ${manifest.mediaType}, which the request's Accept header does not allow`,
      detail: { mediaType: manifest.mediaType },
    });
  }

  private async manifestByDigest(target: Target, digest: Digest): Promise<ManifestAnswer> {
    const stored = await this.local.getManifest(digest);
    if (stored !== undefined) {
      await this.confirmHeld(target, digest, 'manifest');
      return { manifest: stored, cache: 'hit' };
    }
    const upstream = target.upstream;
    if (upstream === undefined) throw new RegistryError('MANIFEST_UNKNOWN', { detail: { digest } });
    const key = `${target.registry}/${target.name}@${digest}`;
    const ask = (): Promise<ManifestAnswer> =>
      this.notFound.guard(key, async () => {
        const manifest = await this.fetchManifest(upstream, target, digest, digest);
        await this.local.addRepository(repositoryOf(target));
        return { manifest, cache: 'miss' as const };
      });
    return this.manifestFlights.run(key, () =>
      this.askOnce(key, ask, async () => {
        const fetchedElsewhere = await this.local.getManifest(digest);
        if (fetchedElsewhere === undefined) return ask();
        // Stored meanwhile, maybe for another repository: this one must hold it too, as for any stored manifest.
        await this.confirmHeld(target, digest, 'manifest');
        return { manifest: fetchedElsewhere, cache: 'hit' };
      }),
    );
  }

  private async manifestByTag(target: Target, tag: string): Promise<ManifestAnswer> {
    const repository = repositoryOf(target);
    const upstream = target.upstream;
    /** The manifest the tag names in the cache, and how fresh the tag is. */
    const look = async (): Promise<{ stored: StoredManifest | undefined; fresh: boolean; staleAllowed: boolean }> => {
      const record = await this.local.getTag(repository, tag);
      const stored = record && (await this.local.getManifest(record.digest));
      // No upstream for the name: the cache is all there is, and freshness does not apply.
      if (upstream === undefined) return { stored, fresh: true, staleAllowed: true };
      return { stored, ...freshnessOf(upstream.settings, record?.fetchedAt, this.now()) };
    };
    const cached = await look();
    if (upstream === undefined) {
      if (cached.stored === undefined) throw new RegistryError('MANIFEST_UNKNOWN', { detail: { tag } });
      return { manifest: cached.stored, cache: 'hit' };
    }
    if (cached.stored !== undefined && cached.fresh) return { manifest: cached.stored, cache: 'hit' };
    const key = `${target.registry}/${target.name}:${tag}`;
    const ask = (stored: StoredManifest | undefined, staleAllowed: boolean): Promise<ManifestAnswer> =>
      this.notFound.guard(key, async () => {
        try {
          return stored === undefined ? await this.fetchTag(upstream, target, tag) : await this.revalidateTag(upstream, target, tag, stored);
        } catch (error) {
          if (stored !== undefined && isUpstreamOutage(error) && (staleAllowed || this.options.keepsStale?.(repository, tag) === true)) {
            this.log.warn({ upstream: upstream.settings.registry, repository: target.name, tag, err: (error as Error).message }, 'serving stale tag');
            return { manifest: stored, cache: 'stale' as const };
          }
          if (error instanceof RegistryError && error.code === 'MANIFEST_UNKNOWN') await this.local.deleteTag(repository, tag);
          throw error;
        }
      });
    return this.manifestFlights.run(key, () =>
      this.askOnce(
        key,
        () => ask(cached.stored, cached.staleAllowed),
        async () => {
          // Another node fetched or revalidated the tag meanwhile: its answer is in the database (or it failed).
          const again = await look();
          if (again.stored !== undefined && again.fresh) return { manifest: again.stored, cache: 'hit' };
          return ask(again.stored, again.staleAllowed);
        },
      ),
    );
  }

  /**
   * Asks an upstream a question (a tag, a manifest by digest) as the only node of a cluster asking it; when another
   * node asked it meanwhile, this one waited for it, and afterOther looks again. Without a cluster: ask.
   */
  private async askOnce<T>(question: string, ask: () => Promise<T>, afterOther: () => Promise<T>): Promise<T> {
    const cluster = this.options.cluster;
    if (cluster === undefined) return ask();
    const asked = await cluster.askAlone(question, ask);
    return asked === undefined ? afterOther() : asked.value;
  }

  private async fetchTag(upstream: Upstream, target: Target, tag: string): Promise<ManifestAnswer> {
    const manifest = await this.fetchManifest(upstream, target, tag, undefined);
    await this.local.setTag(repositoryOf(target), tag, manifest.digest);
    return { manifest, cache: 'miss' };
  }

  /** A stale tag: HEAD costs Docker Hub no pull; GET only when the tag moved. */
  private async revalidateTag(upstream: Upstream, target: Target, tag: string, stored: StoredManifest): Promise<ManifestAnswer> {
    const response = await upstream.client.send(manifestRequest(target, tag, 'HEAD'));
    await response.body.dump();
    if (response.status !== 200) throw upstream.client.errorFor(response, 'MANIFEST_UNKNOWN');
    const current = headerValue(response.headers['docker-content-digest']);
    if (current === stored.digest) {
      await this.local.setTag(repositoryOf(target), tag, stored.digest);
      return { manifest: stored, cache: 'revalidated' };
    }
    if (current !== undefined && isDigest(current)) {
      const known = await this.local.getManifest(current);
      const manifest = known ?? (await this.fetchManifest(upstream, target, current, current));
      await this.local.setTag(repositoryOf(target), tag, manifest.digest);
      return { manifest, cache: known ? 'revalidated' : 'miss' };
    }
    return this.fetchTag(upstream, target, tag);
  }

  /** GETs a manifest, verifies its digest (against the one asked for, and the upstream's header), stores it. */
  private async fetchManifest(upstream: Upstream, target: Target, reference: string, expected: Digest | undefined): Promise<StoredManifest> {
    const client = upstream.client;
    const response = await client.send(manifestRequest(target, reference, 'GET'));
    if (response.status !== 200) {
      await response.body.dump();
      throw client.errorFor(response, 'MANIFEST_UNKNOWN');
    }
    const bytes = await client.readBody(response, 'manifest', MAX_MANIFEST_BYTES);
    const digest = digestOf(bytes);
    const announced = headerValue(response.headers['docker-content-digest']);
    if ((expected !== undefined && digest !== expected) || (announced !== undefined && announced !== digest)) {
      throw new RegistryError('UPSTREAM_UNAVAILABLE', { message: `upstream ${client.wireName} sent a manifest that does not match its digest` });
    }
    const parsed = parseManifest(bytes, headerValue(response.headers['content-type']));
    if (!parsed.ok) {
      throw new RegistryError('UPSTREAM_UNAVAILABLE', { message: `upstream ${client.wireName} sent an unusable manifest: ${parsed.reason}` });
    }
    const manifest = { digest, mediaType: parsed.mediaType, bytes };
    await this.local.putManifest(manifest, { references: parsed.references, holder: repositoryOf(target) });
    return manifest;
  }

  /** With confirmHolding: refuses content the target's repository is not known, nor confirmed by its upstream, to hold. */
  private async confirmHeld(target: Target, digest: Digest, kind: 'blob' | 'manifest'): Promise<void> {
    if (this.options.confirmHolding !== true) return;
    const repository = repositoryOf(target);
    if (await this.local.holdsContent(repository, digest)) return;
    const unknown = kind === 'blob' ? 'BLOB_UNKNOWN' : 'MANIFEST_UNKNOWN';
    const upstream = target.upstream;
    if (upstream === undefined) throw new RegistryError(unknown, { detail: { digest } });
    const key = `${target.registry}/${target.name}@${kind}:${digest}`;
    await this.holdingFlights.run(key, () =>
      this.notFound.guard(`${key}:held`, async () => {
        const response = await upstream.client.send(kind === 'blob' ? blobRequest(target, digest, 'HEAD') : manifestRequest(target, digest, 'HEAD'));
        await response.body.dump();
        if (response.status !== 200) throw upstream.client.errorFor(response, unknown);
        await this.local.linkContent(repository, digest);
      }),
    );
  }

  // ---- referrers ----

  /** The referrers of a manifest in a mirrored repository (this mirror keeps no repositories of its own yet). */
  async referrers(target: Target, subject: Digest): Promise<ReferrersAnswer> {
    const upstream = target.upstream;
    // 404, not 405: the spec's signal for clients to fall back to the referrers tag schema.
    if (upstream === undefined) throw new RegistryError('NOT_FOUND', { message: 'the referrers API is supported for mirrored repositories only' });
    return this.referrerLists.list(upstream, target, subject);
  }

  // ---- listings ----

  /**
   * A page of a repository's tags, paged here (`n`, `last`) whatever the upstream does: the upstream's whole list
   * (its own pages followed, up to TAG_LIST_PAGES of them) in lexical order; when the upstream fails, the tags
   * cached for the repository.
   */
  async tags(target: Target, clientName: string, page: Page): Promise<TagList> {
    const repository = repositoryOf(target);
    const upstream = target.upstream;
    if (upstream !== undefined) {
      try {
        const all = await this.notFound.guard(`${target.registry}/${target.name}/tags`, () => this.upstreamTags(upstream, target));
        return { name: clientName, tags: pageOf(all, page), cache: 'miss' };
      } catch (error) {
        if (!isUpstreamOutage(error) || !(await this.local.hasRepository(repository))) throw error;
        const tags = await this.local.listTags(repository, page);
        return { name: clientName, tags, cache: 'stale' };
      }
    }
    if (!(await this.local.hasRepository(repository))) throw new RegistryError('NAME_UNKNOWN', { detail: { name: clientName } });
    return { name: clientName, tags: await this.local.listTags(repository, page), cache: 'hit' };
  }

  /** The upstream's whole tag list, its pages followed (by their n and last only), sorted. */
  private async upstreamTags(upstream: Upstream, target: Target): Promise<string[]> {
    const client = upstream.client;
    const tags = new Set<string>();
    let query = '';
    for (let pages = 0; pages < TAG_LIST_PAGES; pages++) {
      const response = await client.send({ method: 'GET', path: `/v2/${target.name}/tags/list${query}`, repository: target.name, kind: 'tags', document: true });
      if (response.status !== 200) {
        await response.body.dump();
        throw client.errorFor(response, 'NAME_UNKNOWN');
      }
      const listed = parseTagList(await client.readBody(response, 'tags', MAX_MANIFEST_BYTES));
      if (listed === undefined) throw new RegistryError('UPSTREAM_UNAVAILABLE', { message: `upstream ${client.wireName} sent a tag list that is not valid` });
      const known = tags.size;
      for (const tag of listed) tags.add(tag);
      const next = nextPage(headerValue(response.headers.link));
      // A page that adds nothing ends the list, whatever its Link says (an upstream that repeats itself).
      if (next === undefined || tags.size === known) return [...tags].sort(byCodeUnits);
      query = `?${new URLSearchParams({ ...(next.n === undefined ? {} : { n: String(next.n) }), last: next.last }).toString()}`;
    }
    throw new RegistryError('UPSTREAM_UNAVAILABLE', { message: `upstream ${client.wireName} lists more than ${TAG_LIST_PAGES} pages of tags` });
  }

  /** Cached repositories as clients name them: bare for the default upstream, prefixed with the registry otherwise. */
  catalog(page: Page, defaultRegistry: string): Promise<string[]> {
    return this.local.listRepositories(page, defaultRegistry);
  }
}

/** Pages of an upstream's tag list followed at most (Docker Hub and ghcr.io send one; quay.io pages of 50 or more). */
const TAG_LIST_PAGES = 100;

/** Code-unit order, as SQL's C collation and the spec's lexical order of tags. */
function byCodeUnits(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/** The page `n` (limit) after `last` of a sorted list. */
function pageOf(sorted: readonly string[], page: Page): string[] {
  const last = page.last;
  const from = last === undefined ? 0 : sorted.findIndex((tag) => tag > last);
  return from === -1 ? [] : sorted.slice(from, from + page.limit);
}

function blobRequest(target: Target, digest: Digest, method: 'GET' | 'HEAD'): UpstreamRequest {
  return { method, path: `/v2/${target.name}/blobs/${digest}`, repository: target.name, kind: 'blob' };
}

/** Asks with every manifest type, so a tag resolves as the upstream has it; bounded by the document deadline. */
function manifestRequest(target: Target, reference: string, method: 'GET' | 'HEAD'): UpstreamRequest {
  return { method, path: `/v2/${target.name}/manifests/${reference}`, repository: target.name, kind: 'manifest', headers: { accept: UPSTREAM_MANIFEST_ACCEPT }, document: true };
}

export function repositoryOf(target: Target): RepositoryRef {
  return { registry: target.registry, name: target.name };
}

/** A tag list's tags; undefined when the bytes are not one (`{"tags": [..strings..] | null}`). */
function parseTagList(bytes: Buffer): string[] | undefined {
  let body: unknown;
  try {
    body = JSON.parse(bytes.toString('utf8'));
  } catch {
    return undefined;
  }
  if (typeof body !== 'object' || body === null) return undefined;
  const tags = (body as { tags?: unknown }).tags;
  if (tags === null || tags === undefined) return [];
  if (!Array.isArray(tags) || !tags.every((tag) => typeof tag === 'string')) return undefined;
  return tags;
}

/** The page an upstream's `Link: <…?n=…&last=…>; rel="next"` points at; only its n and last are kept. */
function nextPage(link: string | undefined): { last: string; n: number | undefined } | undefined {
  const target = nextLinkTarget(link);
  if (target === undefined) return undefined;
  let query: URLSearchParams;
  try {
    query = new URL(target, 'http://upstream.invalid').searchParams;
  } catch {
    return undefined;
  }
  const last = query.get('last');
  const n = query.get('n');
  if (last === null) return undefined;
  return { last, n: n !== null && /^\d{1,6}$/.test(n) ? Number(n) : undefined };
}
