// PostgreSQL 15 for tests: a server started by the shared recipe (../shared/testing/pg-start.sh: 127.0.0.1 on a
// free port, trust auth, no unix socket) and stopped by pg-stop.sh; a fresh schema per store, so that one server
// serves a whole test file; and an admin connection to look at what a store wrote.

import { execFileSync } from 'node:child_process';
import { access, constants, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import pg from 'pg';
import { parseIntoClientConfig } from 'pg-connection-string';
import { runCommand } from './commands.js';
import { freePort } from './ports.js';
import { sharedKit } from './shared-kit.js';

const PG_CTL = '/usr/lib/postgresql/15/bin/pg_ctl';

export interface PostgresSchema {
  name: string;
  /** The server's URL with `options=-c search_path=NAME` (and any more options asked for). */
  url: string;
  drop(): Promise<void>;
}

export interface Postgres {
  port: number;
  /** postgres://postgres@127.0.0.1:PORT/postgres (superuser, trust auth). */
  url: string;
  /** The server's log (pg_ctl -l): statements, when a connection asks for log_statement. */
  logFile: string;
  /** A fresh, empty schema; `options` are more `-c name=value` settings for the connections of its URL. */
  schema(options?: { settings?: Record<string, string>; applicationName?: string }): Promise<PostgresSchema>;
  /**
   * A role that must log in with its password (scram-sha-256; every other role keeps trust auth), owning the schema
   * named: the URL of the schema with this role instead of postgres.
   */
  passwordRole(schema: PostgresSchema, role: string, password: string): Promise<string>;
  /** A statement on the admin connection (the superuser, search_path public). */
  query<R extends pg.QueryResultRow>(sql: string, parameters?: unknown[]): Promise<R[]>;
  /** Stops the server and removes its directory (once). */
  stop(): Promise<void>;
}

let schemas = 0;

/** Starts a server (a second try on another port if the first one's was taken meanwhile). */
export async function startPostgres(): Promise<Postgres> {
  const start = await sharedKit('testing', 'pg-start.sh');
  const stopScript = await sharedKit('testing', 'pg-stop.sh');
  await access(PG_CTL, constants.X_OK).catch((error: unknown) => {
    throw new Error(`PostgreSQL 15 is not installed (${PG_CTL}); scripts/install-deps.sh installs it`, { cause: error });
  });
  let port = 0;
  let dir = '';
  for (let attempt = 1; dir === ''; attempt++) {
    port = await freePort();
    try {
      dir = (await runCommand('bash', [start, String(port)], { timeoutMs: 60_000 })).stdout.trim();
    } catch (error) {
      if (attempt >= 3) throw error;
    }
  }
  const url = `postgres://postgres@127.0.0.1:${port}/postgres`;
  // Stopped even when the test process ends without its after hooks (a failed before, an interrupt).
  let stopped = false;
  const stopNow = (): void => {
    if (stopped) return;
    stopped = true;
    execFileSync('bash', [stopScript, dir], { stdio: 'ignore', timeout: 60_000 });
  };
  process.once('exit', stopNow);
  const admin = new pg.Pool({ connectionString: url, max: 2 });
  admin.on('error', () => undefined);
  const query = async <R extends pg.QueryResultRow>(sql: string, parameters: unknown[] = []): Promise<R[]> => (await admin.query<R>(sql, parameters)).rows;
  return {
    port,
    url,
    logFile: path.join(dir, 'server.log'),
    query,
    schema: async (options = {}) => {
      schemas += 1;
      const name = `test_${process.pid}_${schemas}`;
      await query(`CREATE SCHEMA ${name}`);
      const settings = { search_path: name, ...options.settings };
      const parameters = new URLSearchParams({ options: Object.entries(settings).map(([key, value]) => `-c ${key}=${value}`).join(' ') });
      if (options.applicationName !== undefined) parameters.set('application_name', options.applicationName);
      return { name, url: `${url}?${parameters.toString()}`, drop: async () => void (await query(`DROP SCHEMA ${name} CASCADE`)) };
    },
    passwordRole: async (schema, role, password) => {
      await query(`CREATE ROLE ${role} LOGIN PASSWORD '${password.replace(/'/g, "''")}'`);
      await query(`ALTER SCHEMA ${schema.name} OWNER TO ${role}`);
      // pg_hba.conf is read top down: this role's line before the trust lines initdb wrote.
      const hba = path.join(dir, 'data', 'pg_hba.conf');
      await writeFile(hba, `host all ${role} 127.0.0.1/32 scram-sha-256\n${await readFile(hba, 'utf8')}`);
      await query('SELECT pg_reload_conf()');
      const url = schema.url.replace('postgres://postgres@', `postgres://${role}@`);
      // The server reloads on its own time: until a wrong password is refused, the role still logs in on trust.
      for (let tries = 0; ; tries++) {
        const probe = new pg.Client({ ...parseIntoClientConfig(url), password: `not ${password}` });
        const refused = await probe.connect().then(
          () => false,
          (error: unknown) => (error as { code?: unknown }).code === '28P01',
        );
        await probe.end().catch(() => undefined);
        if (refused) return url;
        if (tries >= 100) throw new Error(`the server still lets ${role} in without its password`);
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
    },
    stop: async () => {
      await admin.end();
      process.removeListener('exit', stopNow);
      if (stopped) return;
      stopped = true;
      await runCommand('bash', [stopScript, dir], { timeoutMs: 60_000 });
    },
  };
}
