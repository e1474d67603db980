// Runs the MetadataStore conformance suite against the SQLite driver, plus what only it promises.

import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, it } from 'node:test';
import { digestOf } from '../oci/digest.js';
import { metadataStoreConformance } from './metadata-store.conformance.js';
import { SqliteMetadataStore } from './sqlite-store.js';

async function makeSqliteStore(): Promise<{ store: SqliteMetadataStore; file: string; cleanup: () => Promise<void> }> {
  const directory = await mkdtemp(path.join(tmpdir(), 'regmirror-sqlite-'));
  const file = path.join(directory, 'metadata.db');
  const store = new SqliteMetadataStore(file);
  return {
    store,
    file,
    cleanup: async () => {
      await store.close();
      await rm(directory, { recursive: true, force: true });
    },
  };
}

metadataStoreConformance('sqlite', makeSqliteStore);

describe('SqliteMetadataStore', () => {
  it('keeps what it holds across a reopen of its file', async () => {
    const { store, file, cleanup } = await makeSqliteStore();
    const digest = digestOf(Buffer.from('persisted'));
    const repository = { registry: 'docker.io', name: 'library/alpine' };
    await store.putBlob(digest, 42, 1_000);
    await store.putTag(repository, 'latest', { digest, fetchedAt: 2_000 });
    await store.addRepository(repository, 3_000);
    await store.close();
    const reopened = new SqliteMetadataStore(file);
    try {
      assert.deepEqual(await reopened.getBlob(digest), { digest, size: 42, lastAccess: 1_000 });
      assert.deepEqual(await reopened.getTag(repository, 'latest'), { digest, fetchedAt: 2_000 });
      assert.equal(await reopened.hasRepository(repository), true);
    } finally {
      await reopened.close();
      // cleanup closes the first store again (a no-op for better-sqlite3) and removes the directory.
      await cleanup();
    }
  });
});
