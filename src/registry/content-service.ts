// The one content interface the HTTP layer serves a repository through. Hosted repositories (hosted.ts) and
// mirrored ones (mirror/mirrored-content.ts) both implement it, as distribution's local and proxy stores do; the
// repository policy (mirror/repository-policy.ts) says which a name is.

import type { Readable } from 'node:stream';
import type { Digest } from '../oci/digest.js';
import type { ReferrerDescriptor } from '../oci/referrers.js';
import type { Page, RepositoryRef } from '../meta/metadata-store.js';
import type { ByteRange } from '../store/object-store.js';
import type { CacheOutcome } from '../telemetry/metrics.js';
import type { StoredManifest } from './local-registry.js';

export type Reference = { kind: 'tag'; tag: string } | { kind: 'digest'; digest: Digest };

export interface BlobAnswer {
  digest: Digest;
  /** The whole blob's size; undefined only for a fill whose upstream sent no Content-Length. */
  size: number | undefined;
  /** Set on a 206. */
  range?: ByteRange;
  /** Absent for HEAD, and for a hit delivered by key. */
  body?: Readable;
  /** A hit asked for with delivery 'key': the local object's storage key, for a web server in front to send. */
  storedKey?: string;
  /** A whole hit asked for with delivery 'redirect': a short-lived URL of the store's to send the client to. */
  redirectUrl?: string;
  cache: CacheOutcome;
}

/**
 * How a GET wants a stored blob: streamed by this process, named by its storage key (an offload), or as a URL of
 * the store's (whole blobs; a range, or a store that gives no URL, streams). Misses always stream.
 */
export type BlobDelivery = 'stream' | 'key' | 'redirect';

export interface ManifestAnswer {
  manifest: StoredManifest;
  cache: CacheOutcome;
}

export interface TagList {
  name: string;
  /** One page, in lexical order; one more than the client's `n` when there is a next page. */
  tags: string[];
  cache: CacheOutcome;
}

export interface ReferrersAnswer {
  referrers: ReferrerDescriptor[];
  cache: CacheOutcome;
}

/** One repository's content, read side. */
export interface ContentService {
  /** Where its content is kept: a mirrored repository under its upstream's registry name, a hosted one under ''. */
  readonly repository: RepositoryRef;
  /** Whether a client may push to and delete from it (hosted), or only pull (mirrored). */
  readonly writes: RepositoryWrites | undefined;
  blob(digest: Digest, method: 'GET' | 'HEAD', rangeHeader: string | undefined, delivery: BlobDelivery): Promise<BlobAnswer>;
  manifest(reference: Reference, accept: string | string[] | undefined): Promise<ManifestAnswer>;
  /** A page of tags, paged here (`n`, `last`) for every repository; `page.limit` is one more than the client's `n`, so that a next page shows. */
  tags(page: Page): Promise<TagList>;
  referrers(subject: Digest): Promise<ReferrersAnswer>;
}

/** An upload session's state, as the protocol reports it (`Range: 0-<size - 1>`, `Location`). */
export interface UploadStatus {
  id: string;
  /** Bytes received so far. */
  size: number;
}

/** A chunk's place in an upload, from its Content-Range (`<start>-<end>`). */
export interface ChunkRange {
  start: number;
  end: number;
}

export type UploadStart = { kind: 'mounted'; digest: Digest } | { kind: 'session'; status: UploadStatus };

/** What a client's manifest PUT stored. */
export interface StoredPush {
  digest: Digest;
  /** The manifest's `subject`, reported back in the OCI-Subject header. */
  subject: Digest | undefined;
}

/** One repository's content, write side: pushes and deletes. Bodies are streams of what the client sends. */
export interface RepositoryWrites {
  /**
   * Starts an upload, or mounts a blob another repository holds (`from`), or (without `from`) one this registry
   * already stores, when `mayMount` allows it; anything that cannot be mounted starts an upload session instead.
   */
  startUpload(mount: { digest: Digest; from: RepositoryRef | undefined } | undefined): Promise<UploadStart>;
  /** A whole blob in one request (POST ?digest=): stored once its digest verifies. */
  uploadWhole(digest: Digest, body: AsyncIterable<Uint8Array>): Promise<Digest>;
  /** Appends a chunk (a streamed PATCH without range, or one whose range starts where the upload is). */
  appendUpload(id: string, body: AsyncIterable<Uint8Array>, range: ChunkRange | undefined): Promise<UploadStatus>;
  uploadStatus(id: string): Promise<UploadStatus>;
  /** The PUT that ends an upload, with a last chunk or none: the blob is stored once the digest verifies. */
  completeUpload(id: string, digest: Digest, body: AsyncIterable<Uint8Array>, range: ChunkRange | undefined): Promise<Digest>;
  cancelUpload(id: string): Promise<void>;
  putManifest(reference: Reference, contentType: string | undefined, body: AsyncIterable<Uint8Array>): Promise<StoredPush>;
  /** Deletes a manifest by digest (the repository's tags pointing at it go too), or a tag alone. */
  deleteManifest(reference: Reference): Promise<void>;
  deleteBlob(digest: Digest): Promise<void>;
}
