// Opens the ObjectStore the settings choose: fs in the data directory (the default), or s3, whose module and the
// AWS SDK under it are loaded only then, so a process on fs does not carry them. Spools stay in the data directory.

import path from 'node:path';
import type { BufferBudget } from '../memory/buffer-budget.js';
import { FsObjectStore } from './fs-store.js';
import { TEMPORARY_FOLDER } from './layout.js';
import type { ObjectStore } from './object-store.js';
import type { S3StoreSettings } from './s3-store.js';

/** Where content lives: the data directory, or an S3 bucket (spools, temporaries and metadata stay in the data directory). */
export type StorageSettings = { driver: 'fs' } | { driver: 's3'; s3: S3StoreSettings };

export interface OpenedStore {
  store: ObjectStore;
  /** Where the content is, for the log: the data directory, or s3://bucket/prefix at the endpoint. Never credentials. */
  location: string;
  /** Lets go of the store's connections. */
  close(): void;
}

/** dataDir: absolute; budget: the send buffers that the fs store's streams draw from. */
export async function openObjectStore(storage: StorageSettings, dataDir: string, budget?: BufferBudget): Promise<OpenedStore> {
  if (storage.driver === 'fs') {
    const store = new FsObjectStore(dataDir, budget);
    await store.init();
    return { store, location: dataDir, close: () => undefined };
  }
  const { S3ObjectStore } = await import('./s3-store.js');
  const s3 = storage.s3;
  const store = new S3ObjectStore(s3, path.join(dataDir, TEMPORARY_FOLDER));
  try {
    await store.init();
  } catch (error) {
    store.close();
    throw error;
  }
  const location = `s3://${s3.bucket}/${s3.prefix}${s3.endpoint === undefined ? '' : ` at ${s3.endpoint}`}`;
  return { store, location, close: () => store.close() };
}
