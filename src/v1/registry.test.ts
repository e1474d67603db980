// Tests for V1Registry's search: the repository index is read from the storage once, then follows the registry's
// own writes, so a search never walks every repository folder.

import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, it } from 'node:test';
import { FsObjectStore } from '../store/fs-store.js';
import { V1Layout } from '../store/layout.js';
import { V1Registry } from './registry.js';

/** An fs store that counts its folder listings. */
class CountingStore extends FsObjectStore {
  listings = 0;
  override list(prefix: string): Promise<string[]> {
    this.listings += 1;
    return super.list(prefix);
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
