// The data directory lock within one process: held once, refused with the holder's name, free once released.
// Across processes (a second server, verify beside a server, kill -9): test/data-lock.test.ts.

import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { describe, it } from 'node:test';
import { DataDirectoryInUse, DataDirectoryLock } from './data-directory-lock.js';

async function withDataDir(work: (dataDir: string) => Promise<void>): Promise<void> {
  const dataDir = await mkdtemp(path.join(os.tmpdir(), 'regmirror-lock-'));
  try {
    await work(dataDir);
  } finally {
    await rm(dataDir, { recursive: true, force: true });
  }
}

describe('DataDirectoryLock', () => {
  it('refuses a second holder, naming the first, until the first releases it', () =>
    withDataDir(async (dataDir) => {
      const first = await DataDirectoryLock.acquire(dataDir, 'regmirror serve');
      await assert.rejects(DataDirectoryLock.acquire(dataDir, 'regmirror verify'), (error: unknown) => {
        assert.ok(error instanceof DataDirectoryInUse);
        assert.deepEqual({ ...error.holder, since: undefined }, { pid: process.pid, host: os.hostname(), command: 'regmirror serve', since: undefined });
        assert.ok(Date.parse(error.holder?.since ?? '') > 0, 'since when, as a date');
        assert.match(error.message, new RegExp(`in use by regmirror serve \\(pid ${process.pid} on `));
        return true;
      });
      await first.release();
      await first.release();
      const second = await DataDirectoryLock.acquire(dataDir, 'regmirror verify');
      const holder = JSON.parse(await readFile(path.join(dataDir, 'lock.json'), 'utf8')) as { command: string };
      assert.equal(holder.command, 'regmirror verify');
      await second.release();
    }));

  it('names no holder when the holder file is stale: its process is gone', () =>
    withDataDir(async (dataDir) => {
      const lock = await DataDirectoryLock.acquire(dataDir, 'regmirror serve');
      try {
        // As if the holder had not written its file yet, and an earlier holder's (long dead) were there.
        const dead = { pid: 2 ** 22 + 1, host: os.hostname(), since: '2026-01-01T00:00:00.000Z', command: 'regmirror serve' };
        await writeFile(path.join(dataDir, 'lock.json'), JSON.stringify(dead));
        await assert.rejects(DataDirectoryLock.acquire(dataDir, 'regmirror serve'), (error: unknown) => {
          assert.ok(error instanceof DataDirectoryInUse);
          assert.equal(error.holder, undefined);
          assert.match(error.message, /in use by another process/);
          return true;
        });
      } finally {
        await lock.release();
      }
    }));
});
