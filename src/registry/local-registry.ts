// The local registry: content by digest in the ObjectStore, what it is and where tags point in the
// MetadataStore. It knows nothing of upstreams or HTTP; the mirror composes it with upstream clients.

import type { Readable } from 'node:stream';
import { digestOf, type Digest } from '../oci/digest.js';
import type { MetadataStore, Page, RepositoryRef, TagRecord } from '../meta/metadata-store.js';
import { contentKey } from '../store/layout.js';
import type { ByteRange, ObjectStore } from '../store/object-store.js';
import type { SpoolFile } from '../store/spool-file.js';

export interface StoredManifest {
  digest: Digest;
  mediaType: string;
  bytes: Buffer;
}

export class LocalRegistry {
  constructor(
    readonly store: ObjectStore,
    readonly meta: MetadataStore,
    private readonly now: () => number = Date.now,
  ) {}

  /** The size of a cached blob, or undefined when it is not here. */
  async statBlob(digest: Digest): Promise<number | undefined> {
    const record = await this.meta.getBlob(digest);
    return record?.size;
  }

  /** Opens a cached blob; undefined (and the record dropped) when its content has gone missing. */
  async openBlob(digest: Digest, range?: ByteRange): Promise<Readable | undefined> {
    const body = await this.store.read(contentKey(digest), range);
    if (body === undefined) {
      await this.meta.deleteBlob(digest);
      return undefined;
    }
    await this.meta.touchBlob(digest, this.now());
    return body;
  }

  /** The storage key of a cached blob, for a web server in front to send; undefined (and the record dropped) when its content has gone missing. */
  async locateBlob(digest: Digest): Promise<string | undefined> {
    const key = contentKey(digest);
    if ((await this.store.stat(key)) === undefined) {
      await this.meta.deleteBlob(digest);
      return undefined;
    }
    await this.meta.touchBlob(digest, this.now());
    return key;
  }

  async commitBlob(spool: SpoolFile, digest: Digest, size: number): Promise<void> {
    await this.store.commitSpool(spool, contentKey(digest));
    await this.meta.putBlob(digest, size, this.now());
  }

  async getManifest(digest: Digest): Promise<StoredManifest | undefined> {
    const record = await this.meta.getManifest(digest);
    if (record === undefined) return undefined;
    const bytes = await this.store.readBytes(contentKey(digest));
    if (bytes === undefined || digestOf(bytes) !== digest) {
      await this.meta.deleteManifest(digest);
      return undefined;
    }
    return { digest, mediaType: record.mediaType, bytes };
  }

  /** Stores a manifest whose digest the caller has verified. */
  async putManifest(manifest: StoredManifest): Promise<void> {
    await this.store.putBytes(contentKey(manifest.digest), manifest.bytes);
    await this.meta.putManifest({ digest: manifest.digest, mediaType: manifest.mediaType, size: manifest.bytes.length }, this.now());
  }

  getTag(repository: RepositoryRef, tag: string): Promise<TagRecord | undefined> {
    return this.meta.getTag(repository, tag);
  }

  async setTag(repository: RepositoryRef, tag: string, digest: Digest): Promise<void> {
    await this.meta.addRepository(repository, this.now());
    await this.meta.putTag(repository, tag, { digest, fetchedAt: this.now() });
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
}
