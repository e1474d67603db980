// Runs the ObjectStore conformance suite against the fs driver, plus what only the fs driver promises.

import assert from 'node:assert/strict';
import { access, mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, it } from 'node:test';
import { digestOf } from '../oci/digest.js';
import { FsObjectStore } from './fs-store.js';
import { contentKey, TEMPORARY_FOLDER } from './layout.js';
import { objectStoreConformance } from './object-store.conformance.js';

async function makeFsStore(): Promise<{ store: FsObjectStore; root: string; cleanup: () => Promise<void> }> {
  const root = await mkdtemp(path.join(tmpdir(), 'regmirror-fs-store-'));
  const store = new FsObjectStore(root);
  await store.init();
  return { store, root, cleanup: () => rm(root, { recursive: true, force: true }) };
}

objectStoreConformance('fs', makeFsStore);

describe('FsObjectStore', () => {
  it('lays content out under blobs/sha256/<2 hex>/<hex> in the data directory', async () => {
    const { store, root, cleanup } = await makeFsStore();
    try {
      const bytes = Buffer.from('layout');
      const digest = digestOf(bytes);
      const hex = digest.slice('sha256:'.length);
      await store.putBytes(contentKey(digest), bytes);
      assert.equal(store.filePath(contentKey(digest)), path.join(root, 'blobs', 'sha256', hex.slice(0, 2), hex));
      await access(path.join(root, 'blobs', 'sha256', hex.slice(0, 2), hex));
    } finally {
      await cleanup();
    }
  });

  it('writes spools under tmp/ and moves them out on commit', async () => {
    const { store, root, cleanup } = await makeFsStore();
    try {
      const spool = await store.createSpool();
      assert.equal(path.dirname(spool.path), path.join(root, TEMPORARY_FOLDER));
      await spool.append(Buffer.from('spooled'));
      assert.deepEqual(await readdir(path.join(root, TEMPORARY_FOLDER)), [path.basename(spool.path)]);
      await store.commitSpool(spool, contentKey(digestOf(Buffer.from('spooled'))));
      await spool.close();
      assert.deepEqual(await readdir(path.join(root, TEMPORARY_FOLDER)), []);
    } finally {
      await cleanup();
    }
  });

  it('removes stale temporary folders as well as files', async () => {
    const { store, root, cleanup } = await makeFsStore();
    try {
      const { mkdir, writeFile } = await import('node:fs/promises');
      await mkdir(path.join(root, TEMPORARY_FOLDER, 'upload-dir'));
      await writeFile(path.join(root, TEMPORARY_FOLDER, 'upload-dir', 'part'), 'x');
      assert.equal(await store.removeStaleTemporaries(), 1);
      assert.deepEqual(await readdir(path.join(root, TEMPORARY_FOLDER)), []);
    } finally {
      await cleanup();
    }
  });
});
