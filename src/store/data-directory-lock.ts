// One process per data directory: a kernel lock that dies with its holder, even by kill -9 (SQLite's fcntl
// lock on DATA/lock.sqlite, held by an exclusive transaction left open), and DATA/lock.json saying who holds it.

import Database from 'better-sqlite3';
import { readFile, rename, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { isSqliteFailure, MetadataError } from '../meta/metadata-error.js';
import { storageOperation } from './storage-error.js';

const LOCK_FILE = 'lock.sqlite';
const HOLDER_FILE = 'lock.json';

export interface LockHolder {
  pid: number;
  host: string;
  /** When it took the lock (ISO 8601). */
  since: string;
  /** What it runs: `regmirror serve`, `regmirror verify`. */
  command: string;
}

/** Another process holds the data directory. */
export class DataDirectoryInUse extends Error {
  override readonly name = 'DataDirectoryInUse';

  constructor(
    readonly dataDir: string,
    /** Who, when it said so (and is still running, as far as this host can tell). */
    readonly holder: LockHolder | undefined,
  ) {
    super(
      holder === undefined
        ? `data directory ${dataDir} is in use by another process (which has not said who it is)`
        : `data directory ${dataDir} is in use by ${holder.command} (pid ${holder.pid} on ${holder.host}, since ${holder.since})`,
    );
  }
}

export class DataDirectoryLock {
  private constructor(
    private readonly db: Database.Database,
    private readonly dataDir: string,
  ) {}

  /** Takes the data directory (which must exist) for this process, or throws DataDirectoryInUse naming the holder. */
  static async acquire(dataDir: string, command: string): Promise<DataDirectoryLock> {
    let db: Database.Database | undefined;
    try {
      // No busy wait: a held lock is refused at once.
      db = new Database(path.join(dataDir, LOCK_FILE), { timeout: 0 });
      db.pragma('locking_mode = EXCLUSIVE');
      db.exec('BEGIN EXCLUSIVE');
    } catch (error) {
      db?.close();
      if ((error as { code?: unknown }).code === 'SQLITE_BUSY') throw new DataDirectoryInUse(dataDir, await readHolder(dataDir));
      throw isSqliteFailure(error) ? new MetadataError('lock the data directory', error) : error;
    }
    const lock = new DataDirectoryLock(db, dataDir);
    try {
      await writeHolder(dataDir, { pid: process.pid, host: os.hostname(), since: new Date().toISOString(), command });
    } catch (error) {
      await lock.release();
      throw error;
    }
    return lock;
  }

  /** Gives the data directory up (a process that exits gives it up anyway). */
  async release(): Promise<void> {
    if (!this.db.open) return;
    await rm(path.join(this.dataDir, HOLDER_FILE), { force: true });
    this.db.exec('ROLLBACK');
    this.db.close();
  }
}

async function writeHolder(dataDir: string, holder: LockHolder): Promise<void> {
  const file = path.join(dataDir, HOLDER_FILE);
  const temporary = `${file}.${process.pid}`;
  // Renamed into place: a refused process never reads half of it.
  await storageOperation('write', HOLDER_FILE, async () => {
    await writeFile(temporary, `${JSON.stringify(holder)}\n`);
    await rename(temporary, file);
  });
}

/**
 * The holder as its file says, unless the file is unreadable or stale: a holder that took the lock a moment
 * ago may not have written it yet, and then it names an earlier holder, whose process is gone.
 */
async function readHolder(dataDir: string): Promise<LockHolder | undefined> {
  let holder: Partial<LockHolder>;
  try {
    holder = JSON.parse(await readFile(path.join(dataDir, HOLDER_FILE), 'utf8')) as Partial<LockHolder>;
  } catch {
    // Not written yet (the holder took the lock a moment ago), or unreadable: the holder is unknown.
    return undefined;
  }
  const { pid, host, since, command } = holder;
  if (typeof pid !== 'number' || typeof host !== 'string' || typeof since !== 'string' || typeof command !== 'string') return undefined;
  if (host === os.hostname() && !isRunning(pid)) return undefined;
  return { pid, host, since, command };
}

function isRunning(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    // EPERM: it runs, as another user.
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}
