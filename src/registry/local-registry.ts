// The local registry: content by digest in the ObjectStore, what it is and where tags point in the
// MetadataStore. It knows nothing of upstreams or HTTP; the mirror composes it with upstream clients.

import type { Readable } from 'node:stream';
import { digestOf, type Digest } from '../oci/digest.js';
import { parseManifest } from '../oci/manifest.js';
import type { ContentRemoval, ManifestGraph, MetadataStore, Page, RemovedContent, RepositoryRef, TagRecord } from '../meta/metadata-store.js';
import { contentKey } from '../store/layout.js';
import type { ByteRange, ObjectStore, ObjectWriter } from '../store/object-store.js';
import type { Metrics } from '../telemetry/metrics.js';
import { BoundedCache } from './bounded-cache.js';
import type { BlobAnswer, BlobDelivery } from './content-service.js';
import { RegistryError } from './errors.js';
import { resolveRange, unsatisfiedRange } from '../oci/range.js';

/**
 * Verified manifests kept in memory, by digest, at most this many bytes: a hit skips the file read and the
 * digest check (about 1.5× the manifest GETs per second here). Manifests are a few KiB; images' layers are not kept.
 */
const MANIFEST_MEMORY_BYTES = 4 * 1024 * 1024;

export interface StoredManifest {
  digest: Digest;
  mediaType: string;
  bytes: Buffer;
}

/** A cached object that is not what its record says: its file is missing, of another size, or (a manifest) of another digest. */
export interface Damage {
  kind: 'blob' | 'manifest';
  digest: Digest;
  reason: 'missing' | 'size' | 'digest';
  /** The size the record says. */
  expectedSize: number;
  /** The file's size; undefined when it is missing. */
  actualSize: number | undefined;
}

/**
 * In a cluster (src/cluster/cluster.ts), the digests' leases across nodes: a removal leaves out what another node
 * is filling or committing, and a commit waits while another node removes or commits the same digest.
 */
export interface DigestLeases {
  holdFree(digests: readonly Digest[]): Promise<{ held: ReadonlySet<Digest>; release(): Promise<void> }>;
  holdForCommit(digest: Digest): Promise<() => Promise<void>>;
}

export interface LocalRegistryObservers {
  metrics: Metrics;
  log: { warn(fields: object, message: string): void };
}

export class LocalRegistry {
  // Counted by the memory a manifest keeps alive: a small Buffer may be a slice of a shared 8 KiB pool.
  private readonly manifests = new BoundedCache<Digest, StoredManifest>(MANIFEST_MEMORY_BYTES, (manifest) => manifest.bytes.buffer.byteLength);
  /** Content being removed (records, then files), by digest: a commit of the same digest waits for it. */
  private readonly removals = new Map<Digest, Promise<void>>();
  /** Commits in progress, by digest (how many): their file is there a moment before their record. */
  private readonly commits = new Map<Digest, number>();
  private readonly storedListeners: Array<() => void> = [];
  /** The backfill of references in progress (backfillReferences), and whether one has finished in this process. */
  private backfill: Promise<number> | undefined;
  private backfilled = false;

  constructor(
    readonly store: ObjectStore,
    readonly meta: MetadataStore,
    private readonly observers: LocalRegistryObservers,
    private readonly now: () => number = Date.now,
  ) {}

  private leases: DigestLeases | undefined;

  /** In a cluster: removals and commits take the digests' leases across nodes (see DigestLeases). */
  coordinateWith(leases: DigestLeases): void {
    this.leases = leases;
  }

  /** The size of a cached blob, or undefined when it is not here. */
  async statBlob(digest: Digest): Promise<number | undefined> {
    const record = await this.meta.getBlob(digest);
    return record?.size;
  }

  /**
   * Opens a cached blob; undefined when it is not here, or when its file is missing or not the size its record
   * says (then both are dropped, so that it is fetched again, and the damage is logged and counted).
   */
  async openBlob(digest: Digest, range?: ByteRange): Promise<Readable | undefined> {
    const key = contentKey(digest);
    if (!(await this.blobIntact(digest, key))) return undefined;
    const body = await this.store.read(key, range);
    if (body === undefined) {
      // Deleted since the check: evicted, or found damaged by another request.
      if (!this.removals.has(digest)) await this.meta.deleteBlob(digest);
      return undefined;
    }
    try {
      await this.meta.touchBlob(digest, this.now());
    } catch (error) {
      body.destroy();
      throw error;
    }
    return body;
  }

  /**
   * A stored blob as a request asks for it (whole, a range, its headers only, or its storage key for a web server
   * in front); undefined when its file turns out missing or damaged (then dropped, as openBlob does).
   */
  async serveBlob(digest: Digest, size: number, method: 'GET' | 'HEAD', rangeHeader: string | undefined, delivery: BlobDelivery): Promise<BlobAnswer | undefined> {
    const range = resolveRange(rangeHeader, size);
    if (range.kind === 'unsatisfiable') {
      throw new RegistryError('RANGE_INVALID', { headers: { 'content-range': unsatisfiedRange(size) } });
    }
    const byteRange = range.kind === 'range' ? { start: range.start, end: range.end } : undefined;
    if (method === 'HEAD') return { digest, size, range: byteRange, cache: 'hit' };
    if (delivery === 'key') {
      const storedKey = await this.locateBlob(digest);
      return storedKey === undefined ? undefined : { digest, size, range: byteRange, storedKey, cache: 'hit' };
    }
    if (delivery === 'redirect' && byteRange === undefined) {
      const redirectUrl = await this.redirectBlob(digest);
      if (redirectUrl !== undefined) return { digest, size, redirectUrl, cache: 'hit' };
    }
    if (size === 0) return { digest, size, cache: 'hit', body: undefined };
    const body = await this.openBlob(digest, byteRange);
    if (body === undefined) return undefined;
    return { digest, size, range: byteRange, body, cache: 'hit' };
  }

  /** The storage key of a cached blob, for a web server in front to send; undefined as for openBlob. */
  async locateBlob(digest: Digest): Promise<string | undefined> {
    const key = contentKey(digest);
    if (!(await this.blobIntact(digest, key))) return undefined;
    await this.meta.touchBlob(digest, this.now());
    return key;
  }

  /**
   * A short-lived URL the client may fetch a cached blob from itself, when the store offers one (s3 with
   * redirects on); undefined when it does not, or as for openBlob.
   */
  async redirectBlob(digest: Digest): Promise<string | undefined> {
    const key = await this.locateBlob(digest);
    return key === undefined ? undefined : this.store.redirectUrl(key);
  }

  /**
   * A writer for a blob that streams in (readable back by position meanwhile); commitBlob makes it visible.
   * `digest`: the blob's, when known at the start: the store can then send it to its place as it arrives.
   */
  createBlobWriter(digest?: Digest): Promise<ObjectWriter> {
    return this.store.createWriter(digest === undefined ? undefined : contentKey(digest));
  }

  /** Makes a verified writer's content the blob's; `holder`: the repository it was fetched for (the content graph). */
  async commitBlob(writer: ObjectWriter, digest: Digest, size: number, holder?: RepositoryRef): Promise<void> {
    await this.committing(digest, async () => {
      await writer.commit(contentKey(digest));
      await this.meta.putBlob(digest, size, this.now(), holder);
    });
    this.notifyStored();
  }

  async getManifest(digest: Digest): Promise<StoredManifest | undefined> {
    const record = await this.meta.getManifest(digest);
    if (record === undefined) {
      this.manifests.delete(digest);
      return undefined;
    }
    await this.meta.touchManifest(digest, this.now());
    const remembered = this.manifests.get(digest);
    if (remembered !== undefined) return remembered;
    const bytes = await this.store.readBytes(contentKey(digest));
    if (bytes === undefined && (await this.removedSince(digest, 'manifest'))) return undefined;
    if (bytes === undefined || digestOf(bytes) !== digest) {
      const reason = bytes === undefined ? 'missing' : bytes.length === record.size ? 'digest' : 'size';
      await this.dropDamaged({ kind: 'manifest', digest, reason, expectedSize: record.size, actualSize: bytes?.length });
      return undefined;
    }
    const manifest = { digest, mediaType: record.mediaType, bytes };
    this.manifests.set(digest, manifest);
    return manifest;
  }

  /** Stores a manifest whose digest the caller has verified, with its place in the content graph when known. */
  async putManifest(manifest: StoredManifest, graph?: ManifestGraph): Promise<void> {
    await this.committing(manifest.digest, async () => {
      await this.store.putBytes(contentKey(manifest.digest), manifest.bytes);
      await this.meta.putManifest({ digest: manifest.digest, mediaType: manifest.mediaType, size: manifest.bytes.length }, this.now(), graph);
    });
    this.manifests.set(manifest.digest, manifest);
    this.notifyStored();
  }

  /** Calls listener after each blob or manifest stored (eviction checks the bound). */
  onStored(listener: () => void): void {
    this.storedListeners.push(listener);
  }

  private notifyStored(): void {
    for (const listener of this.storedListeners) listener();
  }

  /**
   * Removes content eviction or GC decided on: the records first, each checked again (MetadataStore.removeContent),
   * then the files of what was removed. A reader that opened a file before keeps reading it; one that finds the
   * record gone fetches it again through a fill; a commit of the same digest meanwhile waits, so that its new file
   * is not the one deleted.
   */
  async removeContent(removal: ContentRemoval): Promise<RemovedContent> {
    return this.whileRemoving([...removal.manifests, ...removal.blobs], async (claimed) => {
      // In a cluster, what another node is filling or committing now is left for a later run.
      const leased = this.leases === undefined ? undefined : await this.leases.holdFree([...claimed]);
      const removable = leased === undefined ? claimed : leased.held;
      try {
        const removed = await this.meta.removeContent({
          manifests: removal.manifests.filter((digest) => removable.has(digest)),
          blobs: removal.blobs.filter((digest) => removable.has(digest)),
          readBefore: removal.readBefore,
        });
        for (const { digest } of removed.manifests) this.manifests.delete(digest);
        for (const digest of new Set([...removed.manifests, ...removed.blobs].map((entry) => entry.digest))) await this.store.delete(contentKey(digest));
        return removed;
      } finally {
        await leased?.release();
      }
    });
  }

  /** Deletes a content file that no record names (GC), unless a record appeared meanwhile. Whether it deleted it. */
  async removeOrphanFile(digest: Digest): Promise<boolean> {
    return this.whileRemoving([digest], async (claimed) => {
      if (!claimed.has(digest) || this.commits.has(digest)) return false;
      if ((await this.meta.getBlob(digest)) !== undefined || (await this.meta.getManifest(digest)) !== undefined) return false;
      await this.store.delete(contentKey(digest));
      return true;
    });
  }

  /** Forgets a record whose file is gone (GC), unless the file is there again. Whether it forgot it. */
  async forgetMissing(kind: 'blob' | 'manifest', digest: Digest): Promise<boolean> {
    return this.whileRemoving([digest], async (claimed) => {
      if (!claimed.has(digest) || (await this.store.stat(contentKey(digest))) !== undefined) return false;
      if (kind === 'blob') await this.meta.deleteBlob(digest);
      else await this.meta.deleteManifest(digest);
      this.manifests.delete(digest);
      return true;
    });
  }

  /**
   * Writes a digest's file, then its record: after any removal of it in progress (so its new file is not the one
   * that removal deletes), and marked as committing meanwhile (so GC does not take the file for an orphan).
   */
  private async committing(digest: Digest, work: () => Promise<void>): Promise<void> {
    await this.removals.get(digest);
    this.commits.set(digest, (this.commits.get(digest) ?? 0) + 1);
    let release: (() => Promise<void>) | undefined;
    try {
      // In a cluster, not while another node removes (or commits) the same digest.
      release = await this.leases?.holdForCommit(digest);
      await work();
    } finally {
      await release?.();
      const left = (this.commits.get(digest) ?? 1) - 1;
      if (left === 0) this.commits.delete(digest);
      else this.commits.set(digest, left);
    }
  }

  /** Runs work with the digests (those not already being removed) claimed: a commit of one of them waits until it is done. */
  private async whileRemoving<T>(digests: readonly Digest[], work: (claimed: ReadonlySet<Digest>) => Promise<T>): Promise<T> {
    const claimed = new Set(digests.filter((digest) => !this.removals.has(digest)));
    let done!: () => void;
    const finished = new Promise<void>((resolve) => (done = resolve));
    for (const digest of claimed) this.removals.set(digest, finished);
    try {
      return await work(claimed);
    } finally {
      for (const digest of claimed) this.removals.delete(digest);
      done();
    }
  }

  /**
   * Records the references of stored manifests that have none recorded (cached before the content graph
   * existed), read from their bytes; a manifest that is damaged or unparsable is left as it is (verify reports
   * it). Returns how many were recorded. Whatever walks the graph (eviction, GC) runs this first; it reads the whole
   * graph once per process (what is stored after it is stored with its references), later calls share that run.
   */
  backfillReferences(): Promise<number> {
    if (this.backfilled) return Promise.resolve(0);
    this.backfill ??= this.recordMissingReferences()
      .then((recorded) => {
        this.backfilled = true;
        return recorded;
      })
      // A failure (the database) is tried again by the next caller.
      .finally(() => (this.backfill = undefined));
    return this.backfill;
  }

  private async recordMissingReferences(): Promise<number> {
    let recorded = 0;
    for (const manifest of (await this.meta.graph()).manifests) {
      if (manifest.references.length > 0) continue;
      const record = await this.meta.getManifest(manifest.digest);
      const bytes = record && (await this.store.readBytes(contentKey(manifest.digest)));
      if (record === undefined || bytes === undefined || digestOf(bytes) !== manifest.digest) continue;
      const parsed = parseManifest(bytes, record.mediaType);
      if (!parsed.ok || parsed.references.length === 0) continue;
      await this.meta.putManifest(record, this.now(), { references: parsed.references });
      recorded += 1;
    }
    return recorded;
  }

  getTag(repository: RepositoryRef, tag: string): Promise<TagRecord | undefined> {
    return this.meta.getTag(repository, tag);
  }

  /** Points a tag at a stored manifest; the repository then holds that manifest (its upstream said so). */
  async setTag(repository: RepositoryRef, tag: string, digest: Digest): Promise<void> {
    await this.meta.linkContent(repository, digest, this.now());
    await this.meta.putTag(repository, tag, { digest, fetchedAt: this.now() });
  }

  holdsContent(repository: RepositoryRef, digest: Digest): Promise<boolean> {
    return this.meta.holdsContent(repository, digest);
  }

  linkContent(repository: RepositoryRef, digest: Digest): Promise<void> {
    return this.meta.linkContent(repository, digest, this.now());
  }

  deleteTag(repository: RepositoryRef, tag: string): Promise<void> {
    return this.meta.deleteTag(repository, tag);
  }

  async addRepository(repository: RepositoryRef): Promise<void> {
    await this.meta.addRepository(repository, this.now());
  }

  listTags(repository: RepositoryRef, page: Page): Promise<string[]> {
    return this.meta.listTags(repository, page);
  }

  hasRepository(repository: RepositoryRef): Promise<boolean> {
    return this.meta.hasRepository(repository);
  }

  listRepositories(page: Page, defaultRegistry: string): Promise<string[]> {
    return this.meta.listRepositories(page, defaultRegistry);
  }

  /** Whether a blob's record and file agree on its size; when they do not, both are dropped. */
  private async blobIntact(digest: Digest, key: string): Promise<boolean> {
    const record = await this.meta.getBlob(digest);
    if (record === undefined) return false;
    // A flipped byte keeps the size: `regmirror verify` re-hashes what this cannot afford to on every hit.
    const file = await this.store.stat(key);
    if (file?.size === record.size) return true;
    if (file === undefined && (await this.removedSince(digest, 'blob'))) return false;
    await this.dropDamaged({ kind: 'blob', digest, reason: file === undefined ? 'missing' : 'size', expectedSize: record.size, actualSize: file?.size });
    return false;
  }

  /** Whether content whose file was found missing was evicted or collected meanwhile (its record is gone): not damage. */
  private async removedSince(digest: Digest, kind: 'blob' | 'manifest'): Promise<boolean> {
    if (this.removals.has(digest)) return true;
    const record = kind === 'blob' ? await this.meta.getBlob(digest) : await this.meta.getManifest(digest);
    return record === undefined;
  }

  /**
   * Drops a damaged object, file first: once its records are gone a fill may commit the digest again, and
   * that file must not be the one deleted. Both records go, as a digest may be cached as a blob and a manifest.
   */
  private async dropDamaged(damage: Damage): Promise<void> {
    const { metrics, log } = this.observers;
    metrics.damagedObjects.inc({ kind: damage.kind, reason: damage.reason });
    log.warn({ ...damage }, `cached ${damage.kind} ${damage.reason === 'missing' ? 'is missing' : 'is damaged'}: dropped, as if never cached`);
    await this.store.delete(contentKey(damage.digest));
    await this.meta.deleteBlob(damage.digest);
    await this.meta.deleteManifest(damage.digest);
    this.manifests.delete(damage.digest);
  }
}
