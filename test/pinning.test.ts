// Pinned images (prefetch.images) with real parts: distribution 2.8.2 upstream, a mirror bounded below what the
// test pulls. The pinned index is fetched at start (only the configured platform's child), survives eviction and
// garbage collection, follows its tag when the upstream moves it, and is served stale past maxStaleness when the
// upstream is down, while an unpinned tag of the same age is not.

import assert from 'node:assert/strict';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { metadataRows } from './support/data-dir.js';
import { startDistribution, type Distribution } from './support/distribution.js';
import { rawGet, sha256Of, waitUntil } from './support/fault-upstream.js';
import { buildImageLayout, MEDIA_TYPES, pushLayout, type BuiltImage, type BuiltLayout } from './support/images.js';
import { startRegmirror, type Regmirror } from './support/regmirror.js';
import { copyToOci } from './support/skopeo.js';
import { makeTempDir, removeDir } from './support/temp.js';

interface PrefetchStatus {
  image: string;
  digest: string | null;
  lastSuccess: number | null;
  lastError: string | null;
}

async function prefetchStatus(mirror: Regmirror): Promise<PrefetchStatus> {
  const status = (await (await fetch(`${mirror.url}/_regmirror/status`)).json()) as { prefetch: PrefetchStatus[] };
  const pinned = status.prefetch[0];
  assert.ok(pinned !== undefined);
  return pinned;
}

const ACCEPT = [MEDIA_TYPES.ociIndex, MEDIA_TYPES.ociManifest].join(', ');

describe('pinned images', { timeout: 300_000 }, () => {
  let upstream: Distribution;
  let mirror: Regmirror;
  let work: string;
  let pinnedV1: BuiltLayout;
  let pinnedV2: BuiltLayout;
  const others: BuiltLayout[] = [];

  const child = (layout: BuiltLayout, architecture: string): BuiltImage => {
    const image = layout.images.find((candidate) => candidate.platform.architecture === architecture);
    assert.ok(image !== undefined);
    return image;
  };

  before(async () => {
    work = await makeTempDir('pinning-');
    upstream = await startDistribution();
    const host = `127.0.0.1:${upstream.port}`;
    const platforms = (seed: number): Parameters<typeof buildImageLayout>[2] => [
      { layers: [{ size: 200_000, seed }], platform: { os: 'linux', architecture: 'amd64' } },
      { layers: [{ size: 150_000, seed: seed + 1 }], platform: { os: 'linux', architecture: 'arm64', variant: 'v8' } },
    ];
    pinnedV1 = await buildImageLayout(path.join(work, 'pinned-v1'), 'v1', platforms(5100));
    pinnedV2 = await buildImageLayout(path.join(work, 'pinned-v2'), 'v1', platforms(5200));
    await pushLayout(pinnedV1, `${host}/team/pinned:v1`);
    for (let index = 0; index < 4; index++) {
      const layout = await buildImageLayout(path.join(work, `other-${index}`), 'v1', [{ layers: [{ size: 300_000, seed: 5300 + index }] }]);
      await pushLayout(layout, `${host}/team/other-${index}:v1`);
      others.push(layout);
    }
    mirror = await startRegmirror({
      upstreams: [upstream.url],
      extraArgs: ['--cache-max-size', '700KB'],
      env: {
        REGMIRROR_PREFETCH_IMAGES: 'team/pinned:v1',
        REGMIRROR_PREFETCH_PLATFORMS: 'linux/arm64',
        // Short, so that the test sees the interval's work: a re-check every second, tags stale after one.
        REGMIRROR_PREFETCH_INTERVAL: '1s',
        REGMIRROR_CACHE_TAG_FRESHNESS: '1s',
        REGMIRROR_CACHE_MAX_STALENESS: '1s',
        REGMIRROR_CACHE_IN_USE_WINDOW: '1s',
        REGMIRROR_CACHE_MIN_FREE_SPACE: '0',
        REGMIRROR_GC_INTERVAL: '0',
        REGMIRROR_GC_GRACE: '0',
      },
    });
  });

  after(async () => {
    await mirror?.destroy();
    await upstream?.destroy();
    await removeDir(work);
  });

  it('fetches the pinned image at start: its index, and of its children only the configured platform', async () => {
    await waitUntil('the pinned image is fetched', async () => (await prefetchStatus(mirror)).lastSuccess !== null, 60_000);
    const status = await prefetchStatus(mirror);
    assert.equal(status.digest, pinnedV1.indexDigest);
    assert.equal(status.lastError, null);
    await mirror.fillsSettled();
    const rows = metadataRows(mirror.dataDir);
    const arm = child(pinnedV1, 'arm64');
    const amd = child(pinnedV1, 'amd64');
    assert.ok(rows.manifests.includes(arm.manifestDigest) && !rows.manifests.includes(amd.manifestDigest));
    for (const digest of [arm.configDigest, ...arm.layerDigests]) assert.ok(rows.blobs.includes(digest), digest);
    for (const digest of amd.layerDigests) assert.ok(!rows.blobs.includes(digest), 'not the other platform');
    assert.ok((await mirror.metricValue('regmirror_prefetches_total', { outcome: 'ok' })) >= 1);
  });

  it('keeps the pinned image through eviction and garbage collection', async () => {
    for (const [index] of others.entries()) await copyToOci(`docker://${mirror.host}/team/other-${index}:v1`, path.join(work, `pull-${index}`), 'v1');
    await mirror.fillsSettled();
    await waitUntil('eviction ran', async () => (await mirror.metricValue('regmirror_evictions_total')) >= 2, 30_000);
    const collected = await fetch(`${mirror.url}/_regmirror/gc`, { method: 'POST' });
    assert.equal(collected.status, 200);
    const rows = metadataRows(mirror.dataDir);
    const arm = child(pinnedV1, 'arm64');
    for (const digest of [pinnedV1.indexDigest ?? '', arm.manifestDigest]) assert.ok(rows.manifests.includes(digest), `pinned manifest ${digest} kept`);
    for (const digest of [arm.configDigest, ...arm.layerDigests]) assert.ok(rows.blobs.includes(digest), `pinned blob ${digest} kept`);
  });

  it('follows its tag when the upstream moves it', async () => {
    await pushLayout(pinnedV2, `127.0.0.1:${upstream.port}/team/pinned:v1`);
    await waitUntil('the pinned tag follows the upstream', async () => (await prefetchStatus(mirror)).digest === pinnedV2.indexDigest, 60_000);
    await waitUntil('the new image is fetched', async () => {
      await mirror.fillsSettled();
      const rows = metadataRows(mirror.dataDir);
      return child(pinnedV2, 'arm64').layerDigests.every((digest) => rows.blobs.includes(digest));
    });
  });

  it('serves the pinned tag stale past maxStaleness when the upstream is down, and not an unpinned one', async () => {
    await copyToOci(`docker://${mirror.host}/team/other-3:v1`, path.join(work, 'pull-again'), 'v1');
    await upstream.stop();
    try {
      // Both tags are now older than maxStaleness (1s).
      await new Promise((resolve) => setTimeout(resolve, 2_500));
      const pinned = await rawGet(`${mirror.url}/v2/team/pinned/manifests/v1`, { headers: { accept: ACCEPT } });
      assert.equal(pinned.status, 200);
      assert.equal(sha256Of(pinned.body), pinnedV2.indexDigest);
      const arm = child(pinnedV2, 'arm64');
      const layer = arm.layerDigests[0] ?? '';
      const blob = await rawGet(`${mirror.url}/v2/team/pinned/blobs/${layer}`);
      assert.equal(blob.status, 200);
      assert.equal(sha256Of(blob.body), layer);
      const unpinned = await rawGet(`${mirror.url}/v2/team/other-3/manifests/v1`, { headers: { accept: ACCEPT } });
      assert.ok(unpinned.status >= 500, `an unpinned tag past maxStaleness is not served (got ${unpinned.status})`);
    } finally {
      await upstream.start();
    }
  });
});
