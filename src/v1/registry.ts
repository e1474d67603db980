// The local v1 registry: images, their push flow (`_inprogress` until the checksum is confirmed), tags,
// repository metadata and the standalone index's image lists, all as files in docker-registry 0.9's layout.

import type { Readable } from 'node:stream';
import { holdsAny, listAll, MAX_KEY_PAGE, type ByteRange, type ObjectStore, type ObjectWriter } from '../store/object-store.js';
import type { V1Layout, V1RepositoryName } from '../store/layout.js';
import { layerTooLarge, V1Error } from './errors.js';
import { ImageHolders } from './image-holders.js';
import {
  checksumsFile,
  isImageId,
  isTag,
  matchesSearch,
  mergeIndexImages,
  parseAncestry,
  parseChecksumsFile,
  parseImageJson,
  parseIndexImages,
  parseJson,
  PayloadChecksum,
  pythonJson,
  repositoryPath,
  tagJsonFromUserAgent,
  type SearchResult,
} from './grammar.js';

export type ImageState = 'absent' | 'in-progress' | 'complete';

export interface StoredImageJson {
  bytes: Buffer;
  /** The layer's size, once the layer is here. */
  layerSize: number | undefined;
  /** The payload checksums recorded for the image (`_checksum`). */
  checksums: string[];
}

export class V1Registry {
  /**
   * The repositories that have files, by `namespace/name`: read from the storage once (at the first search), then
   * kept up to date by this registry's own writes (one process owns the data directory), so a search is a filter
   * in memory, not a walk of every repository folder.
   */
  private repositoryIndex: Promise<Set<string>> | undefined;
  /**
   * Which repositories hold which images (their tags' ancestry), for authorization: read from the storage at the first
   * question, then kept up to date by this registry's writes as the repository index is.
   */
  private holderIndex: Promise<ImageHolders> | undefined;

  constructor(
    private readonly store: ObjectStore,
    private readonly layout: V1Layout,
    private readonly now: () => number = Date.now,
  ) {}

  // ---- images ----

  async imageState(id: string): Promise<ImageState> {
    if ((await this.store.stat(this.layout.imageKey(id, '_inprogress'))) !== undefined) return 'in-progress';
    return (await this.store.stat(this.layout.imageKey(id, 'json'))) === undefined ? 'absent' : 'complete';
  }

  /** A complete image's json; undefined when absent; throws IMAGE_IN_PROGRESS during its push. */
  async imageJson(id: string): Promise<StoredImageJson | undefined> {
    await this.requireCompletion(id);
    const bytes = await this.store.readBytes(this.layout.imageKey(id, 'json'));
    if (bytes === undefined) return undefined;
    const layer = await this.store.stat(this.layout.imageKey(id, 'layer'));
    return { bytes, layerSize: layer?.size, checksums: await this.checksums(id) };
  }

  async ancestry(id: string): Promise<Buffer | undefined> {
    await this.requireCompletion(id);
    return this.store.readBytes(this.layout.imageKey(id, 'ancestry'));
  }

  /** The size of a complete image's layer; undefined when it is not here. */
  async layerSize(id: string): Promise<number | undefined> {
    await this.requireCompletion(id);
    return (await this.store.stat(this.layout.imageKey(id, 'layer')))?.size;
  }

  /** The storage key of an image's layer (for a web server in front to send it). */
  layerKey(id: string): string {
    return this.layout.imageKey(id, 'layer');
  }

  /** A writer for an image's layer that streams in; commitLayer makes it visible. */
  createLayerWriter(id: string): Promise<ObjectWriter> {
    return this.store.createWriter(this.layout.imageKey(id, 'layer'));
  }

  openLayer(id: string, range?: ByteRange): Promise<Readable | undefined> {
    return this.store.read(this.layout.imageKey(id, 'layer'), range);
  }

  /** The recorded payload checksums of an image ([] when none). */
  async checksums(id: string): Promise<string[]> {
    const bytes = await this.store.readBytes(this.layout.imageKey(id, '_checksum'));
    return bytes === undefined ? [] : parseChecksumsFile(bytes);
  }

  private async requireCompletion(id: string): Promise<void> {
    if ((await this.store.stat(this.layout.imageKey(id, '_inprogress'))) !== undefined) throw new V1Error('IMAGE_IN_PROGRESS');
  }

  /** Step 1 of a push: the json, which marks the image in progress and records its ancestry. */
  async putImageJson(id: string, bytes: Buffer): Promise<void> {
    const { parent } = parseImageJson(bytes, id);
    let ancestry = [id];
    if (parent !== undefined) {
      const parentAncestry = (await this.store.stat(this.layout.imageKey(parent, 'json'))) && (await this.store.readBytes(this.layout.imageKey(parent, 'ancestry')));
      const parsed = parentAncestry && parseAncestry(parentAncestry, parent);
      if (!parsed) throw new V1Error('PARENT_UNKNOWN');
      ancestry = [id, ...parsed];
    }
    if ((await this.imageState(id)) === 'complete') throw new V1Error('IMAGE_EXISTS');
    await this.store.putBytes(this.layout.imageKey(id, '_inprogress'), Buffer.from('true'));
    // A retry after a failed push starts over.
    await this.store.delete(this.layout.imageKey(id, '_checksum'));
    await this.store.putBytes(this.layout.imageKey(id, 'json'), bytes);
    await this.store.putBytes(this.layout.imageKey(id, 'ancestry'), Buffer.from(pythonJson(ancestry)));
  }

  /** Step 2: the layer, spooled and made visible whole; its payload checksum is recorded for step 3. More than maxBytes is refused. */
  async putImageLayer(id: string, body: AsyncIterable<Uint8Array>, maxBytes: number): Promise<void> {
    const json = await this.store.readBytes(this.layout.imageKey(id, 'json'));
    if (json === undefined) throw new V1Error('IMAGE_NOT_FOUND');
    // Only an image being pushed takes a layer: not a complete one, nor one whose json a mirror cached.
    if ((await this.imageState(id)) !== 'in-progress') throw new V1Error('IMAGE_EXISTS');
    const checksum = new PayloadChecksum(json);
    const writer = await this.createLayerWriter(id);
    try {
      for await (const chunk of body) {
        if (writer.size + chunk.length > maxBytes) throw layerTooLarge(maxBytes);
        checksum.update(chunk);
        await writer.append(chunk);
      }
      await this.commitLayer(id, writer);
      await writer.close();
    } catch (error) {
      await writer.abort();
      throw error;
    }
    await this.store.putBytes(this.layout.imageKey(id, '_checksum'), checksumsFile([checksum.digest()]));
  }

  /** Step 3: the client's payload checksum; when it matches the layer's, the image is complete. */
  async putImageChecksum(id: string, header: string | undefined): Promise<void> {
    if (header === undefined) throw new V1Error('CHECKSUM_ABSENT');
    if (header.trim() === '') throw new V1Error('CHECKSUM_EMPTY');
    if ((await this.store.stat(this.layout.imageKey(id, 'json'))) === undefined) throw new V1Error('IMAGE_NOT_FOUND');
    if ((await this.imageState(id)) !== 'in-progress') throw new V1Error('CHECKSUM_NOT_SETTABLE');
    const recorded = await this.store.readBytes(this.layout.imageKey(id, '_checksum'));
    if (recorded === undefined) throw new V1Error('LAYER_NOT_UPLOADED');
    if (!parseChecksumsFile(recorded).includes(header.trim())) throw new V1Error('CHECKSUM_MISMATCH');
    await this.store.delete(this.layout.imageKey(id, '_inprogress'));
  }

  // ---- mirrored images (the caller verified what it stores) ----

  async storeImageJson(id: string, bytes: Buffer, checksums: readonly string[]): Promise<void> {
    if (checksums.length > 0) await this.store.putBytes(this.layout.imageKey(id, '_checksum'), checksumsFile(checksums));
    await this.store.putBytes(this.layout.imageKey(id, 'json'), bytes);
  }

  storeAncestry(id: string, bytes: Buffer): Promise<void> {
    return this.store.putBytes(this.layout.imageKey(id, 'ancestry'), bytes);
  }

  commitLayer(id: string, writer: ObjectWriter): Promise<void> {
    return writer.commit(this.layout.imageKey(id, 'layer'));
  }

  // ---- tags ----

  /** A repository's tags; undefined when the repository has no files at all. */
  async tags(name: V1RepositoryName): Promise<Record<string, string> | undefined> {
    const keys = await listAll(this.store, this.layout.repositoryFolder(name));
    if (keys.length === 0) return undefined;
    const tags: Record<string, string> = {};
    for (const key of keys) {
      const tag = this.layout.tagOfKey(name, key);
      const id = tag === undefined ? undefined : await this.store.readBytes(key);
      if (tag !== undefined && id !== undefined) tags[tag] = id.toString('utf8');
    }
    return tags;
  }

  async tag(name: V1RepositoryName, tag: string): Promise<string | undefined> {
    if (!isTag(tag)) return undefined;
    return (await this.store.readBytes(this.layout.tagKey(name, tag)))?.toString('utf8');
  }

  /** Points a tag at an image; the pusher's User-Agent becomes the tag json (and the repository json for latest). */
  async putTag(name: V1RepositoryName, tag: string, body: Buffer, userAgent: string): Promise<void> {
    if (!isTag(tag)) throw new V1Error('TAG_INVALID');
    const parsed = parseJson(body);
    const id = parsed.ok ? parsed.value : undefined;
    if (typeof id !== 'string' || id === '') throw new V1Error('INVALID_DATA');
    if (!isImageId(id) || (await this.store.stat(this.layout.imageKey(id, 'json'))) === undefined) throw new V1Error('IMAGE_NOT_FOUND');
    await this.store.putBytes(this.layout.tagKey(name, tag), Buffer.from(id));
    await this.indexed(name, true);
    const props = Buffer.from(pythonJson(tagJsonFromUserAgent(userAgent, this.now()), false));
    await this.store.putBytes(this.layout.tagJsonKey(name, tag), props);
    if (tag === 'latest') await this.store.putBytes(this.layout.repositoryJsonKey(name), props);
  }

  async deleteTag(name: V1RepositoryName, tag: string): Promise<void> {
    if (!isTag(tag) || (await this.store.stat(this.layout.tagKey(name, tag))) === undefined) throw new V1Error('TAG_NOT_FOUND');
    await this.store.delete(this.layout.tagKey(name, tag));
    await this.store.delete(this.layout.tagJsonKey(name, tag));
    if (tag === 'latest') await this.store.delete(this.layout.repositoryJsonKey(name));
    await this.indexed(name, await holdsAny(this.store, this.layout.repositoryFolder(name)));
  }

  /** Removes a repository's tags and files; its images stay (other repositories may share them). */
  async deleteRepository(name: V1RepositoryName): Promise<void> {
    const keys = await listAll(this.store, this.layout.repositoryFolder(name));
    if (keys.length === 0) throw new V1Error('REPOSITORY_NOT_FOUND');
    for (const key of keys) await this.store.delete(key);
    await this.indexed(name, false);
  }

  // ---- repository metadata ----

  repositoryJson(name: V1RepositoryName): Promise<Buffer | undefined> {
    return this.store.readBytes(this.layout.repositoryJsonKey(name));
  }

  async storeRepositoryJson(name: V1RepositoryName, bytes: Buffer): Promise<void> {
    await this.store.putBytes(this.layout.repositoryJsonKey(name), bytes);
    await this.indexed(name, true);
  }

  async tagJson(name: V1RepositoryName, tag: string): Promise<Buffer | undefined> {
    return isTag(tag) ? this.store.readBytes(this.layout.tagJsonKey(name, tag)) : undefined;
  }

  async isPrivate(name: V1RepositoryName): Promise<boolean> {
    return (await this.store.stat(this.layout.privateFlagKey(name))) !== undefined;
  }

  /** Records `{"access": "private"|"public"}`; access control itself comes with client authentication. */
  async setAccess(name: V1RepositoryName, body: Buffer): Promise<void> {
    const parsed = parseJson(body);
    const access = parsed.ok ? (parsed.value as { access?: unknown } | null)?.access : undefined;
    if (access === 'private') await this.store.putBytes(this.layout.privateFlagKey(name), Buffer.alloc(0));
    else if (access === 'public') await this.store.delete(this.layout.privateFlagKey(name));
    else throw new V1Error('INVALID_DATA');
    await this.indexed(name, await holdsAny(this.store, this.layout.repositoryFolder(name)));
  }

  // ---- the standalone index ----

  indexImages(name: V1RepositoryName): Promise<Buffer | undefined> {
    return this.store.readBytes(this.layout.indexImagesKey(name));
  }

  /** Adds pushed entries to a repository's image list, as docker-registry's index did. */
  async putIndexImages(name: V1RepositoryName, body: Buffer): Promise<void> {
    const parsed = parseJson(body);
    if (!parsed.ok) throw new V1Error('JSON_UNDECODABLE');
    const pushed = Array.isArray(parsed.value) ? parseIndexImages(body) : undefined;
    if (pushed === undefined) throw new V1Error('INVALID_DATA');
    const key = this.layout.indexImagesKey(name);
    const existing = await this.store.readBytes(key);
    const known = existing === undefined ? undefined : parseIndexImages(existing);
    const merged = known === undefined ? body : Buffer.from(pythonJson(mergeIndexImages(pushed, known), false));
    await this.store.putBytes(key, merged);
    await this.indexed(name, true);
  }

  /** Local repositories whose name (or description) contains the term, in lexical order. */
  async search(term: string): Promise<SearchResult[]> {
    this.repositoryIndex ??= this.readRepositoryIndex();
    const names = [...(await this.repositoryIndex)].sort();
    return names.map((name) => ({ name, description: '' })).filter((result) => matchesSearch(result, term));
  }

  private async readRepositoryIndex(): Promise<Set<string>> {
    const names = new Set<string>();
    let after: string | undefined;
    do {
      const page = await this.store.listPage(this.layout.repositoriesFolder, { after, limit: MAX_KEY_PAGE });
      for (const key of page.keys) {
        const name = this.layout.repositoryOfKey(key);
        if (name !== undefined) names.add(repositoryPath(name));
      }
      after = page.next;
    } while (after !== undefined);
    return names;
  }

  /** The local repositories (`namespace/name`) whose tags reach an image, itself or through an image's ancestry. */
  async imageHolders(id: string): Promise<string[]> {
    this.holderIndex ??= this.readHolderIndex();
    return (await this.holderIndex).holdersOf(id);
  }

  private async readHolderIndex(): Promise<ImageHolders> {
    try {
      const holders = new ImageHolders();
      this.repositoryIndex ??= this.readRepositoryIndex();
      for (const path of [...(await this.repositoryIndex)]) {
        const [namespace = '', repository = ''] = path.split('/');
        await holders.refresh(path, () => this.reach({ namespace, repository }));
      }
      return holders;
    } catch (error) {
      // Asked again, it is read again: a storage failure is not remembered.
      this.holderIndex = undefined;
      throw error;
    }
  }

  /** The images a repository's tags reach: each tagged image and its ancestors. */
  private async reach(name: V1RepositoryName): Promise<Set<string>> {
    const reached = new Set<string>();
    for (const id of Object.values((await this.tags(name)) ?? {})) {
      // An ancestor of an image already reached: its ancestry is in already.
      if (!isImageId(id) || reached.has(id)) continue;
      const ancestry = await this.store.readBytes(this.layout.imageKey(id, 'ancestry'));
      for (const ancestor of (ancestry && parseAncestry(ancestry, id)) ?? [id]) reached.add(ancestor);
    }
    return reached;
  }

  /** Keeps the repository and holder indexes (once read) in step with a write: the repository has files (present) or not. */
  private async indexed(name: V1RepositoryName, present: boolean): Promise<void> {
    if (this.repositoryIndex !== undefined) {
      const names = await this.repositoryIndex;
      if (present) names.add(repositoryPath(name));
      else names.delete(repositoryPath(name));
    }
    const holderIndex = this.holderIndex;
    if (holderIndex === undefined) return;
    try {
      await (await holderIndex).refresh(repositoryPath(name), () => this.reach(name));
    } catch {
      // The write is done; the holders of this repository could not be read again: the whole index is dropped and read
      // afresh at the next question, rather than kept stale (a deleted tag must stop granting its images).
      if (this.holderIndex === holderIndex) this.holderIndex = undefined;
    }
  }
}
