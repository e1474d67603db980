// The faults that are not an upstream's doing: a data directory on a small tmpfs filled to the last few
// bytes, and metadata.sqlite write-locked by another process (a child holding BEGIN EXCLUSIVE).

import { mkdir, open, rm, statfs, truncate } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { runCommand, unmountUnder } from '../../test/support/commands.js';
import { startProcess, type ManagedProcess } from '../../test/support/processes.js';

const REPOSITORY_ROOT = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const PAGE_BYTES = 4096;
const FILL_CHUNK_BYTES = 1024 * 1024;

/** A tmpfs mounted at mountPoint (as root); unmount() always runs in the caller's cleanup. */
export interface SmallDisk {
  mountPoint: string;
  /** Fills the disk so that at most `free` bytes stay available (less by up to a page); the filler's path, and what is left. */
  fillLeaving(free: number): Promise<{ filler: string; available: number }>;
  unmount(): Promise<void>;
}

export async function mountSmallDisk(mountPoint: string, sizeMiB: number): Promise<SmallDisk> {
  await mkdir(mountPoint, { recursive: true });
  await runCommand('mount', ['-t', 'tmpfs', '-o', `size=${sizeMiB}m`, 'tmpfs', mountPoint]);
  return {
    mountPoint,
    fillLeaving: async (free) => {
      const filler = path.join(mountPoint, `filler-${Date.now()}`);
      const handle = await open(filler, 'w');
      const chunk = Buffer.alloc(FILL_CHUNK_BYTES, 0x5a);
      let written = 0;
      try {
        // Bounded: the disk is sizeMiB; ENOSPC ends the loop long before.
        for (let round = 0; round <= sizeMiB * 2; round++) {
          const { bytesWritten } = await handle.write(chunk, 0, chunk.length, written);
          written += bytesWritten;
          if (bytesWritten < chunk.length) break;
        }
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code !== 'ENOSPC') throw error;
      } finally {
        await handle.close();
      }
      const leftOver = await available(mountPoint);
      const giveBack = Math.max(0, Math.floor((free - leftOver) / PAGE_BYTES) * PAGE_BYTES);
      await truncate(filler, Math.max(0, written - giveBack));
      return { filler, available: await available(mountPoint) };
    },
    unmount: async () => {
      await unmountUnder(mountPoint);
      await rm(mountPoint, { recursive: true, force: true });
    },
  };
}

async function available(dir: string): Promise<number> {
  const info = await statfs(dir);
  return info.bavail * info.bsize;
}

/**
 * Another process holding a write lock on DATA/metadata.sqlite for holdMs (BEGIN EXCLUSIVE: in WAL mode
 * readers go on, every writer waits its busy timeout and then fails); resolves once the lock is held.
 */
export async function holdSqliteLock(dataDir: string, holdMs: number): Promise<{ released: Promise<void>; process: ManagedProcess }> {
  const script = [
    "const Database = require('better-sqlite3');",
    'const db = new Database(process.env.LOCK_FILE, { fileMustExist: true });',
    "db.pragma('busy_timeout = 10000');",
    "db.exec('BEGIN EXCLUSIVE');",
    "console.log('locked');",
    "setTimeout(() => { db.exec('ROLLBACK'); db.close(); console.log('released'); }, Number(process.env.HOLD_MS));",
  ].join('\n');
  // -e resolves require() from the working directory: the repository's node_modules.
  const child = startProcess(process.execPath, ['-e', script], { cwd: REPOSITORY_ROOT, env: { ...process.env, LOCK_FILE: path.join(dataDir, 'metadata.sqlite'), HOLD_MS: String(holdMs) } });
  try {
    await child.waitForLine(/^locked$/, 15_000);
  } catch (error) {
    await child.stop('SIGKILL');
    throw error;
  }
  const released = child.exited.then((code) => {
    if (code !== 0) throw new Error(`the SQLite lock holder exited ${String(code)}: ${child.lines().join('\n')}`);
  });
  return { released, process: child };
}
