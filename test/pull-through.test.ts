// skopeo copies images through regmirror from a real distribution 2.8.2: several layers, an OCI index
// with two platforms, a Docker schema 2 image and manifest list; manifests byte-identical; and with
// the upstream stopped, cached tags, indexes and blobs still pull.

import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { startDistribution, type Distribution } from './support/distribution.js';
import { buildImageLayout, pushLayout, type BuiltLayout } from './support/images.js';
import { startRegmirror, type Regmirror } from './support/regmirror.js';
import { copyToOci, inspectRaw } from './support/skopeo.js';
import { makeTempDir, removeDir } from './support/temp.js';

describe('pull-through with skopeo', () => {
  let upstream: Distribution;
  let mirror: Regmirror;
  let work: string;
  let single: BuiltLayout;
  let multi: BuiltLayout;

  before(async () => {
    work = await makeTempDir('pull-through-');
    upstream = await startDistribution();
    single = await buildImageLayout(path.join(work, 'single'), 'v1', [
      { layers: [{ size: 300_000, seed: 1 }, { size: 2_000_000, seed: 2 }, { size: 10, seed: 3 }] },
    ]);
    multi = await buildImageLayout(path.join(work, 'multi'), 'v2', [
      { layers: [{ size: 100_000, seed: 11 }], platform: { os: 'linux', architecture: 'amd64' } },
      { layers: [{ size: 120_000, seed: 12 }], platform: { os: 'linux', architecture: 'arm64', variant: 'v8' } },
    ]);
    const host = `127.0.0.1:${upstream.port}`;
    await pushLayout(single, `${host}/team/app:v1`);
    await pushLayout(multi, `${host}/team/multi:v2`);
    await pushLayout(single, `${host}/team/docker-app:v1`, { format: 'v2s2' });
    await pushLayout(multi, `${host}/team/docker-multi:v2`, { format: 'v2s2' });
    mirror = await startRegmirror({ upstreams: [upstream.url] });
  });

  after(async () => {
    if (process.env.DEBUG_MIRROR) console.log(mirror?.lines().join('\n'));
    await mirror?.destroy();
    await upstream?.destroy();
    await removeDir(work);
  });

  const references = ['team/app:v1', 'team/multi:v2', 'team/docker-app:v1', 'team/docker-multi:v2'];

  it('serves every manifest byte for byte as the upstream has it', async () => {
    for (const reference of references) {
      const direct = await inspectRaw(`docker://127.0.0.1:${upstream.port}/${reference}`);
      const mirrored = await inspectRaw(`docker://${mirror.host}/${reference}`);
      assert.ok(direct.equals(mirrored), `${reference}: manifest bytes differ`);
    }
    const ociIndex = JSON.parse((await inspectRaw(`docker://${mirror.host}/team/multi:v2`)).toString()) as { mediaType: string };
    assert.equal(ociIndex.mediaType, 'application/vnd.oci.image.index.v1+json');
    const dockerList = JSON.parse((await inspectRaw(`docker://${mirror.host}/team/docker-multi:v2`)).toString()) as { mediaType: string };
    assert.equal(dockerList.mediaType, 'application/vnd.docker.distribution.manifest.list.v2+json');
  });

  it('copies whole images, every platform, with identical blobs', async () => {
    const out = path.join(work, 'out');
    await copyToOci(`docker://${mirror.host}/team/app:v1`, out, 'app');
    for (const [index, digest] of single.images[0]?.layerDigests.entries() ?? []) {
      const copied = await readFile(path.join(out, 'blobs', 'sha256', digest.slice(7)));
      const original = await readFile(path.join(single.dir, 'blobs', 'sha256', digest.slice(7)));
      assert.ok(copied.equals(original), `layer ${index} differs`);
    }
    await copyToOci(`docker://${mirror.host}/team/multi:v2`, out, 'multi', { all: true });
    await copyToOci(`docker://${mirror.host}/team/docker-app:v1`, out, 'docker-app');
    await copyToOci(`docker://${mirror.host}/team/docker-multi:v2`, out, 'docker-multi', { all: true });
    await mirror.settle();
    const served = mirror.accessEntries().filter((entry) => entry.path.includes('/blobs/') && entry.method === 'GET');
    assert.ok(served.length > 0 && served.every((entry) => entry.status === 200), 'every blob GET answered 200');
  });

  it('pulls everything again from the cache with the upstream stopped', async () => {
    const pullAll = async (out: string): Promise<void> => {
      for (const reference of references) await copyToOci(`docker://${mirror.host}/${reference}`, out, reference.replace(/[/:]/g, '-'), { all: true });
    };
    // What this test pulls offline, it first pulled here with the upstream up.
    await pullAll(path.join(work, 'online'));
    await mirror.settle();
    const logged = mirror.accessEntries().length;
    await upstream.stop();
    try {
      await pullAll(path.join(work, 'offline'));
      await mirror.settle();
      const offline = mirror.accessEntries().slice(logged).filter((entry) => entry.path.startsWith('/v2/') && entry.path !== '/v2/');
      assert.ok(offline.some((entry) => entry.path.includes('/blobs/')), 'blobs were pulled');
      assert.deepEqual(
        offline.filter((entry) => entry.status !== 200 || entry.cache !== 'hit'),
        [],
        'every manifest and blob answered 200 from the cache',
      );
    } finally {
      await upstream.start();
    }
  });
});
