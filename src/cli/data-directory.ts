// What the offline commands (`regmirror verify`, `regmirror gc`) share: the settings, the data directory held
// with its lock (so never beside a running server), its metadata opened and closed, and the exit statuses:
// 2 for bad usage or a directory in use or missing, 1 when the storage or the database failed underneath.

import { stat } from 'node:fs/promises';
import path from 'node:path';
import { ConfigError } from '../config/config-error.js';
import { loadSettings, type ConfigFlags, type Settings } from '../config/load.js';
import { MetadataError } from '../meta/metadata-error.js';
import type { MetadataStore } from '../meta/metadata-store.js';
import { openMetadataStore } from '../meta/open-metadata-store.js';
import { DataDirectoryInUse, DataDirectoryLock } from '../store/data-directory-lock.js';
import type { ObjectStore } from '../store/object-store.js';
import { openObjectStore } from '../store/open-object-store.js';
import { StorageError } from '../store/storage-error.js';
import { describeError } from './describe-error.js';

export interface Output {
  out(line: string): void;
  err(line: string): void;
}

export const STANDARD_OUTPUT: Output = {
  out: (line) => process.stdout.write(`${line}\n`),
  err: (line) => process.stderr.write(`${line}\n`),
};

export interface HeldDataDirectory {
  settings: Settings;
  /** Absolute. */
  dataDir: string;
  /** The content, where the settings keep it (the data directory, or a bucket). */
  store: ObjectStore;
  meta: MetadataStore;
}

/** Runs work on the data directory the flags name, holding its lock; resolves with the exit status. */
export async function withDataDirectory(
  flags: Pick<ConfigFlags, 'config' | 'flavor' | 'data'>,
  /** removes: the command deletes content or records (then it refuses to run beside a cluster's live nodes). */
  command: { command: string; name: string; output: Output; removes: boolean },
  work: (held: HeldDataDirectory) => Promise<number>,
): Promise<number> {
  const { output } = command;
  let settings;
  try {
    settings = loadSettings({ config: flags.config, flavor: flags.flavor, data: flags.data }).settings;
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error;
    output.err(`regmirror: ${error.message}`);
    return 2;
  }
  const dataDir = path.resolve(settings.dataDir);
  if (!(await stat(dataDir).then((info) => info.isDirectory(), () => false))) {
    output.err(`regmirror: no data directory at ${dataDir}`);
    return 2;
  }
  let lock;
  try {
    lock = await DataDirectoryLock.acquire(dataDir, command.command);
  } catch (error) {
    if (!(error instanceof DataDirectoryInUse)) throw error;
    output.err(`regmirror: ${error.message}; ${command.name} needs it to itself`);
    return 2;
  }
  try {
    const opened = await openObjectStore(settings.storage, dataDir);
    try {
      // With PostgreSQL, the lock holds this node's files only: other nodes on the database keep working.
      const meta = await openMetadataStore(settings.metadata, dataDir);
      try {
        const running = command.removes ? await runningClusterNodes(settings) : [];
        if (running.length > 0) {
          output.err(
            `regmirror: ${command.name} would remove what ${running.length} running node${running.length === 1 ? '' : 's'} of the cluster may be using (${running.join(', ')}); stop every node first, or use POST /_regmirror/gc on one of them`,
          );
          return 2;
        }
        return await work({ settings, dataDir, store: opened.store, meta });
      } finally {
        await meta.close();
      }
    } finally {
      opened.close();
    }
  } catch (error) {
    if (!(error instanceof StorageError || error instanceof MetadataError)) throw error;
    output.err(`regmirror: ${command.name} stopped: ${describeError(error)}`);
    return 1;
  } finally {
    await lock.release();
  }
}

/**
 * The advertised addresses of a cluster's nodes alive on the configured database: looked for with any PostgreSQL
 * database, `cluster` configured here or not (none when no cluster ever ran on it).
 */
async function runningClusterNodes(settings: Settings): Promise<string[]> {
  if (settings.metadata.driver !== 'postgres') return [];
  const { liveClusterNodes } = await import('../cluster/cluster.js');
  const nodes = await liveClusterNodes({ url: settings.metadata.url, password: settings.metadata.password, statementTimeoutMs: settings.metadata.statementTimeoutMs });
  return nodes.map((node) => node.advertise);
}
