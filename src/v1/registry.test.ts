// Tests for V1Registry's indexes: the repository index (search) and the image holders (authorization) are read from
// the storage once, then follow the registry's own writes, so a question never walks every repository folder.

import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, it } from 'node:test';
import { FsObjectStore } from '../store/fs-store.js';
import { V1Layout } from '../store/layout.js';
import type { KeyPage } from '../store/object-store.js';
import { V1Registry } from './registry.js';

/** An fs store that counts its folder listings. */
class CountingStore extends FsObjectStore {
  listings = 0;
  override listPage(prefix: string, page: { after?: string | undefined; limit: number }): Promise<KeyPage> {
    this.listings += 1;
    return super.listPage(prefix, page);
  }
}

const images = Buffer.from('[{"id": "' + 'a'.repeat(64) + '"}]');

describe('V1Registry search', () => {
  it('reads the repository index once, then follows pushes and deletes', async () => {
    const root = await mkdtemp(path.join(tmpdir(), 'regmirror-v1-search-'));
    try {
      const store = new CountingStore(root);
      await store.init();
      const registry = new V1Registry(store, new V1Layout('v1'));
      await registry.putIndexImages({ namespace: 'team', repository: 'app' }, images);
      await registry.putIndexImages({ namespace: 'library', repository: 'busybox' }, images);
      assert.deepEqual(await registry.search(''), [
        { name: 'library/busybox', description: '' },
        { name: 'team/app', description: '' },
      ]);
      const afterFirstSearch = store.listings;
      assert.deepEqual(await registry.search('app'), [{ name: 'team/app', description: '' }]);
      await registry.putIndexImages({ namespace: 'team', repository: 'web' }, images);
      await registry.deleteRepository({ namespace: 'library', repository: 'busybox' });
      const listingsOfDelete = 1;
      assert.deepEqual(await registry.search(''), [
        { name: 'team/app', description: '' },
        { name: 'team/web', description: '' },
      ]);
      assert.equal(store.listings, afterFirstSearch + listingsOfDelete, 'searches after the first list nothing');

      // A new process reads what the storage holds.
      const reopened = new V1Registry(new FsObjectStore(root), new V1Layout('v1'));
      assert.deepEqual((await reopened.search('')).map((result) => result.name), ['team/app', 'team/web']);
    } finally {
      await rm(root, { recursive: true, force: true });
    }
  });
});

describe('V1Registry image holders', () => {
  const id = (label: string): string => createHash('sha256').update(label).digest('hex');
  const imageJson = (image: string, parent?: string): Buffer => Buffer.from(JSON.stringify({ id: image, ...(parent === undefined ? {} : { parent }) }));

  /** Pushes an image whole: json, an empty layer, and its checksum. */
  async function push(registry: V1Registry, image: string, parent?: string): Promise<void> {
    const json = imageJson(image, parent);
    await registry.putImageJson(image, json);
    await registry.putImageLayer(image, (async function* () {})(), 1024);
    await registry.putImageChecksum(image, `sha256:${createHash('sha256').update(json).update('\n').digest('hex')}`);
  }

  it('holds an image in every repository whose tags reach it, following tags and deletes', async () => {
    const root = await mkdtemp(path.join(tmpdir(), 'regmirror-v1-holders-'));
    try {
      const store = new CountingStore(root);
      await store.init();
      const registry = new V1Registry(store, new V1Layout('v1'));
      const [base, app, web] = [id('base'), id('app'), id('web')];
      await push(registry, base);
      await push(registry, app, base);
      await push(registry, web, base);
      const team = (repository: string): { namespace: string; repository: string } => ({ namespace: 'team', repository });
      await registry.putTag(team('app'), 'latest', Buffer.from(JSON.stringify(app)), '');
      assert.deepEqual(await registry.imageHolders(base), ['team/app']);
      assert.deepEqual(await registry.imageHolders(web), [], 'an image no tag reaches');
      await registry.putTag(team('web'), 'v1', Buffer.from(JSON.stringify(web)), '');
      assert.deepEqual(await registry.imageHolders(base), ['team/app', 'team/web']);
      assert.deepEqual(await registry.imageHolders(web), ['team/web']);
      await registry.deleteTag(team('app'), 'latest');
      assert.deepEqual(await registry.imageHolders(base), ['team/web']);
      assert.deepEqual(await registry.imageHolders(app), [], 'a deleted tag stops holding its images');
      await registry.putTag(team('app'), 'latest', Buffer.from(JSON.stringify(app)), '');
      await registry.deleteRepository(team('web'));
      const beforeQuestions = store.listings;
      assert.deepEqual(await registry.imageHolders(base), ['team/app']);
      assert.deepEqual(await registry.imageHolders(web), []);
      assert.equal(store.listings, beforeQuestions, 'questions after the first list nothing');

      const reopened = new V1Registry(new FsObjectStore(root), new V1Layout('v1'));
      assert.deepEqual(await reopened.imageHolders(base), ['team/app'], 'a new process reads what the storage holds');
    } finally {
      await rm(root, { recursive: true, force: true });
    }
  });
});
