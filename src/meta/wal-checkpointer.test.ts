// The checkpointer's reading of the wal-index (against SQLite's own figures, on real databases) and its decisions
// to start and stop the worker thread.

import assert from 'node:assert/strict';
import Database from 'better-sqlite3';
import { mkdtemp, rm, stat, writeFile } from 'node:fs/promises';
import { endianness, tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { CHECKPOINT_BYTES, LOG_FILE_LIMIT_BYTES, nextStep, readWalIndex, WalCheckpointer } from './wal-checkpointer.js';

let directory = '';
before(async () => {
  directory = await mkdtemp(path.join(tmpdir(), 'regmirror-wal-'));
});
after(async () => {
  await rm(directory, { recursive: true, force: true });
});

/** A database in WAL mode that never checkpoints by itself, with a table of blobs to write. */
function openDatabase(name: string, pageSize = 4096): { db: Database.Database; file: string } {
  const file = path.join(directory, name);
  const db = new Database(file);
  db.pragma(`page_size = ${pageSize}`);
  db.pragma('journal_mode = WAL');
  db.pragma('wal_autocheckpoint = 0');
  db.exec('CREATE TABLE IF NOT EXISTS documents (key INTEGER PRIMARY KEY, body BLOB NOT NULL)');
  return { db, file };
}

/** Commits `count` rows of `bytes` each, one transaction per row. */
function commit(db: Database.Database, count: number, bytes: number): void {
  const insert = db.prepare('INSERT OR REPLACE INTO documents (key, body) VALUES (?, ?)');
  for (let index = 0; index < count; index++) insert.run(index, Buffer.alloc(bytes, index));
}

type CheckpointResult = Array<{ busy: number; log: number; checkpointed: number }>;

describe('readWalIndex', () => {
  it('reads the frames written and copied as SQLite counts them', async () => {
    const { db, file } = openDatabase('counts.db');
    try {
      commit(db, 40, 3000);
      const written = await readWalIndex(file);
      const frameBytes = 4096 + 24;
      const walBytes = (await stat(`${file}-wal`)).size;
      assert.deepEqual(written, { frames: (walBytes - 32) / frameBytes, copied: 0, pageBytes: 4096 });
      const [result] = db.pragma('wal_checkpoint(PASSIVE)') as CheckpointResult;
      assert.ok(result !== undefined && result.log > 40, `${JSON.stringify(result)}`);
      assert.deepEqual(await readWalIndex(file), { frames: result.log, copied: result.checkpointed, pageBytes: 4096 });
      assert.equal(result.checkpointed, result.log, 'all copied');
      // The next commit starts the log again from its first frame.
      commit(db, 1, 100);
      const restarted = await readWalIndex(file);
      assert.ok(restarted !== undefined && restarted.frames > 0 && restarted.frames < 5 && restarted.copied === 0, JSON.stringify(restarted));
    } finally {
      db.close();
    }
  });

  it('counts what a reader of another connection holds back from a checkpoint as not copied', async () => {
    const { db, file } = openDatabase('reader.db');
    const reader = new Database(file);
    try {
      commit(db, 10, 3000);
      reader.exec('BEGIN');
      reader.prepare('SELECT count(*) FROM documents').get();
      commit(db, 10, 3000);
      const [result] = db.pragma('wal_checkpoint(PASSIVE)') as CheckpointResult;
      assert.ok(result !== undefined && result.checkpointed > 0 && result.checkpointed < result.log, JSON.stringify(result));
      assert.deepEqual(await readWalIndex(file), { frames: result.log, copied: result.checkpointed, pageBytes: 4096 });
      reader.exec('COMMIT');
    } finally {
      reader.close();
      db.close();
    }
  });

  it('reads 64 KiB pages (written 1 in the header)', async () => {
    const { db, file } = openDatabase('large-pages.db', 65_536);
    try {
      commit(db, 3, 100);
      const index = await readWalIndex(file);
      assert.equal(index?.pageBytes, 65_536);
      assert.equal(index.frames, ((await stat(`${file}-wal`)).size - 32) / (65_536 + 24));
    } finally {
      db.close();
    }
  });

  it('answers nothing while the two copies of the header differ (SQLite is writing it)', async () => {
    const file = path.join(directory, 'torn.db');
    const header = Buffer.alloc(136);
    const write32 = (value: number, offset: number): number =>
      endianness() === 'LE' ? header.writeUInt32LE(value, offset) : header.writeUInt32BE(value, offset);
    for (const copy of [0, 48]) {
      write32(3007000, copy);
      header[copy + 12] = 1;
      write32(copy === 0 ? 20 : 19, copy + 16);
    }
    await writeFile(`${file}-shm`, header);
    assert.equal(await readWalIndex(file), undefined);
    write32(20, 48 + 16);
    await writeFile(`${file}-shm`, header);
    assert.deepEqual(await readWalIndex(file), { frames: 20, copied: 0, pageBytes: 0 });
  });

  it('throws on a missing, short or foreign wal-index', async () => {
    const file = path.join(directory, 'foreign.db');
    await assert.rejects(readWalIndex(file), { code: 'ENOENT' });
    await writeFile(`${file}-shm`, Buffer.alloc(50));
    await assert.rejects(readWalIndex(file), /shorter than its header/);
    await writeFile(`${file}-shm`, Buffer.alloc(136, 0xff));
    await assert.rejects(readWalIndex(file), /has version 4294967295/);
  });
});

describe('nextStep', () => {
  const pages = (frames: number, copied: number, fileBytes = frames * 4120, writtenSinceCheckpoint = true) => ({
    frames,
    copied,
    pageBytes: 4096,
    fileBytes,
    writtenSinceCheckpoint,
  });
  const stopped = { running: false, idleMs: 0, idleLimitMs: 30_000 };
  const threshold = CHECKPOINT_BYTES / 4096;

  it('checkpoints whatever is left once something was written, nothing when all is copied', () => {
    assert.equal(nextStep(pages(1, 0), stopped), 'checkpoint');
    assert.equal(nextStep(pages(threshold + 10, 10), stopped), 'checkpoint');
    assert.equal(nextStep(pages(3, 0, LOG_FILE_LIMIT_BYTES + 1), stopped), 'checkpoint');
    assert.equal(nextStep(pages(5_000, 5_000), stopped), 'none');
    assert.equal(nextStep(pages(3, 3, LOG_FILE_LIMIT_BYTES + 1), stopped), 'none');
  });

  it('does not try again a log unwritten since its last checkpoint', () => {
    assert.equal(nextStep(pages(threshold * 2, 0, undefined, false), stopped), 'none');
  });

  it('stops a worker idle for its limit, never one with work', () => {
    assert.equal(nextStep(pages(10, 10), { running: true, idleMs: 29_999, idleLimitMs: 30_000 }), 'none');
    assert.equal(nextStep(pages(10, 10), { running: true, idleMs: 30_000, idleLimitMs: 30_000 }), 'stop');
    assert.equal(nextStep(pages(threshold, 0), { running: true, idleMs: 60_000, idleLimitMs: 30_000 }), 'checkpoint');
  });
});

describe('WalCheckpointer', () => {
  it('starts the worker once something is written, copies it all, and stops it when idle', async () => {
    const { db, file } = openDatabase('worker.db');
    const failures: Error[] = [];
    const checkpointer = new WalCheckpointer(file, (work) => work(), (error) => failures.push(error), 200);
    try {
      commit(db, 20, 3000);
      await checkpointer.check();
      assert.equal(checkpointer.workerRunning, true, 'a few pages start the worker: the log is kept short');
      const few = await readWalIndex(file);
      assert.ok(few !== undefined && few.frames > 0 && few.copied === few.frames, JSON.stringify(few));

      commit(db, 1_200, 3000);
      await checkpointer.check();
      assert.equal(checkpointer.workerRunning, true, 'and many');
      const copied = await readWalIndex(file);
      assert.ok(copied !== undefined && copied.frames > CHECKPOINT_BYTES / 4096 && copied.copied === copied.frames, JSON.stringify(copied));

      await checkpointer.check();
      assert.equal(checkpointer.workerRunning, true, 'kept while idle for less than its limit');
      await new Promise((resolve) => setTimeout(resolve, 250));
      await checkpointer.check();
      assert.equal(checkpointer.workerRunning, false, 'stopped once idle for its limit');

      commit(db, 1_200, 3000);
      await checkpointer.check();
      assert.equal(checkpointer.workerRunning, true, 'started again for the next checkpoint');
      const again = await readWalIndex(file);
      assert.ok(again !== undefined && again.copied === again.frames, JSON.stringify(again));
      assert.deepEqual(failures, [], 'stopping on purpose is no failure');
    } finally {
      await checkpointer.close();
      db.close();
    }
    assert.equal(checkpointer.workerRunning, false);
    assert.deepEqual(failures, []);
  });
});
