// Hosted repositories: served from the local registry alone, pushed to and deleted from by clients, never asked of
// an upstream, never evicted (only collected once deleted). Kept under the registry name '' in the metadata, so no
// hosted repository is ever the same as a mirrored one, whatever their names.

import { digestOf, type Digest } from '../oci/digest.js';
import { MAX_MANIFEST_BYTES, parseManifest } from '../oci/manifest.js';
import { referrerDescriptor, type ReferrerDescriptor } from '../oci/referrers.js';
import type { Page, RepositoryRef } from '../meta/metadata-store.js';
import type {
  BlobAnswer,
  BlobDelivery,
  ChunkRange,
  ContentService,
  ManifestAnswer,
  Reference,
  ReferrersAnswer,
  RepositoryWrites,
  StoredPush,
  TagList,
  UploadStart,
  UploadStatus,
} from './content-service.js';
import { RegistryError } from './errors.js';
import type { LocalRegistry } from './local-registry.js';
import type { UploadSessionStore } from './uploads.js';

/** The registry name hosted repositories are kept under. */
export const HOSTED_REGISTRY = '';

export interface HostedOptions {
  /** Whether clients may delete manifests, tags and blobs (`delete.enabled`). */
  deleteEnabled: boolean;
  /**
   * Whether a mount naming no source repository may link any blob this registry stores (automatic mount). Off with
   * auth: a caller must then name a repository it may pull from, so knowing a digest reads nothing it may not.
   */
  mountWithoutSource: boolean;
}

export class HostedRepositories {
  constructor(
    private readonly local: LocalRegistry,
    private readonly uploads: UploadSessionStore,
    private readonly options: HostedOptions,
  ) {}

  repository(name: string): HostedRepository {
    return new HostedRepository({ registry: HOSTED_REGISTRY, name }, this.local, this.uploads, this.options);
  }
}

export class HostedRepository implements ContentService, RepositoryWrites {
  readonly writes = this;

  constructor(
    readonly repository: RepositoryRef,
    private readonly local: LocalRegistry,
    private readonly uploads: UploadSessionStore,
    private readonly options: HostedOptions,
  ) {}

  // ---- reads ----

  async blob(digest: Digest, method: 'GET' | 'HEAD', rangeHeader: string | undefined, delivery: BlobDelivery): Promise<BlobAnswer> {
    const size = await this.heldBlobSize(digest);
    const answer = size === undefined ? undefined : await this.local.serveBlob(digest, size, method, rangeHeader, delivery);
    if (answer === undefined) throw new RegistryError('BLOB_UNKNOWN', { detail: { digest } });
    return answer;
  }

  /** As pushed: no Accept negotiation (a client that pushed an index gets the index). */
  async manifest(reference: Reference): Promise<ManifestAnswer> {
    const digest = reference.kind === 'digest' ? reference.digest : (await this.local.getTag(this.repository, reference.tag))?.digest;
    const held = digest !== undefined && (await this.local.holdsContent(this.repository, digest));
    const manifest = held ? await this.local.getManifest(digest) : undefined;
    if (manifest === undefined) throw new RegistryError('MANIFEST_UNKNOWN', { detail: reference.kind === 'tag' ? { tag: reference.tag } : { digest: reference.digest } });
    return { manifest, cache: 'hit' };
  }

  async tags(page: Page): Promise<TagList> {
    if (!(await this.local.hasRepository(this.repository))) throw new RegistryError('NAME_UNKNOWN', { detail: { name: this.repository.name } });
    return { name: this.repository.name, tags: await this.local.listTags(this.repository, page), cache: 'hit' };
  }

  /** The manifests of this repository whose subject is the digest (the subject itself need not be here). */
  async referrers(subject: Digest): Promise<ReferrersAnswer> {
    const referrers: ReferrerDescriptor[] = [];
    for (const digest of await this.local.meta.referrersOf(subject)) {
      if (!(await this.local.holdsContent(this.repository, digest))) continue;
      const manifest = await this.local.getManifest(digest);
      if (manifest !== undefined) referrers.push(referrerDescriptor(manifest));
    }
    return { referrers, cache: 'hit' };
  }

  // ---- uploads ----

  async startUpload(mount: { digest: Digest; from: RepositoryRef | undefined } | undefined): Promise<UploadStart> {
    if (mount !== undefined && (await this.mountable(mount.digest, mount.from))) {
      await this.local.linkContent(this.repository, mount.digest);
      await this.local.addRepository(this.repository);
      return { kind: 'mounted', digest: mount.digest };
    }
    return { kind: 'session', status: await this.uploads.start(this.repository) };
  }

  async uploadWhole(digest: Digest, body: AsyncIterable<Uint8Array>): Promise<Digest> {
    await this.uploads.whole(this.repository, digest, body);
    await this.local.addRepository(this.repository);
    return digest;
  }

  appendUpload(id: string, body: AsyncIterable<Uint8Array>, range: ChunkRange | undefined): Promise<UploadStatus> {
    return this.uploads.append(id, this.repository, body, range);
  }

  uploadStatus(id: string): Promise<UploadStatus> {
    return this.uploads.status(id, this.repository);
  }

  async completeUpload(id: string, digest: Digest, body: AsyncIterable<Uint8Array>, range: ChunkRange | undefined): Promise<Digest> {
    await this.uploads.complete(id, this.repository, digest, body, range);
    await this.local.addRepository(this.repository);
    return digest;
  }

  cancelUpload(id: string): Promise<void> {
    return this.uploads.cancel(id, this.repository);
  }

  // ---- manifests ----

  /**
   * Stores a manifest exactly as sent, once it parses as a manifest of the type it says it is, names the digest the
   * request does (when it names one), and everything it holds — config, layers, child manifests — is in this
   * repository. Its subject need not be (a signature may come before what it signs).
   */
  async putManifest(reference: Reference, contentType: string | undefined, body: AsyncIterable<Uint8Array>): Promise<StoredPush> {
    const bytes = await readManifestBody(body);
    const headerType = contentType?.split(';')[0]?.trim().toLowerCase();
    const parsed = parseManifest(bytes, headerType);
    if (!parsed.ok) throw new RegistryError('MANIFEST_INVALID', { message: `manifest invalid: ${parsed.reason}` });
    if (headerType !== undefined && headerType !== '' && headerType !== parsed.mediaType) {
      throw new RegistryError('MANIFEST_INVALID', { message: `manifest invalid: its mediaType is ${parsed.mediaType}, its Content-Type ${headerType}` });
    }
    const digest = digestOf(bytes);
    if (reference.kind === 'digest' && reference.digest !== digest) {
      throw new RegistryError('DIGEST_INVALID', { message: 'manifest digest does not match the reference', detail: { reference: reference.digest, digest } });
    }
    for (const held of parsed.references) {
      if (held.role === 'subject') continue;
      const present = held.role === 'manifest' ? await this.heldManifest(held.digest) : (await this.heldBlobSize(held.digest)) !== undefined;
      if (!present) {
        throw new RegistryError('MANIFEST_BLOB_UNKNOWN', { status: 400, message: `manifest references ${held.role === 'manifest' ? 'a manifest' : 'a blob'} this repository does not hold`, detail: { digest: held.digest } });
      }
    }
    await this.local.putManifest({ digest, mediaType: parsed.mediaType, bytes }, { references: parsed.references, holder: this.repository });
    if (reference.kind === 'tag') await this.local.setTag(this.repository, reference.tag, digest);
    await this.local.addRepository(this.repository);
    const subject = parsed.references.find((held) => held.role === 'subject')?.digest;
    return { digest, subject };
  }

  // ---- deletes ----

  async deleteManifest(reference: Reference): Promise<void> {
    this.requireDeletes();
    if (reference.kind === 'tag') {
      if ((await this.local.getTag(this.repository, reference.tag)) === undefined) throw new RegistryError('MANIFEST_UNKNOWN', { detail: { tag: reference.tag } });
      await this.local.deleteTag(this.repository, reference.tag);
      return;
    }
    const { digest } = reference;
    if (!(await this.heldManifest(digest)) || !(await this.local.meta.unlinkContent(this.repository, digest))) {
      throw new RegistryError('MANIFEST_UNKNOWN', { detail: { digest } });
    }
  }

  async deleteBlob(digest: Digest): Promise<void> {
    this.requireDeletes();
    if ((await this.heldBlobSize(digest)) === undefined || !(await this.local.meta.unlinkContent(this.repository, digest))) {
      throw new RegistryError('BLOB_UNKNOWN', { detail: { digest } });
    }
  }

  private requireDeletes(): void {
    if (!this.options.deleteEnabled) throw new RegistryError('UNSUPPORTED', { message: 'deletes are disabled on this registry (delete.enabled: false)' });
  }

  /** The size of a blob this repository holds; undefined when it holds none of that digest. */
  private async heldBlobSize(digest: Digest): Promise<number | undefined> {
    if (!(await this.local.holdsContent(this.repository, digest))) return undefined;
    return this.local.statBlob(digest);
  }

  private async heldManifest(digest: Digest): Promise<boolean> {
    return (await this.local.holdsContent(this.repository, digest)) && (await this.local.meta.getManifest(digest)) !== undefined;
  }

  /** Whether a mount may link the blob: stored, and held by the source named (or, without one, when allowed at all). */
  private async mountable(digest: Digest, from: RepositoryRef | undefined): Promise<boolean> {
    if ((await this.local.statBlob(digest)) === undefined) return false;
    if (from === undefined) return this.options.mountWithoutSource;
    return this.local.holdsContent(from, digest);
  }
}

/** A manifest's bytes, at most MAX_MANIFEST_BYTES (413 past it). */
async function readManifestBody(body: AsyncIterable<Uint8Array>): Promise<Buffer> {
  const chunks: Uint8Array[] = [];
  let total = 0;
  for await (const chunk of body) {
    total += chunk.length;
    if (total > MAX_MANIFEST_BYTES) {
      throw new RegistryError('MANIFEST_INVALID', { status: 413, message: `manifest larger than ${MAX_MANIFEST_BYTES} bytes` });
    }
    chunks.push(chunk);
  }
  return Buffer.concat(chunks);
}
