// The fs ObjectStore: content files under the data directory, temporaries in tmp/ beside them, made visible
// by one atomic rename after an fsync of the file, made durable by an fsync of the folder that holds the name.

import { mkdir, open, readdir, readFile, rename, rm, stat, unlink, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { pageLimit, type ByteRange, type KeyPage, type ObjectStat, type ObjectStore, type TemporaryInfo } from './object-store.js';
import { unlimitedBudget, type BufferBudget } from '../memory/buffer-budget.js';
import { FileRangeStream } from './file-range-stream.js';
import type { SpoolFile } from './spool-file.js';
import { SpooledWriter } from './spooled-writer.js';
import { TEMPORARY_FOLDER } from './layout.js';
import { asStorageError, storageOperation, systemErrorCode } from './storage-error.js';
import { isNotFound, TemporaryFolder } from './temporary-folder.js';

export class FsObjectStore implements ObjectStore {
  private readonly temporaries: TemporaryFolder;

  /** budget: the process's send buffers, which the streams this store reads draw from. */
  constructor(
    private readonly rootDir: string,
    private readonly budget: BufferBudget = unlimitedBudget(),
  ) {
    this.temporaries = new TemporaryFolder(path.join(rootDir, TEMPORARY_FOLDER));
  }

  async init(): Promise<void> {
    await this.temporaries.init();
  }

  /** The file behind a key, for offloading to a web server. Keys come only from store/layout.ts. */
  filePath(key: string): string {
    return path.join(this.rootDir, key);
  }

  async stat(key: string): Promise<ObjectStat | undefined> {
    try {
      const info = await stat(this.filePath(key));
      return info.isFile() ? { size: info.size, modifiedAt: info.mtimeMs } : undefined;
    } catch (error) {
      if (isNotFound(error)) return undefined;
      throw asStorageError('stat', key, error);
    }
  }

  async read(key: string, range?: ByteRange): Promise<Readable | undefined> {
    let handle;
    try {
      handle = await open(this.filePath(key), 'r');
    } catch (error) {
      if (isNotFound(error)) return undefined;
      throw asStorageError('read', key, error);
    }
    return new FileRangeStream(handle, range?.start, range?.end, this.budget);
  }

  async readBytes(key: string): Promise<Buffer | undefined> {
    try {
      return await readFile(this.filePath(key));
    } catch (error) {
      if (isNotFound(error)) return undefined;
      throw asStorageError('read', key, error);
    }
  }

  async putBytes(key: string, bytes: Uint8Array): Promise<void> {
    const temporary = this.temporaries.newPath();
    try {
      await writeFile(temporary, bytes, { flush: true });
      await this.moveIntoPlace(temporary, key);
    } catch (error) {
      // The write's failure is the one to report; a temporary left behind goes at the next start.
      await rm(temporary, { force: true }).catch(() => undefined);
      throw asStorageError('write', key, error);
    }
  }

  /** A spool in tmp/ that its commit syncs and renames into place (the key is not needed before). */
  async createWriter(): Promise<SpooledWriter> {
    return new FsObjectWriter(await this.temporaries.createSpool(), (spool, key) => this.moveIntoPlace(spool.path, key));
  }

  /** None: a file is no URL (the nginx offload sends files by their key: docs/nginx.md). */
  redirectUrl(): Promise<string | undefined> {
    return Promise.resolve(undefined);
  }

  async delete(key: string): Promise<void> {
    const file = this.filePath(key);
    try {
      await unlink(file);
    } catch (error) {
      if (isNotFound(error)) return;
      throw asStorageError('delete', key, error);
    }
    // Deleting `_inprogress` is what completes a v1 push: the client is told so only once it is durable.
    await storageOperation('delete', key, () => syncFolder(path.dirname(file)));
  }

  /** A walk of the folders in key order (a folder's entries sorted as their keys sort), skipping what sorts before `after`. */
  async listPage(prefix: string, page: { after?: string | undefined; limit: number }): Promise<KeyPage> {
    const limit = pageLimit(page.limit);
    const after = page.after;
    const keys: string[] = [];
    const walk = async (folder: string): Promise<boolean> => {
      let entries;
      try {
        entries = await readdir(this.filePath(folder), { withFileTypes: true });
      } catch (error) {
        if (isNotFound(error) || systemErrorCode(error) === 'ENOTDIR') return true;
        throw asStorageError('list', folder, error);
      }
      // A folder's keys sort as its name and a '/': 'a-b' comes before 'a/x', as their keys do.
      const sorted = entries
        .filter((entry) => entry.isDirectory() || entry.isFile())
        .map((entry) => ({ entry, key: folder === '' ? entry.name : `${folder}/${entry.name}` }))
        .map(({ entry, key }) => ({ entry, key, sortKey: entry.isDirectory() ? `${key}/` : key }))
        .sort((a, b) => (a.sortKey < b.sortKey ? -1 : a.sortKey > b.sortKey ? 1 : 0));
      for (const { entry, key, sortKey } of sorted) {
        if (entry.isDirectory()) {
          // Every key inside sorts before `after` when `after` sorts past the folder without being in it.
          if (after !== undefined && after > sortKey && !after.startsWith(sortKey)) continue;
          if (!(await walk(key))) return false;
        } else if (after === undefined || key > after) {
          keys.push(key);
          if (keys.length > limit) return false;
        }
      }
      return true;
    };
    await walk(prefix.replace(/\/+$/, ''));
    const more = keys.length > limit;
    const listed = more ? keys.slice(0, limit) : keys;
    return { keys: listed, next: more ? listed.at(-1) : undefined };
  }

  async *keys(prefix: string): AsyncGenerator<string> {
    const folders = [prefix.replace(/\/+$/, '')];
    for (let folder = folders.pop(); folder !== undefined; folder = folders.pop()) {
      let entries;
      try {
        entries = await readdir(this.filePath(folder), { withFileTypes: true });
      } catch (error) {
        if (isNotFound(error) || systemErrorCode(error) === 'ENOTDIR') continue;
        throw asStorageError('list', folder, error);
      }
      for (const entry of entries) {
        const key = folder === '' ? entry.name : `${folder}/${entry.name}`;
        if (entry.isDirectory()) folders.push(key);
        else if (entry.isFile()) yield key;
      }
    }
  }

  listTemporaries(): Promise<TemporaryInfo[]> {
    return this.temporaries.list();
  }

  removeStaleTemporaries(): Promise<number> {
    return this.temporaries.removeAll();
  }

  removeTemporary(name: string): Promise<void> {
    return this.temporaries.remove(name);
  }

  /**
   * Renames a synced temporary to its key, then syncs the folder that now holds the name (and, when folders
   * were made for it, the folders holding theirs): until then a power loss may forget the rename.
   */
  private async moveIntoPlace(temporary: string, key: string): Promise<void> {
    const target = this.filePath(key);
    const folder = path.dirname(target);
    const created = await mkdir(folder, { recursive: true });
    await rename(temporary, target);
    await syncFolder(folder);
    if (created === undefined) return;
    const outermost = path.dirname(created);
    for (let parent = path.dirname(folder); ; parent = path.dirname(parent)) {
      await syncFolder(parent);
      if (parent === outermost || parent === path.dirname(parent)) break;
    }
  }
}

class FsObjectWriter extends SpooledWriter {
  constructor(
    spool: SpoolFile,
    private readonly moveIntoPlace: (spool: SpoolFile, key: string) => Promise<void>,
  ) {
    super(spool);
  }

  protected async publish(key: string): Promise<void> {
    await this.spool.sync();
    await storageOperation('commit', key, () => this.moveIntoPlace(this.spool, key));
  }

  protected async undo(): Promise<void> {}
}

/** fsync of a folder: its entries (names created, renamed, removed) reach the disk. */
async function syncFolder(folder: string): Promise<void> {
  const handle = await open(folder, 'r');
  try {
    await handle.sync();
  } catch (error) {
    // Some filesystems cannot sync a folder (and order their metadata themselves).
    if (systemErrorCode(error) !== 'EINVAL' && systemErrorCode(error) !== 'ENOTSUP') throw error;
  } finally {
    await handle.close();
  }
}
