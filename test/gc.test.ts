// Garbage collection against real parts: skopeo pulls an image through regmirror from distribution 2.8.2, the
// upstream moves the tag, the next pull caches the new image; POST /_regmirror/gc (dry run, then for real)
// removes the old image's manifest, config and own layer and keeps the shared base and the tagged image, which
// still pulls with the upstream stopped. `regmirror gc` refuses while a server holds the data directory, then
// removes an abandoned temporary offline.

import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { metadataRows } from './support/data-dir.js';
import { startDistribution, type Distribution } from './support/distribution.js';
import { temporaryFiles } from './support/fault-upstream.js';
import { buildImageLayout, pushLayout, type BuiltImage, type BuiltLayout } from './support/images.js';
import { runRegmirror, startRegmirror, type Regmirror } from './support/regmirror.js';
import { copyToOci } from './support/skopeo.js';
import { makeTempDir, removeDir } from './support/temp.js';

interface GcAnswer {
  dryRun: boolean;
  removed: Record<string, number>;
  freedBytes: number;
}

async function collect(mirror: Regmirror, query = ''): Promise<{ status: number; body: GcAnswer }> {
  const response = await fetch(`${mirror.url}/_regmirror/gc${query}`, { method: 'POST' });
  return { status: response.status, body: (await response.json()) as GcAnswer };
}

describe('garbage collection', { timeout: 240_000 }, () => {
  let upstream: Distribution;
  let mirror: Regmirror;
  let work: string;
  let first: BuiltLayout;
  let second: BuiltLayout;

  before(async () => {
    work = await makeTempDir('gc-');
    upstream = await startDistribution();
    const base = { size: 120_000, seed: 4101 };
    first = await buildImageLayout(path.join(work, 'first'), 'v1', [{ layers: [base, { size: 40_000, seed: 4102 }] }]);
    second = await buildImageLayout(path.join(work, 'second'), 'v1', [{ layers: [base, { size: 50_000, seed: 4103 }] }]);
    await pushLayout(first, `127.0.0.1:${upstream.port}/team/gc:v1`);
    mirror = await startRegmirror({
      upstreams: [upstream.url],
      // Every pull revalidates the tag (so the second pull sees it moved); GC only on demand; a grace of 0, so
      // that what nothing holds is collectable at once (pulls here are over before each collection).
      env: { REGMIRROR_CACHE_TAG_FRESHNESS: '0', REGMIRROR_GC_INTERVAL: '0', REGMIRROR_GC_GRACE: '0' },
    });
  });

  after(async () => {
    await mirror?.destroy();
    await upstream?.destroy();
    await removeDir(work);
  });

  const image = (layout: BuiltLayout): BuiltImage => {
    const built = layout.images[0];
    assert.ok(built !== undefined);
    return built;
  };

  it('removes the image a moved tag left behind, and nothing a tag holds', async () => {
    await copyToOci(`docker://${mirror.host}/team/gc:v1`, path.join(work, 'pull-1'), 'v1');
    await pushLayout(second, `127.0.0.1:${upstream.port}/team/gc:v1`);
    await copyToOci(`docker://${mirror.host}/team/gc:v1`, path.join(work, 'pull-2'), 'v1');
    await mirror.fillsSettled();
    const old = image(first);
    const current = image(second);
    const [base, oldLayer] = old.layerDigests;
    assert.ok(base !== undefined && oldLayer !== undefined);
    assert.ok(metadataRows(mirror.dataDir).manifests.includes(old.manifestDigest), 'both images are cached');

    const dry = await collect(mirror, '?dryRun=true');
    assert.equal(dry.status, 200);
    assert.equal(dry.body.dryRun, true);
    assert.deepEqual(dry.body.removed, { manifest: 1, blob: 2, orphan_file: 0, orphan_record: 0, temporary: 0 }, 'the old manifest, its config and its own layer');
    assert.ok(metadataRows(mirror.dataDir).manifests.includes(old.manifestDigest), 'a dry run removes nothing');

    const real = await collect(mirror);
    assert.equal(real.status, 200);
    assert.deepEqual(real.body.removed, dry.body.removed);
    assert.equal(real.body.freedBytes, dry.body.freedBytes);
    assert.equal(real.body.freedBytes, old.manifestBytes.length + old.configBytes.length + (old.layerSizes[1] ?? 0));

    const rows = metadataRows(mirror.dataDir);
    assert.ok(!rows.manifests.includes(old.manifestDigest));
    assert.ok(!rows.blobs.includes(old.configDigest) && !rows.blobs.includes(oldLayer));
    assert.ok(rows.manifests.includes(current.manifestDigest) && rows.blobs.includes(base) && rows.blobs.includes(current.configDigest));
    assert.equal(await mirror.metricValue('regmirror_gc_runs_total', { outcome: 'done' }), 1, 'the dry run is not counted');
    assert.equal(await mirror.metricValue('regmirror_gc_freed_bytes_total'), real.body.freedBytes);
    const status = (await (await fetch(`${mirror.url}/_regmirror/status`)).json()) as { cache: { lastGc: GcAnswer | null } };
    assert.equal(status.cache.lastGc?.freedBytes, real.body.freedBytes);

    await upstream.stop();
    try {
      await copyToOci(`docker://${mirror.host}/team/gc:v1`, path.join(work, 'pull-3'), 'v1');
    } finally {
      await upstream.start();
    }
  });

  it('answers a malformed dryRun with 400 and collects nothing', async () => {
    const before = await mirror.metricValue('regmirror_gc_runs_total');
    const answer = await collect(mirror, '?dryRun=maybe');
    assert.equal(answer.status, 400);
    assert.equal(await mirror.metricValue('regmirror_gc_runs_total'), before);
  });

  it('runs offline only with the data directory to itself', async () => {
    const refused = await runRegmirror(['gc', '--data', mirror.dataDir]);
    assert.equal(refused.code, 2);
    assert.match(refused.stderr, /is in use by regmirror serve .*; gc needs it to itself/);
    await mirror.stop();
    try {
      await writeFile(path.join(mirror.dataDir, 'tmp', 'left-by-a-crash'), Buffer.alloc(777, 1));
      const dry = await runRegmirror(['gc', '--data', mirror.dataDir, '--dry-run']);
      assert.equal(dry.code, 0, dry.stderr);
      assert.match(dry.stdout, /^would remove temporary left-by-a-crash \(777 bytes\)$/m);
      assert.match(dry.stdout, /\(dry run\): \d+ objects kept; would remove 1 temporary, 777 bytes/);
      assert.deepEqual(await temporaryFiles(mirror.dataDir), ['left-by-a-crash']);
      const real = await runRegmirror(['gc', '--data', mirror.dataDir]);
      assert.equal(real.code, 0, real.stderr);
      assert.match(real.stdout, /^removed temporary left-by-a-crash \(777 bytes\)$/m);
      assert.deepEqual(await temporaryFiles(mirror.dataDir), []);
    } finally {
      await mirror.start();
    }
  });
});
