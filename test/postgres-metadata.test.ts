// regmirror (dist/) with `metadata.driver: postgres`: skopeo pulls an image through it from a real distribution
// 2.8.2, the records land in PostgreSQL (logged in with the password of metadata.passwordEnv), not in a SQLite file;
// after a restart, with the upstream stopped, the cache still serves the image; `regmirror verify` checks it offline.

import assert from 'node:assert/strict';
import { readdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { startDistribution, type Distribution } from './support/distribution.js';
import { buildImageLayout, pushLayout, type BuiltImage, type BuiltLayout } from './support/images.js';
import { startPostgres, type Postgres, type PostgresSchema } from './support/postgres.js';
import { runRegmirror, startRegmirror, type Regmirror } from './support/regmirror.js';
import { copyToOci } from './support/skopeo.js';
import { makeTempDir, removeDir } from './support/temp.js';

const PASSWORD = 'correct horse battery staple';

describe('metadata in PostgreSQL', () => {
  let database: Postgres;
  let schema: PostgresSchema;
  let upstream: Distribution;
  let mirror: Regmirror;
  let work: string;
  let layout: BuiltLayout;
  let configFile: string;
  let dataDir: string;
  const env = { REGMIRROR_TEST_DB_PASSWORD: PASSWORD };

  before(async () => {
    work = await makeTempDir('postgres-metadata-');
    dataDir = path.join(work, 'data');
    database = await startPostgres();
    schema = await database.schema();
    const url = await database.passwordRole(schema, 'regmirror_node', PASSWORD);
    configFile = path.join(work, 'regmirror.yaml');
    await writeFile(configFile, `metadata:\n  driver: postgres\n  url: ${JSON.stringify(url)}\n  passwordEnv: REGMIRROR_TEST_DB_PASSWORD\n  poolSize: 4\n`);
    upstream = await startDistribution();
    layout = await buildImageLayout(path.join(work, 'image'), 'v1', [{ layers: [{ size: 400_000, seed: 31 }, { size: 30_000, seed: 32 }] }]);
    await pushLayout(layout, `127.0.0.1:${upstream.port}/team/app:v1`);
    mirror = await startRegmirror({ upstreams: [upstream.url], configFile, dataDir, env });
  });

  after(async () => {
    await mirror?.destroy();
    await upstream?.destroy();
    await database?.stop();
    await removeDir(work);
  });

  const rows = async (table: string): Promise<string[]> => (await database.query<{ digest: string }>(`SELECT digest FROM ${schema.name}.${table} ORDER BY digest`)).map((row) => row.digest);

  it('records a pull in the database: every blob and manifest, the graph, and no SQLite file', async () => {
    await copyToOci(`docker://${mirror.host}/team/app:v1`, path.join(work, 'first'), 'app');
    await mirror.fillsSettled();
    const image = layout.images[0] as BuiltImage;
    assert.deepEqual(await rows('blobs'), [image.configDigest, ...image.layerDigests].sort());
    assert.deepEqual(await rows('manifests'), [image.manifestDigest]);
    const references = await database.query<{ child: string }>(`SELECT child FROM ${schema.name}.content_references WHERE parent = $1 ORDER BY position`, [image.manifestDigest]);
    assert.deepEqual(
      references.map((row) => row.child),
      [image.configDigest, ...image.layerDigests],
    );
    const status = (await (await fetch(`${mirror.url}/_regmirror/status`)).json()) as { cache: { blobs: number; blobBytes: number; manifests: number } };
    assert.equal(status.cache.blobs, 3);
    assert.equal(status.cache.manifests, 1);
    assert.ok(status.cache.blobBytes >= 430_000);
    assert.equal((await readdir(dataDir)).filter((name) => name.startsWith('metadata.sqlite')).length, 0, 'no SQLite metadata beside the files');
    const listening = mirror.lines().find((line) => line.includes('"msg":"regmirror listening"')) ?? '';
    assert.match(listening, /"metadata":"postgres"/);
    assert.ok(!mirror.lines().some((line) => line.includes(PASSWORD)), 'the password is never logged');
  });

  it('keeps the cache across a restart: with the upstream stopped, the image pulls from what the database recorded', async () => {
    await mirror.stop();
    await upstream.stop();
    try {
      await mirror.start();
      const logged = mirror.accessEntries().length;
      await copyToOci(`docker://${mirror.host}/team/app:v1`, path.join(work, 'after-restart'), 'app');
      await mirror.settle();
      const served = mirror.accessEntries().slice(logged).filter((entry) => entry.path.startsWith('/v2/team/'));
      assert.ok(served.some((entry) => entry.path.includes('/blobs/')), 'blobs were pulled');
      assert.deepEqual(
        served.filter((entry) => entry.status !== 200 || entry.cache !== 'hit'),
        [],
        'every manifest and blob answered 200 from the cache',
      );
      const image = layout.images[0] as BuiltImage;
      for (const digest of image.layerDigests) {
        const pulled = await readFile(path.join(work, 'after-restart', 'blobs', 'sha256', digest.slice(7)));
        const original = await readFile(path.join(layout.dir, 'blobs', 'sha256', digest.slice(7)));
        assert.ok(pulled.equals(original), `${digest}: the exact bytes`);
      }
    } finally {
      await upstream.start();
    }
  });

  it('verifies the data directory offline against the records in the database', async () => {
    await mirror.stop();
    const outcome = await runRegmirror(['verify', '--config', configFile, '--data', dataDir], { env });
    assert.equal(outcome.code, 0, `${outcome.stdout}\n${outcome.stderr}`);
    assert.match(outcome.stdout, /4 records checked; all well/);
    const refused = await runRegmirror(['verify', '--config', configFile, '--data', dataDir], { env: { REGMIRROR_TEST_DB_PASSWORD: 'wrong' } });
    assert.equal(refused.code, 1, 'the database refused it: a failure underneath, not bad usage');
    assert.match(refused.stderr, /metadata open failed \(28P01\): password authentication failed/);
    assert.ok(!refused.stderr.includes('    at '), `one line, no stack: ${refused.stderr}`);
    await mirror.start();
  });
});
