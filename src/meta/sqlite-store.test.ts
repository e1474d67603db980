// Runs the MetadataStore conformance suite against the SQLite driver, plus what only it promises.

import assert from 'node:assert/strict';
import Database from 'better-sqlite3';
import { mkdtemp, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, it } from 'node:test';
import { digestOf } from '../oci/digest.js';
import { isSqliteFailure, MetadataError } from './metadata-error.js';
import { metadataStoreConformance } from './metadata-store.conformance.js';
import { SqliteMetadataStore } from './sqlite-store.js';
import { CHECKPOINT_BYTES } from './wal-checkpointer.js';

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
  it('writes blob reads off the hot path: nothing before the flush, everything by the close', async () => {
    const { store, file, cleanup } = await makeSqliteStore();
    const digest = digestOf(Buffer.from('read often'));
    await store.putBlob(digest, 42, 1_000);
    const watcher = new Database(file, { readonly: true });
    try {
      for (let read = 1; read <= 100; read++) await store.touchBlob(digest, 1_000 + read);
      const row = (): unknown => watcher.prepare('SELECT last_access FROM blobs WHERE digest = ?').get(digest);
      assert.deepEqual(row(), { last_access: 1_000 }, '100 reads, no write yet');
      await store.close();
      assert.deepEqual(row(), { last_access: 1_100 }, 'the latest read, written at the close');
    } finally {
      watcher.close();
      await cleanup();
    }
  });

  it('opens a database an earlier version made: manifests get a last read, as recent as their record', async () => {
    const { store, file, cleanup } = await makeSqliteStore();
    await store.close();
    const old = new Database(file);
    const digest = digestOf(Buffer.from('old manifest'));
    old.exec('DROP TABLE manifests; CREATE TABLE manifests (digest TEXT PRIMARY KEY, media_type TEXT NOT NULL, size INTEGER NOT NULL, created_at INTEGER NOT NULL) WITHOUT ROWID');
    old.prepare('INSERT INTO manifests VALUES (?, ?, ?, ?)').run(digest, 'application/vnd.oci.image.manifest.v1+json', 9, 5_000);
    old.close();
    const reopened = new SqliteMetadataStore(file);
    try {
      assert.deepEqual((await reopened.graph()).manifests, [{ digest, size: 9, lastAccess: 5_000, references: [] }]);
      await reopened.touchManifest(digest, 6_000);
      await reopened.flushAccess();
      assert.equal((await reopened.graph()).manifests[0]?.lastAccess, 6_000);
    } finally {
      await reopened.close();
      await cleanup();
    }
  });

  it('opens a database made before holders and totals were counted: each record gets the count of what references it, the totals their sums', async () => {
    const { store, file, cleanup } = await makeSqliteStore();
    const layer = digestOf(Buffer.from('layer'));
    const image = digestOf(Buffer.from('image'));
    await store.putBlob(layer, 10, 1_000);
    await store.putManifest({ digest: image, mediaType: 'application/vnd.oci.image.manifest.v1+json', size: 5 }, 1_000, { references: [{ digest: layer, role: 'layer' }] });
    await store.close();
    const old = new Database(file);
    old.exec('DROP TRIGGER reference_holds; DROP TRIGGER reference_releases; DROP TRIGGER blob_holders; DROP TRIGGER manifest_holders');
    for (const kind of ['blob', 'manifest']) old.exec(`DROP TRIGGER ${kind}_counted; DROP TRIGGER ${kind}_uncounted; DROP TRIGGER ${kind}_resized`);
    old.exec('DROP TABLE content_totals');
    old.exec('DROP INDEX blob_roots_by_last_access; DROP INDEX manifest_roots_by_last_access; ALTER TABLE blobs DROP COLUMN holders; ALTER TABLE manifests DROP COLUMN holders');
    old.close();
    const reopened = new SqliteMetadataStore(file);
    try {
      assert.deepEqual(await reopened.totals(), { blobs: 1, blobBytes: 10, manifests: 1, manifestBytes: 5 }, 'totals summed from the records');
      assert.deepEqual((await reopened.rootsByLastRead(undefined, 10)).map((root) => root.digest), [image], 'the layer is held');
      assert.equal((await reopened.heldBy(image))[0]?.holders, 1);
    } finally {
      await reopened.close();
      await cleanup();
    }
  });

  it('checkpoints its log on a worker thread, never inside a commit on the event loop', async () => {
    const { store, file, cleanup } = await makeSqliteStore();
    try {
      const databaseBytes = async (): Promise<number> => (await stat(file)).size;
      const before = await databaseBytes();
      // 6 MiB of commits in one synchronous stretch: past the log's limit, with no turn of the loop for the worker.
      for (let index = 0; index < 96; index++) await store.putDocument(`document ${index}`, Buffer.alloc(64 * 1024, index), 1_000);
      assert.ok((await stat(`${file}-wal`)).size > CHECKPOINT_BYTES, 'the log grew past its limit');
      assert.equal(await databaseBytes(), before, 'no commit checkpointed it');
      const deadline = Date.now() + 10_000;
      while ((await databaseBytes()) < 6 * 1024 * 1024 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 100));
      assert.ok((await databaseBytes()) >= 6 * 1024 * 1024, 'the worker copied the log into the database');
      assert.equal((await store.getDocument('document 95'))?.body.length, 64 * 1024);
    } finally {
      await cleanup();
    }
  });

  it('keeps its log from growing with what is committed while commits keep coming', async () => {
    const { store, file, cleanup } = await makeSqliteStore();
    try {
      const body = Buffer.alloc(64 * 1024, 7);
      let written = 0;
      // Commits for 3.5 s (three checkpoints at least) in bursts of 50 ms, the loop let run between them, so that
      // the worker copies while commits come; bounded by a count too.
      const until = Date.now() + 3_500;
      for (let index = 0; index < 50_000 && Date.now() < until; ) {
        const burst = Date.now() + 50;
        while (index < 50_000 && Date.now() < burst) {
          await store.putDocument(`document ${index % 200}`, body, index);
          written += body.length;
          index += 1;
        }
        await new Promise((resolve) => setImmediate(resolve));
      }
      const logBytes = (await stat(`${file}-wal`).catch(() => ({ size: 0 }))).size;
      assert.ok(written > 3 * CHECKPOINT_BYTES, `${written} bytes committed`);
      assert.ok(logBytes < written / 2, `the log holds ${logBytes} of the ${written} bytes committed`);
    } finally {
      await cleanup();
    }
  });

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

  it('throws MetadataError, with the cause, when its file is not a database', async () => {
    const directory = await mkdtemp(path.join(tmpdir(), 'regmirror-sqlite-'));
    try {
      const file = path.join(directory, 'metadata.db');
      await writeFile(file, Buffer.alloc(8192, 'not a database '));
      assert.throws(
        () => new SqliteMetadataStore(file),
        (error: unknown) => error instanceof MetadataError && error.operation === 'open' && error.code === 'SQLITE_NOTADB' && error.cause instanceof Error,
      );
    } finally {
      await rm(directory, { recursive: true, force: true });
    }
  });

  /** A store on a fresh file, and another connection to the same file (which the test makes hold the lock). */
  async function withOtherConnection(busyTimeoutMs: number, work: (store: SqliteMetadataStore, other: Database.Database) => Promise<void>): Promise<void> {
    const directory = await mkdtemp(path.join(tmpdir(), 'regmirror-sqlite-'));
    const file = path.join(directory, 'metadata.db');
    const store = new SqliteMetadataStore(file, { busyTimeoutMs });
    const other = new Database(file);
    try {
      await work(store, other);
    } finally {
      other.close();
      await store.close();
      await rm(directory, { recursive: true, force: true });
    }
  }

  it('throws MetadataError when another connection keeps the database busy past the timeout', async () => {
    await withOtherConnection(50, async (store, other) => {
      other.exec('BEGIN IMMEDIATE');
      await assert.rejects(store.putBlob(digestOf(Buffer.from('busy')), 1, 1), (error: unknown) => {
        assert.ok(error instanceof MetadataError);
        assert.equal(error.operation, 'putBlob');
        assert.equal(error.code, 'SQLITE_BUSY');
        return true;
      });
      other.exec('ROLLBACK');
      await store.putBlob(digestOf(Buffer.from('busy')), 1, 1);
    });
  });

  it('waits for a busy database between tries, with the event loop free, and keeps statements in order', async () => {
    await withOtherConnection(10_000, async (store, other) => {
      const repository = { registry: 'docker.io', name: 'library/app' };
      other.exec('BEGIN IMMEDIATE');
      const first = store.putTag(repository, 'latest', { digest: digestOf(Buffer.from('a')), fetchedAt: 1 });
      const second = store.putTag(repository, 'latest', { digest: digestOf(Buffer.from('b')), fetchedAt: 2 });
      const read = store.getTag(repository, 'latest');
      // The lock is let go by a timer of this very process: it can only fire if the wait does not hold the thread.
      setTimeout(() => other.exec('COMMIT'), 300);
      await Promise.all([first, second]);
      assert.equal((await read)?.digest, digestOf(Buffer.from('b')), 'the read asked after both writes sees the second');
      assert.equal((await store.getTag(repository, 'latest'))?.fetchedAt, 2);
    });
  });

  it('tells database failures from bugs by their code', () => {
    for (const code of ['SQLITE_BUSY', 'SQLITE_FULL', 'SQLITE_IOERR', 'SQLITE_IOERR_WRITE', 'SQLITE_CORRUPT', 'SQLITE_READONLY', 'SQLITE_CANTOPEN']) {
      assert.equal(isSqliteFailure(Object.assign(new Error(code), { code })), true, code);
    }
    for (const code of ['SQLITE_CONSTRAINT_PRIMARYKEY', 'SQLITE_ERROR', 'SQLITE_MISUSE', 'SQLITE_RANGE', 'SQLITE_BUSYNESS']) {
      assert.equal(isSqliteFailure(Object.assign(new Error(code), { code })), false, code);
    }
    assert.equal(isSqliteFailure(new TypeError('a bug')), false);
  });
});
