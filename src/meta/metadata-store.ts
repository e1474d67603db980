// The MetadataStore interface: what is cached, and what tags point at, with fetch and access times; and the
// content graph: what each manifest references, and which repositories hold which manifests and blobs.
// Drivers: sqlite (default) and postgres, both running metadata-store.conformance.ts. Every method
// throws a MetadataError (metadata-error.ts) when the database itself fails.

import type { Digest } from '../oci/digest.js';
import type { ContentReference } from '../oci/manifest.js';

/** A repository as the mirror keeps it: which registry it came from, and its name there. */
export interface RepositoryRef {
  /** The upstream registry's name (e.g. docker.io), or '' for content of the local registry. */
  registry: string;
  name: string;
}

export interface BlobRecord {
  digest: Digest;
  size: number;
  lastAccess: number;
}

export interface ManifestRecord {
  digest: Digest;
  mediaType: string;
  size: number;
}

/** Where a manifest sits in the content graph: what it references, and the repository it was stored for. */
export interface ManifestGraph {
  references: readonly ContentReference[];
  /** The repository it was stored for; absent when that is not known (a graph rebuilt from stored manifests). */
  holder?: RepositoryRef;
}

export interface TagRecord {
  digest: Digest;
  /** When the upstream last confirmed the tag (ms since epoch). */
  fetchedAt: number;
}

/** The content graph whole, for what decides over all of it (eviction, GC). */
export interface ContentGraph {
  manifests: Array<{ digest: Digest; size: number; lastAccess: number; references: ContentReference[] }>;
  blobs: BlobRecord[];
}

/** A manifest or blob as eviction weighs it: its size, its last read, and whether anything holds it. */
export interface ContentEntry {
  digest: Digest;
  kind: 'manifest' | 'blob';
  size: number;
  lastAccess: number;
  /** How many references other than a subject recorded manifests make to it: 0 for a root of the graph. */
  holders: number;
}

/** A place in last-read order: what comes after it was read later, or at the same time with a greater digest. */
export interface ReadOrderPosition {
  lastAccess: number;
  digest: Digest;
}

/** Last-read order, as rootsByLastRead() pages it: by last read, then by digest (code-unit order, as SQL's). */
export function byLastRead(a: ReadOrderPosition, b: ReadOrderPosition): number {
  return a.lastAccess - b.lastAccess || (a.digest < b.digest ? -1 : a.digest > b.digest ? 1 : 0);
}

/** What the metadata holds, counted (v2 blobs and manifests; v1 content is kept apart). */
export interface ContentTotals {
  blobs: number;
  blobBytes: number;
  manifests: number;
  manifestBytes: number;
}

/** Content to remove, each only if it is still unused when the removal runs (see MetadataStore.removeContent). */
export interface ContentRemoval {
  /** Parents before their children: an index before its child manifests. */
  manifests: readonly Digest[];
  blobs: readonly Digest[];
  /** Remove only what was last read before this time (ms since epoch): a read since the decision keeps it. */
  readBefore: number;
}

/** What a removal did remove (the rest was read since, or is referenced by a manifest that stays). */
export interface RemovedContent {
  manifests: Array<{ digest: Digest; size: number }>;
  blobs: Array<{ digest: Digest; size: number }>;
}

/** What one registry's repositories hold (content several registries hold counts for each). */
export interface RegistryTotals extends ContentTotals {
  /** The upstream's registry name; '' for the local registry. */
  registry: string;
}

export interface CachedDocument {
  body: Buffer;
  /** When it was fetched (ms since epoch). */
  fetchedAt: number;
}

export interface Page {
  /** Return entries after this one, in lexical order. */
  last?: string;
  limit: number;
}

export interface MetadataStore {
  getBlob(digest: Digest): Promise<BlobRecord | undefined>;
  /** Records a blob and, with `holder`, that this repository holds it: one transaction. */
  putBlob(digest: Digest, size: number, now: number, holder?: RepositoryRef): Promise<void>;
  /** Forgets a blob and its repositories' links (a damaged file). */
  deleteBlob(digest: Digest): Promise<void>;
  /**
   * Records a read, cheap enough for every hit: reads are noted in memory and written together by flushAccess()
   * (which the driver runs by itself every few seconds, and at close). Last access never moves back.
   */
  touchBlob(digest: Digest, now: number): Promise<void>;
  /** As touchBlob, for a manifest (by tag or by digest). */
  touchManifest(digest: Digest, now: number): Promise<void>;
  /** Writes the reads noted so far; what decides by last access (eviction) calls it first. */
  flushAccess(): Promise<void>;
  /** Blob records in digest order, a page at a time (for verify). */
  listBlobs(page: Page): Promise<BlobRecord[]>;

  getManifest(digest: Digest): Promise<ManifestRecord | undefined>;
  /**
   * Records a manifest and, with `graph`, what it references (replacing what was recorded) and that the holder
   * repository holds it: one transaction, so the graph never shows a manifest without its references.
   */
  putManifest(record: ManifestRecord, now: number, graph?: ManifestGraph): Promise<void>;
  /** What a manifest references, in the order it lists them; [] for one recorded without its graph. */
  referencesOf(digest: Digest): Promise<ContentReference[]>;
  /** Whether a repository holds a manifest or blob (distribution's per-repository link). */
  holdsContent(repository: RepositoryRef, digest: Digest): Promise<boolean>;
  /** Records that a repository holds content already stored (its upstream confirmed it, or a tag there points at it). */
  linkContent(repository: RepositoryRef, digest: Digest, now: number): Promise<void>;
  /**
   * Forgets that a repository holds a manifest or blob, with that repository's tags pointing at it (a delete in a
   * hosted repository); whether it held it. The content itself stays, for GC to collect once nothing holds it.
   */
  unlinkContent(repository: RepositoryRef, digest: Digest): Promise<boolean>;
  /** Every digest some repository of `registry` holds ('': the hosted repositories), which eviction and GC keep. */
  contentHeldByRegistry(registry: string): Promise<Digest[]>;
  /** The recorded manifests whose `subject` is this digest, in digest order (the referrers of a hosted manifest). */
  referrersOf(subject: Digest): Promise<Digest[]>;
  /** Forgets a manifest, its references and its repositories' links (a damaged file); tags stay, and refetch it. */
  deleteManifest(digest: Digest): Promise<void>;
  /** Manifest records in digest order, a page at a time (for verify). */
  listManifests(page: Page): Promise<ManifestRecord[]>;
  /** How many blobs and manifests are recorded, and their bytes. */
  totals(): Promise<ContentTotals>;
  /** The same per registry, by the repositories holding the content (content linked to none is in totals() only). */
  totalsByRegistry(): Promise<RegistryTotals[]>;
  /**
   * Every manifest with its references and every blob, with sizes and last reads. Read in pages, letting the event
   * loop run between them: not one snapshot, so what decides on it checks each removal again (removeContent).
   */
  graph(): Promise<ContentGraph>;
  /**
   * Roots of the content graph — what no recorded manifest holds: an image's top manifest, a blob no manifest
   * references — least recently read first, `limit` after `after`: an indexed range whatever the cache holds, so
   * eviction reads as many as it evicts, not the whole graph.
   */
  rootsByLastRead(after: ReadOrderPosition | undefined, limit: number): Promise<ContentEntry[]>;
  /** What a manifest holds (its references other than a subject) that is recorded, in the order it lists them. */
  heldBy(manifest: Digest): Promise<ContentEntry[]>;
  /** The manifests that hold a digest (reference it other than as a subject), each with its own holders count. */
  holdersOf(digest: Digest): Promise<Array<{ digest: Digest; holders: number }>>;
  /** The digests tags point at (any repository, any registry). */
  taggedDigests(): Promise<Digest[]>;
  /**
   * Removes the records of content that eviction or GC decided on, each checked again in the transaction that
   * removes it (the compare-and-set that keeps a decision made on an older read safe; a long removal is cut into
   * transactions of a few hundred, the event loop let run between them): a manifest or blob read since
   * `readBefore` (reads noted and not yet flushed count), or referenced by a manifest that stays, is kept. With a
   * manifest go its references, its repositories' links and the tags pointing at it; with a blob its links.
   */
  removeContent(removal: ContentRemoval): Promise<RemovedContent>;

  getTag(repository: RepositoryRef, tag: string): Promise<TagRecord | undefined>;
  putTag(repository: RepositoryRef, tag: string, record: TagRecord): Promise<void>;
  deleteTag(repository: RepositoryRef, tag: string): Promise<void>;
  listTags(repository: RepositoryRef, page: Page): Promise<string[]>;

  /** Names repositories the mirror holds content for; idempotent. */
  addRepository(repository: RepositoryRef, now: number): Promise<void>;
  /**
   * Repository names in lexical order: a repository of `defaultRegistry` by its bare name, any other
   * as `<registry>/<name>` (the path prefix that routes to it).
   */
  listRepositories(page: Page, defaultRegistry: string): Promise<string[]>;
  hasRepository(repository: RepositoryRef): Promise<boolean>;

  /** A cached document (e.g. a mirrored v1 tag list) and when it was fetched; the caller decides freshness. */
  getDocument(key: string): Promise<CachedDocument | undefined>;
  putDocument(key: string, body: Buffer, fetchedAt: number): Promise<void>;
  deleteDocument(key: string): Promise<void>;

  /**
   * Runs a whole-cache task unless another process sharing this metadata runs the same task now: then it resolves
   * undefined at once. SQLite: one process per data directory, so it always runs. PostgreSQL: a session advisory
   * lock on a connection of its own for the task's length, released by the database if the process dies.
   */
  runAlone<T>(task: ExclusiveTask, work: () => Promise<T>): Promise<T | undefined>;

  close(): Promise<void>;
}

/** The tasks that run on one node at a time over a shared database. */
export type ExclusiveTask = 'eviction' | 'gc';
