// The local folder of temporaries a store writes before it commits (spools; the fs store's files on their way
// into place): fresh names, what is there now, and the removal of what a crash left. Shared by the fs and s3 stores.

import { mkdir, readdir, rm, stat } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import type { TemporaryInfo } from './object-store.js';
import { SpoolFile } from './spool-file.js';
import { TEMPORARY_FOLDER } from './layout.js';
import { storageOperation, systemErrorCode } from './storage-error.js';

export class TemporaryFolder {
  /** dir: the folder itself (TEMPORARY_FOLDER of a data directory); errors name it as TEMPORARY_FOLDER. */
  constructor(readonly dir: string) {}

  async init(): Promise<void> {
    await storageOperation('init', TEMPORARY_FOLDER, () => mkdir(this.dir, { recursive: true }));
  }

  /** A name no other temporary has, in the folder. */
  newPath(): string {
    return path.join(this.dir, `${Date.now()}-${randomBytes(8).toString('hex')}`);
  }

  createSpool(): Promise<SpoolFile> {
    return SpoolFile.create(this.newPath());
  }

  async list(): Promise<TemporaryInfo[]> {
    return storageOperation('list', TEMPORARY_FOLDER, async () => {
      const temporaries: TemporaryInfo[] = [];
      const entries = await readdir(this.dir, { withFileTypes: true }).catch((error: unknown) => {
        if (isNotFound(error)) return [];
        throw error;
      });
      for (const entry of entries) {
        const info = await stat(path.join(this.dir, entry.name)).catch((error: unknown) => {
          if (isNotFound(error)) return undefined;
          throw error;
        });
        if (info !== undefined) temporaries.push({ name: entry.name, size: info.isFile() ? info.size : 0, modifiedAt: info.mtimeMs });
      }
      return temporaries;
    });
  }

  /** Removes everything in the folder (files and folders); returns how many entries it removed. */
  async removeAll(): Promise<number> {
    return storageOperation('remove temporaries', TEMPORARY_FOLDER, async () => {
      const names = await readdir(this.dir);
      await Promise.all(names.map((name) => rm(path.join(this.dir, name), { force: true, recursive: true })));
      return names.length;
    });
  }

  /** Removes one entry by the name list() gave; nothing when it is already gone. */
  async remove(name: string): Promise<void> {
    // One entry of the folder, never a path out of it.
    if (name === '' || name.includes('/') || name === '.' || name === '..') throw new Error(`not a temporary's name: ${name}`);
    await storageOperation('remove temporary', `${TEMPORARY_FOLDER}/${name}`, () => rm(path.join(this.dir, name), { force: true, recursive: true }));
  }
}

export function isNotFound(error: unknown): boolean {
  return systemErrorCode(error) === 'ENOENT';
}
