// Runs the MetadataStore conformance suite against the PostgreSQL driver (a real PostgreSQL 15, one server for
// the file, a schema per store), plus what only it promises: migrations, failures of the server as
// MetadataErrors, reads written in one statement, and two stores ("nodes") on one database staying exact.

import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { after, before, describe, it } from 'node:test';
import pg from 'pg';
import { startPostgres, type Postgres } from '../../test/support/postgres.js';
import { describeError } from '../cli/describe-error.js';
import { digestOf, type Digest } from '../oci/digest.js';
import { isPostgresFailure, MetadataError } from './metadata-error.js';
import { metadataStoreConformance } from './metadata-store.conformance.js';
import type { RepositoryRef } from './metadata-store.js';
import { PostgresMetadataStore, type PostgresOptions } from './postgres-store.js';

let server: Postgres;

before(async () => {
  server = await startPostgres();
});

after(async () => {
  await server?.stop();
});

interface Opened {
  store: PostgresMetadataStore;
  url: string;
  schema: string;
  cleanup(): Promise<void>;
}

async function makePostgresStore(options: Omit<PostgresOptions, 'url'> & { settings?: Record<string, string>; applicationName?: string } = {}): Promise<Opened> {
  const schema = await server.schema({ settings: options.settings, applicationName: options.applicationName });
  const store = await PostgresMetadataStore.open({ ...options, url: schema.url });
  return {
    store,
    url: schema.url,
    schema: schema.name,
    cleanup: async () => {
      await store.close();
      await schema.drop();
    },
  };
}

metadataStoreConformance('postgres', makePostgresStore);

const OCI = 'application/vnd.oci.image.manifest.v1+json';
const digest = (label: string): Digest => digestOf(Buffer.from(label));

/** A small deterministic generator (mulberry32): the same interleavings to try on every run. */
function seeded(seed: number): () => number {
  let state = seed;
  return () => {
    state = (state + 0x6d2b79f5) | 0;
    let mixed = Math.imul(state ^ (state >>> 15), 1 | state);
    mixed = (mixed + Math.imul(mixed ^ (mixed >>> 7), 61 | mixed)) ^ mixed;
    return ((mixed ^ (mixed >>> 14)) >>> 0) / 4_294_967_296;
  };
}

/** What the counts kept by the triggers should be, recounted from the records of a schema. */
async function recount(schema: string): Promise<{ wrongHolders: unknown[]; totals: { blobs: number; blobBytes: number; manifests: number; manifestBytes: number } }> {
  const wrongHolders = await server.query(
    `SELECT kind, digest, holders, counted FROM (
       SELECT 'blob' AS kind, digest, holders FROM ${schema}.blobs UNION ALL SELECT 'manifest', digest, holders FROM ${schema}.manifests
     ) AS records, LATERAL (SELECT count(*)::integer AS counted FROM ${schema}.content_references r WHERE r.child = records.digest AND r.role <> 'subject') AS references_to
     WHERE holders <> counted`,
  );
  const [row] = await server.query<{ blobs: number; blob_bytes: string; manifests: number; manifest_bytes: string }>(
    `SELECT (SELECT count(*)::integer FROM ${schema}.blobs) AS blobs, (SELECT coalesce(sum(size), 0)::text FROM ${schema}.blobs) AS blob_bytes,
            (SELECT count(*)::integer FROM ${schema}.manifests) AS manifests, (SELECT coalesce(sum(size), 0)::text FROM ${schema}.manifests) AS manifest_bytes`,
  );
  assert.ok(row !== undefined);
  return { wrongHolders, totals: { blobs: row.blobs, blobBytes: Number(row.blob_bytes), manifests: row.manifests, manifestBytes: Number(row.manifest_bytes) } };
}

/** Two stores on one fresh schema, as two nodes on one database. */
async function withTwoNodes(work: (one: PostgresMetadataStore, two: PostgresMetadataStore, schema: string, url: string) => Promise<void>): Promise<void> {
  const first = await makePostgresStore();
  const second = await PostgresMetadataStore.open({ url: first.url });
  try {
    await work(first.store, second, first.schema, first.url);
  } finally {
    await second.close();
    await first.cleanup();
  }
}

describe('PostgresMetadataStore', () => {
  describe('whole-cache tasks on one node at a time', () => {
    it('runs a task on one node while the other finds it taken, then lets the other run it; tasks apart do not wait', async () => {
      await withTwoNodes(async (one, two) => {
        let release!: () => void;
        const held = new Promise<void>((resolve) => (release = resolve));
        const first = one.runAlone('gc', async () => {
          await held;
          return 'collected';
        });
        // The first has its lock once its work is waiting: give its session a moment.
        await new Promise((resolve) => setTimeout(resolve, 200));
        assert.equal(await two.runAlone('gc', () => Promise.resolve('twice')), undefined, 'gc is running on the other node');
        assert.equal(await two.runAlone('eviction', () => Promise.resolve('evicted')), 'evicted', 'another task is not held back');
        // A refused turn closes the connection it opened (every node asks every few seconds, and evicts after stores).
        const connections = async (): Promise<number> => Number((await server.query<{ count: string }>("SELECT count(*) AS count FROM pg_stat_activity WHERE backend_type = 'client backend'"))[0]?.count);
        const before = await connections();
        for (let turn = 0; turn < 20; turn++) assert.equal(await two.runAlone('gc', () => Promise.resolve('twice')), undefined);
        for (let waited = 0; (await connections()) > before && waited < 2_000; waited += 50) await new Promise((resolve) => setTimeout(resolve, 50));
        assert.equal(await connections(), before, 'no connection left open by the refused turns');
        release();
        assert.equal(await first, 'collected');
        assert.equal(await two.runAlone('gc', () => Promise.resolve('now')), 'now', 'released when the run ended');
      });
    });

    it('releases the task when its work fails', async () => {
      await withTwoNodes(async (one, two) => {
        await assert.rejects(one.runAlone('eviction', () => Promise.reject(new Error('boom'))), /boom/);
        assert.equal(await two.runAlone('eviction', () => Promise.resolve(1)), 1);
      });
    });
  });

  describe('schema migrations', () => {
    it('migrates a database once: a second start finds it current and keeps what the first recorded', async () => {
      const first = await makePostgresStore();
      const layer = digest('kept');
      const repository: RepositoryRef = { registry: 'docker.io', name: 'library/alpine' };
      await first.store.putBlob(layer, 42, 1_000, repository);
      await first.store.putTag(repository, 'latest', { digest: layer, fetchedAt: 2_000 });
      await first.store.close();
      const again = await PostgresMetadataStore.open({ url: first.url });
      try {
        assert.deepEqual(await again.getBlob(layer), { digest: layer, size: 42, lastAccess: 1_000 });
        assert.deepEqual(await again.getTag(repository, 'latest'), { digest: layer, fetchedAt: 2_000 });
        assert.deepEqual(await again.totals(), { blobs: 1, blobBytes: 42, manifests: 0, manifestBytes: 0 });
        const versions = await server.query<{ version: number }>(`SELECT version FROM ${first.schema}.schema_migrations ORDER BY version`);
        assert.deepEqual(
          versions.map((row) => row.version),
          [1],
        );
      } finally {
        await again.close();
        await first.cleanup();
      }
    });

    it('lets two nodes start on a fresh database at once: each migration applied once, both stores working', async () => {
      const schema = await server.schema();
      const [one, two] = await Promise.all([PostgresMetadataStore.open({ url: schema.url }), PostgresMetadataStore.open({ url: schema.url })]);
      try {
        const applied = await server.query<{ version: number }>(`SELECT version FROM ${schema.name}.schema_migrations`);
        assert.equal(applied.length, 1);
        await one.putBlob(digest('from one'), 1, 1_000);
        assert.equal((await two.getBlob(digest('from one')))?.size, 1);
      } finally {
        await one.close();
        await two.close();
        await schema.drop();
      }
    });

    it('refuses a database migrated by a newer version, saying so', async () => {
      const opened = await makePostgresStore();
      await opened.store.close();
      await server.query(`INSERT INTO ${opened.schema}.schema_migrations (version, name) VALUES (99, 'from the future')`);
      try {
        await assert.rejects(PostgresMetadataStore.open({ url: opened.url }), (error: unknown) => {
          assert.ok(error instanceof MetadataError);
          assert.match(describeError(error), /schema is at version 99, newer than this regmirror knows \(1\)/);
          return true;
        });
      } finally {
        await opened.cleanup();
      }
    });
  });

  it('writes reads off the hot path: nothing before the flush, then one statement for all of them', async () => {
    // Every statement of this store's connections goes to the server's log, which counts them.
    const opened = await makePostgresStore({ settings: { log_statement: 'all' } });
    const { store, schema } = opened;
    try {
      const blobs = Array.from({ length: 300 }, (_, index) => digest(`read often ${index}`));
      for (const blob of blobs) await store.putBlob(blob, 1, 1_000);
      const manifest = digest('read manifest');
      await store.putManifest({ digest: manifest, mediaType: OCI, size: 5 }, 1_000);
      const flushes = async (): Promise<number> => ((await readFile(server.logFile, 'utf8')).match(/execute [^:]*: SELECT regmirror_note_reads/g) ?? []).length;
      const before = await flushes();
      for (let read = 1; read <= 3; read++) for (const blob of blobs) await store.touchBlob(blob, 1_000 + read);
      await store.touchManifest(manifest, 2_000);
      const lastAccesses = async (): Promise<number[]> =>
        (await server.query<{ last_access: string }>(`SELECT DISTINCT last_access::text FROM ${schema}.blobs`)).map((row) => Number(row.last_access));
      assert.deepEqual(await lastAccesses(), [1_000], '900 reads, nothing written yet');
      await store.flushAccess();
      assert.deepEqual(await lastAccesses(), [1_003], 'the latest read of each, all written');
      assert.equal((await store.graph()).manifests[0]?.lastAccess, 2_000);
      assert.equal((await flushes()) - before, 1, 'in one statement');
      await store.flushAccess();
      assert.equal((await flushes()) - before, 1, 'and none when nothing was read since');
    } finally {
      await opened.cleanup();
    }
  });

  it('finds the roots least recently read in their partial index, not by reading every record', async () => {
    const opened = await makePostgresStore();
    try {
      for (let index = 0; index < 2_000; index++) await opened.store.putBlob(digest(`root ${index}`), 1, 1_000 + index);
      await server.query(`ANALYZE ${opened.schema}.blobs`);
      const client = new pg.Client({ connectionString: opened.url });
      await client.connect();
      try {
        const plan = (await client.query<{ 'QUERY PLAN': string }>("EXPLAIN SELECT digest FROM blobs WHERE holders = 0 AND (last_access, digest) > (1500, 'sha256:') ORDER BY last_access, digest LIMIT 10")).rows
          .map((row) => row['QUERY PLAN'])
          .join('\n');
        assert.match(plan, /Index (Only )?Scan using blob_roots_by_last_access/, plan);
      } finally {
        await client.end();
      }
      assert.deepEqual(
        (await opened.store.rootsByLastRead({ lastAccess: 2_997, digest: digest('root 1997') }, 10)).map((root) => root.lastAccess),
        [2_998, 2_999],
      );
    } finally {
      await opened.cleanup();
    }
  });

  describe('two nodes on one database', () => {
    it('count a reference and the record it names written at the same moment by two nodes', async () => {
      await withTwoNodes(async (one, two, schema) => {
        // Each pair races: node one records a manifest referencing a layer while node two records the layer.
        for (let index = 0; index < 60; index++) {
          const layer = digest(`raced layer ${index}`);
          await Promise.all([
            one.putManifest({ digest: digest(`raced manifest ${index}`), mediaType: OCI, size: 1 }, 1_000, { references: [{ digest: layer, role: 'layer' }] }),
            two.putBlob(layer, 10, 1_000),
          ]);
        }
        const { wrongHolders } = await recount(schema);
        assert.deepEqual(wrongHolders, []);
        assert.equal((await one.rootsByLastRead(undefined, 200)).filter((root) => root.kind === 'blob').length, 0, 'no layer is taken for a root');
      });
    });

    it('putting and removing the same content at once, keep every holders count and the totals exact', async () => {
      await withTwoNodes(async (one, two, schema) => {
        const random = seeded(12);
        const pick = <T>(items: readonly T[]): T => items[Math.floor(random() * items.length)] as T;
        const layers = Array.from({ length: 12 }, (_, index) => digest(`shared layer ${index}`));
        const images = Array.from({ length: 6 }, (_, index) => digest(`shared image ${index}`));
        const index = digest('shared index');
        const counts = { removed: 0, puts: 0 };
        for (let round = 0; round < 40; round++) {
          const operations = [one, two].flatMap((store) =>
            Array.from({ length: 6 }, async () => {
              const roll = random();
              if (roll < 0.3) {
                counts.puts += 1;
                return store.putBlob(pick(layers), 100 + Math.floor(random() * 10), 1_000 + round);
              }
              if (roll < 0.6) {
                counts.puts += 1;
                const references = [pick(layers), pick(layers), pick(layers)].map((layer) => ({ digest: layer, role: 'layer' as const }));
                return store.putManifest({ digest: pick(images), mediaType: OCI, size: 20 }, 1_000 + round, { references });
              }
              if (roll < 0.7) {
                const children = [pick(images), pick(images)].map((image) => ({ digest: image, role: 'manifest' as const }));
                return store.putManifest({ digest: index, mediaType: OCI, size: 30 }, 1_000 + round, { references: children });
              }
              if (roll < 0.75) return store.deleteManifest(pick(images));
              if (roll < 0.8) {
                await store.touchBlob(pick(layers), 1_000 + round);
                return store.flushAccess();
              }
              const removed = await store.removeContent({ manifests: [index, pick(images), pick(images)], blobs: [pick(layers), pick(layers), pick(layers)], readBefore: Number.MAX_SAFE_INTEGER });
              counts.removed += removed.manifests.length + removed.blobs.length;
              return undefined;
            }),
          );
          await Promise.all(operations);
        }
        const { wrongHolders, totals } = await recount(schema);
        assert.deepEqual(wrongHolders, [], 'every holders count as the references say');
        assert.deepEqual(await one.totals(), totals, 'the totals as the records sum');
        assert.deepEqual(await two.totals(), totals);
        assert.ok(counts.removed > 20 && counts.puts > 100, `content came and went (${counts.puts} puts, ${counts.removed} removed)`);
      });
    });

    it('remove an object once, whichever of them asks, and keep what another records meanwhile', async () => {
      await withTwoNodes(async (one, two, schema, url) => {
        const layers = Array.from({ length: 300 }, (_, index) => digest(`evicted layer ${index}`));
        for (const layer of layers) await one.putBlob(layer, 7, 1_000);
        const removal = { manifests: [], blobs: layers, readBefore: 2_000 };
        const [byOne, byTwo] = await Promise.all([one.removeContent(removal), two.removeContent(removal)]);
        assert.equal(byOne.blobs.length + byTwo.blobs.length, 300, 'each layer removed by exactly one of them');
        assert.deepEqual(await one.totals(), { blobs: 0, blobBytes: 0, manifests: 0, manifestBytes: 0 });

        // A third writer records a manifest referencing a layer, in a transaction not yet committed: a removal of the
        // layer waits for it, and then finds the layer referenced.
        const layer = digest('being referenced');
        await one.putBlob(layer, 7, 1_000);
        const client = new pg.Client({ connectionString: url });
        await client.connect();
        try {
          await client.query('BEGIN');
          await client.query("SELECT regmirror_put_manifest($1, $2, 5, 1000, ARRAY[$3], ARRAY['layer'], NULL, NULL)", [digest('referencing'), OCI, layer]);
          const removing = one.removeContent({ manifests: [], blobs: [layer], readBefore: 2_000 });
          await waitFor(async () => (await server.query(`SELECT 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE '%regmirror_remove_content%'`)).length > 0);
          await client.query('COMMIT');
          assert.deepEqual(await removing, { manifests: [], blobs: [] }, 'kept: a manifest references it');
        } finally {
          await client.end();
        }
        assert.equal((await one.getBlob(layer))?.size, 7);
      });
    });
  });

  describe('failures of the server', () => {
    it('fails a statement that waits past the statement timeout with a MetadataError, and goes on after', async () => {
      const opened = await makePostgresStore({ statementTimeoutMs: 300 });
      const blob = digest('waited for');
      const client = new pg.Client({ connectionString: opened.url });
      await client.connect();
      try {
        // Another connection holds the graph lock (a writer of another node): recording the blob waits for it.
        await client.query('BEGIN');
        await client.query('SELECT pg_advisory_xact_lock(1, 0)');
        await assert.rejects(opened.store.putBlob(blob, 1, 1_000), (error: unknown) => {
          assert.ok(error instanceof MetadataError);
          assert.equal(error.operation, 'putBlob');
          assert.equal(error.code, '57014');
          return true;
        });
        await client.query('ROLLBACK');
        await opened.store.putBlob(blob, 1, 1_000);
        assert.equal((await opened.store.getBlob(blob))?.size, 1);
      } finally {
        await client.end();
        await opened.cleanup();
      }
    });

    it('tries a statement whose connection is cut again on a new one, and replaces the idle connections cut', async () => {
      const idleErrors: Error[] = [];
      const opened = await makePostgresStore({ applicationName: 'regmirror-cut', onIdleError: (error) => idleErrors.push(error) });
      const blob = digest('cut');
      const client = new pg.Client({ connectionString: opened.url });
      await client.connect();
      try {
        // Some connections in the pool, idle; then one statement waiting on a lock when every connection is cut.
        await Promise.all(Array.from({ length: 4 }, (_, index) => opened.store.getBlob(digest(`warm ${index}`))));
        const [holder] = (await client.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows;
        await client.query('BEGIN');
        await client.query('SELECT pg_advisory_xact_lock(1, 0)');
        const waiting = opened.store.putBlob(blob, 1, 1_000);
        const waiter = async (): Promise<number | undefined> =>
          (await server.query<{ pid: number }>(`SELECT pid FROM pg_stat_activity WHERE application_name = 'regmirror-cut' AND wait_event_type = 'Lock'`))[0]?.pid;
        await waitFor(async () => (await waiter()) !== undefined);
        const first = await waiter();
        const cut = await server.query(`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'regmirror-cut' AND pid <> $1`, [holder?.pid]);
        assert.ok(cut.length >= 2, 'the waiting connection and idle ones');
        await waitFor(async () => ![undefined, first].includes(await waiter()));
        await client.query('ROLLBACK');
        await waiting;
        assert.equal((await opened.store.getBlob(blob))?.size, 1, 'recorded by its second try');
        assert.ok(idleErrors.length > 0, 'the idle connections cut were reported');
        await Promise.all(Array.from({ length: 8 }, (_, index) => opened.store.getBlob(digest(`again ${index}`))));
      } finally {
        await client.end();
        await opened.cleanup();
      }
    });

    it('answers MetadataErrors once the server is gone, and at open when it is not there', async () => {
      const gone = await startPostgres();
      const schema = await gone.schema();
      const store = await PostgresMetadataStore.open({ url: schema.url, statementTimeoutMs: 2_000, onIdleError: () => undefined });
      await store.putBlob(digest('before'), 1, 1_000);
      await store.touchBlob(digest('before'), 2_000);
      await gone.stop();
      await assert.rejects(store.getBlob(digest('before')), (error: unknown) => error instanceof MetadataError && error.operation === 'getBlob' && error.code === 'ECONNREFUSED');
      await assert.rejects(store.close(), (error: unknown) => error instanceof MetadataError && error.operation === 'flushAccess', 'the reads it could not write are reported');
      await assert.rejects(PostgresMetadataStore.open({ url: schema.url }), (error: unknown) => error instanceof MetadataError && error.operation === 'open' && error.code === 'ECONNREFUSED');
    });

    it('logs in with the password given apart from the URL, and answers a wrong one with a MetadataError', async () => {
      const schema = await server.schema();
      const url = await server.passwordRole(schema, 'regmirror_password_test', 'right horse');
      try {
        const store = await PostgresMetadataStore.open({ url, password: 'right horse' });
        await store.putBlob(digest('logged in'), 1, 1_000);
        await store.close();
        await assert.rejects(PostgresMetadataStore.open({ url, password: 'wrong horse' }), (error: unknown) => error instanceof MetadataError && error.code === '28P01');
      } finally {
        await schema.drop();
        await server.query('DROP ROLE regmirror_password_test');
      }
    });

    it('tells failures of the server from bugs by their code', () => {
      for (const code of ['08006', '57014', '57P01', '53100', '53300', '58030', 'XX001', '40P01', '28P01', '3D000', '25006', 'ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EPIPE', 'EAI_AGAIN']) {
        assert.equal(isPostgresFailure(Object.assign(new Error(code), { code })), true, code);
      }
      for (const code of ['42601', '42P01', '23505', '22P02', 'SQLITE_BUSY']) {
        assert.equal(isPostgresFailure(Object.assign(new Error(code), { code })), false, code);
      }
      assert.equal(isPostgresFailure(new Error('Connection terminated unexpectedly')), true);
      assert.equal(isPostgresFailure(new Error('timeout exceeded when trying to connect')), true);
      assert.equal(isPostgresFailure(new TypeError('a bug')), false);
    });
  });
});

/** Polls until check holds, for at most 10 s. */
async function waitFor(check: () => Promise<boolean>): Promise<void> {
  const deadline = Date.now() + 10_000;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error('waited 10 s in vain');
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}
