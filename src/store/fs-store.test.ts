// Runs the ObjectStore conformance suite against the fs driver, plus what only the fs driver promises.

import assert from 'node:assert/strict';
import { access, mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, it } from 'node:test';
import { digestOf } from '../oci/digest.js';
import { FsObjectStore } from './fs-store.js';
import { contentKey, TEMPORARY_FOLDER } from './layout.js';
import { objectStoreConformance } from './object-store.conformance.js';
import { StorageError } from './storage-error.js';

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
      const spool = await store.createWriter();
      assert.equal(path.dirname(spool.path), path.join(root, TEMPORARY_FOLDER));
      await spool.append(Buffer.from('spooled'));
      assert.deepEqual(await readdir(path.join(root, TEMPORARY_FOLDER)), [path.basename(spool.path)]);
      await spool.commit(contentKey(digestOf(Buffer.from('spooled'))));
      await spool.close();
      assert.deepEqual(await readdir(path.join(root, TEMPORARY_FOLDER)), []);
    } finally {
      await cleanup();
    }
  });

  it('removes stale temporary folders as well as files', async () => {
    const { store, root, cleanup } = await makeFsStore();
    try {
      await mkdir(path.join(root, TEMPORARY_FOLDER, 'upload-dir'));
      await writeFile(path.join(root, TEMPORARY_FOLDER, 'upload-dir', 'part'), 'x');
      assert.equal(await store.removeStaleTemporaries(), 1);
      assert.deepEqual(await readdir(path.join(root, TEMPORARY_FOLDER)), []);
    } finally {
      await cleanup();
    }
  });

  describe('when the filesystem refuses', () => {
    /** Asserts that work fails with a StorageError naming the operation and the system's code. */
    async function refused(work: Promise<unknown>, operation: string, code: string): Promise<void> {
      await assert.rejects(work, (error: unknown) => {
        assert.ok(error instanceof StorageError, `a StorageError, not ${String(error)}`);
        assert.equal(error.operation, operation);
        assert.equal(error.code, code);
        assert.equal((error.cause as NodeJS.ErrnoException).code, code, 'the system error is kept as the cause');
        return true;
      });
    }

    it('throws StorageError from writes, commits, reads and deletes, with the cause', async () => {
      const { store, root, cleanup } = await makeFsStore();
      try {
        // A file where a folder must be: every write below it fails as a full or broken disk would.
        await writeFile(path.join(root, 'blobs'), 'not a folder');
        const bytes = Buffer.from('refused');
        const key = contentKey(digestOf(bytes));
        await refused(store.putBytes(key, bytes), 'write', 'ENOTDIR');
        const spool = await store.createWriter();
        await spool.append(bytes);
        await refused(spool.commit(key), 'commit', 'ENOTDIR');
        await spool.abort();
        assert.deepEqual(await readdir(path.join(root, TEMPORARY_FOLDER)), [], 'a failed write leaves no temporary');

        await mkdir(path.join(root, 'v1', 'images', 'a', 'json'), { recursive: true });
        await refused(store.readBytes('v1/images/a/json'), 'read', 'EISDIR');
        await refused(store.delete('v1/images/a/json'), 'delete', 'EISDIR');
        const stream = await store.read('v1/images/a/json');
        assert.ok(stream !== undefined);
        await assert.rejects(async () => {
          for await (const _chunk of stream) assert.fail('a folder has no bytes');
        }, StorageError);
      } finally {
        await cleanup();
      }
    });

    it('throws StorageError from spools when their folder is gone', async () => {
      const { store, root, cleanup } = await makeFsStore();
      try {
        await rm(path.join(root, TEMPORARY_FOLDER), { recursive: true });
        await refused(store.createWriter(), 'create', 'ENOENT');
        await refused(store.removeStaleTemporaries(), 'remove temporaries', 'ENOENT');
        assert.deepEqual(await store.listTemporaries(), [], 'no folder of temporaries: no temporaries');
      } finally {
        await cleanup();
      }
    });
  });
});
