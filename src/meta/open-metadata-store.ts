// Opens the MetadataStore the configuration names: SQLite in the data directory (the default), or PostgreSQL,
// whose driver (and pg with it) is loaded only then, so that a single node does not carry it.

import path from 'node:path';
import type { MetadataStore } from './metadata-store.js';
import { SQLITE_FILE, SqliteMetadataStore } from './sqlite-store.js';

export type MetadataSettings =
  | { driver: 'sqlite' }
  | {
      driver: 'postgres';
      /** Without a password: that is `password`, read from the variable metadata.passwordEnv names. */
      url: string;
      password: string | undefined;
      poolSize: number;
      statementTimeoutMs: number;
    };

export interface MetadataLog {
  warn(fields: Record<string, unknown>, message: string): void;
}

export async function openMetadataStore(settings: MetadataSettings, dataDir: string, log?: MetadataLog): Promise<MetadataStore> {
  if (settings.driver === 'sqlite') return new SqliteMetadataStore(path.join(dataDir, SQLITE_FILE));
  const { PostgresMetadataStore } = await import('./postgres-store.js');
  return PostgresMetadataStore.open({
    url: settings.url,
    password: settings.password,
    poolSize: settings.poolSize,
    statementTimeoutMs: settings.statementTimeoutMs,
    onIdleError: (error) => log?.warn({ err: error }, 'metadata: an idle PostgreSQL connection failed; the pool opens another when one is needed'),
  });
}
