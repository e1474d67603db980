// skopeo copies images through regmirror from a real distribution 2.8.2: several layers, an OCI index
// with two platforms, a Docker schema 2 image and manifest list; manifests byte-identical; with the
// upstream stopped, cached tags, indexes and blobs still pull; a blob whose record or file was lost is
// fetched again.

import assert from 'node:assert/strict';
import { readFile, rm } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { contentGraph, deleteBlobRecord, metadataRows } from './support/data-dir.js';
import { startDistribution, type Distribution } from './support/distribution.js';
import { committedBlobPath, fileExists, rawGet, waitUntil } from './support/fault-upstream.js';
import { buildImageLayout, pushLayout, type BuiltImage, type BuiltLayout } from './support/images.js';
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

  it('records the content graph: what each manifest references, and which repository holds what (issue 10)', async () => {
    // Pulled here (or already, by the tests above): every manifest and blob of team/app and team/multi.
    const out = path.join(work, 'graph');
    await copyToOci(`docker://${mirror.host}/team/app:v1`, out, 'app');
    await copyToOci(`docker://${mirror.host}/team/multi:v2`, out, 'multi', { all: true });
    // A client has a blob's last bytes once verified, a moment before the commit records it.
    await mirror.fillsSettled();
    const graph = contentGraph(mirror.dataDir);
    const image = single.images[0] as BuiltImage;
    assert.deepEqual(graph.referencesOf(image.manifestDigest), [`config ${image.configDigest}`, ...image.layerDigests.map((layer) => `layer ${layer}`)]);
    for (const digest of [image.manifestDigest, image.configDigest, ...image.layerDigests]) {
      assert.ok(graph.holds('team/app', digest) || graph.holds('team/docker-app', digest), `a repository of the image holds ${digest}`);
      // (A blob is linked to the repository whose request started its fill; linking every repository that asks is issue 11's.)
    }
    assert.ok(graph.holds('team/app', image.manifestDigest), 'the repository asked holds the manifest');
    assert.equal(graph.holds('team/multi', image.manifestDigest), false, 'another repository does not');
    assert.deepEqual(
      graph.referencesOf(multi.topDigest),
      multi.images.map((child) => `manifest ${child.manifestDigest}`),
    );
    assert.ok(graph.holds('team/multi', multi.topDigest));
    for (const child of multi.images) assert.deepEqual(graph.referencesOf(child.manifestDigest), [`config ${child.configDigest}`, ...child.layerDigests.map((layer) => `layer ${layer}`)]);
  });

  it('counts what the cache holds in its status and metrics, as the metadata records it', async () => {
    await copyToOci(`docker://${mirror.host}/team/app:v1`, path.join(work, 'counted'), 'app');
    await mirror.fillsSettled();
    const rows = metadataRows(mirror.dataDir);
    const status = (await (await fetch(`${mirror.url}/_regmirror/status`)).json()) as {
      cache: { blobs: number; blobBytes: number; manifests: number; manifestBytes: number; byUpstream: Array<{ registry: string; blobs: number; blobBytes: number }> };
    };
    assert.equal(status.cache.blobs, rows.blobs.length);
    assert.equal(status.cache.manifests, rows.manifests.length);
    const image = single.images[0] as BuiltImage;
    assert.ok(status.cache.blobBytes >= image.layerSizes.reduce((sum, size) => sum + size, 0), 'at least the layers of team/app');
    assert.equal(await mirror.metricValue('regmirror_cache_objects', { kind: 'blob' }), rows.blobs.length);
    assert.equal(await mirror.metricValue('regmirror_cache_bytes', { kind: 'blob' }), status.cache.blobBytes);
    // One upstream, and every blob fetched for one of its repositories: all of it is that upstream's.
    const registry = `127.0.0.1:${upstream.port}`;
    assert.deepEqual(
      status.cache.byUpstream.map((entry) => [entry.registry, entry.blobs, entry.blobBytes]),
      [[registry, status.cache.blobs, status.cache.blobBytes]],
    );
    assert.equal(await mirror.metricValue('regmirror_cache_upstream_bytes', { kind: 'blob', upstream: registry }), status.cache.blobBytes);
    assert.equal(await mirror.metricValue('regmirror_cache_upstream_objects', { kind: 'manifest', upstream: registry }), status.cache.manifests);
    // Pulled again, every layer comes from the cache: bytes the upstream was spared, counted under its name.
    const savedBefore = await mirror.metricValue('regmirror_http_response_bytes_total', { cache: 'hit', upstream: `127.0.0.1:${upstream.port}` });
    await copyToOci(`docker://${mirror.host}/team/app:v1`, path.join(work, 'counted-again'), 'app');
    await mirror.settle();
    const saved = (await mirror.metricValue('regmirror_http_response_bytes_total', { cache: 'hit', upstream: `127.0.0.1:${upstream.port}` })) - savedBefore;
    assert.ok(saved >= image.layerSizes.reduce((sum, size) => sum + size, 0), `${saved} bytes served from the cache`);
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

  it('fetches a blob again when its record or its file is missing, and serves it exactly', async (t) => {
    // A mirror of its own: these blobs are cold here, and the damage stays here.
    const own = await startRegmirror({ upstreams: [upstream.url] });
    t.after(() => own.destroy());
    const image = single.images[0];
    assert.ok(image !== undefined);
    const [recordLost, fileLost] = image.layerDigests as [string, string];
    const blobUrl = (digest: string): string => `${own.url}/v2/team/app/blobs/${digest}`;
    const upstreamGets = async (digest: string): Promise<number> => {
      await upstream.settle();
      return upstream.countRequests('GET', new RegExp(`^/v2/team/app/blobs/${digest}$`));
    };
    const original = async (digest: string): Promise<Buffer> => readFile(path.join(single.dir, 'blobs', 'sha256', digest.slice(7)));
    const getExactly = async (digest: string): Promise<string> => {
      const response = await rawGet(blobUrl(digest), { timeoutMs: 30_000 });
      assert.equal(response.status, 200);
      assert.ok(response.complete && response.body.equals(await original(digest)), `${digest}: the exact bytes`);
      await own.settle();
      return own.accessEntries().filter((entry) => entry.path.endsWith(digest)).at(-1)?.cache ?? 'not logged';
    };
    for (const digest of [recordLost, fileLost]) {
      assert.equal(await getExactly(digest), 'miss');
      await waitUntil('the blob is committed', () => fileExists(committedBlobPath(own.dataDir, digest)));
    }
    const asked = { recordLost: await upstreamGets(recordLost), fileLost: await upstreamGets(fileLost) };

    // The file is there but its record is gone: not trusted, fetched again.
    deleteBlobRecord(own.dataDir, recordLost);
    assert.equal(await getExactly(recordLost), 'miss');
    assert.equal(await upstreamGets(recordLost), asked.recordLost + 1, 'fetched again from the upstream');
    // The record is there but its file is gone: fetched again, not a 404 or an empty body.
    await rm(committedBlobPath(own.dataDir, fileLost));
    assert.equal(await getExactly(fileLost), 'miss');
    assert.equal(await upstreamGets(fileLost), asked.fileLost + 1, 'fetched again from the upstream');

    // Both whole again: record and file, served from the cache.
    await waitUntil('both blobs are committed again', async () => (await fileExists(committedBlobPath(own.dataDir, fileLost))) && metadataRows(own.dataDir).blobs.includes(recordLost));
    for (const digest of [recordLost, fileLost]) {
      assert.ok(metadataRows(own.dataDir).blobs.includes(digest), `${digest} has its record`);
      assert.equal(await getExactly(digest), 'hit');
    }
  });
});
