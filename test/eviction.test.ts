// The cache bound with real parts (issue 10, "A size bound"): skopeo pulls a dozen images sharing a base layer
// through a mirror bounded to about three of them; pull loops from several clients while eviction and GC run; a tmpfs
// data directory filled to ENOSPC mid-fill. Upstream: distribution 2.8.2. What is held is read from the status
// page and the metadata file (neither refreshes an image); what reached the upstream, from its access log.

import assert from 'node:assert/strict';
import { mkdir, open, readFile, rm, statfs } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { runCommand, unmountUnder } from './support/commands.js';
import { metadataRows } from './support/data-dir.js';
import { startDistribution, type Distribution } from './support/distribution.js';
import { committedBlobPath, fileExists, rawGet, sha256Of, temporaryFiles, waitUntil } from './support/fault-upstream.js';
import { buildImageLayout, layoutBlobPath, MEDIA_TYPES, pushLayout, type BuiltImage, type BuiltLayout } from './support/images.js';
import { startRegmirror, type Regmirror } from './support/regmirror.js';
import { copyToOci } from './support/skopeo.js';
import { makeTempDir, removeDir } from './support/temp.js';

const IMAGES = 12;
const BASE_LAYER = { size: 100_000, seed: 7_000 };
const OWN_LAYER_SIZE = 150_000;
const repositoryOf = (n: number): string => `eviction/app-${n}`;

interface CacheStatus {
  blobBytes: number;
  manifestBytes: number;
  maxSize: number | null;
  lastEviction: { reason?: string } | null;
}

async function cacheStatus(mirror: Regmirror): Promise<CacheStatus> {
  const response = await fetch(`${mirror.url}/_regmirror/status`);
  assert.equal(response.status, 200);
  return ((await response.json()) as { cache: CacheStatus }).cache;
}

const heldBytes = (status: CacheStatus): number => status.blobBytes + status.manifestBytes;

/** What one image holds apart from the shared base: its manifest, config and own layer. */
function ownBytes(image: BuiltImage): number {
  return image.manifestBytes.length + image.configBytes.length + (image.layerSizes[1] ?? 0);
}

/** A bound that holds the base and three images, but not four: each pull past the third evicts exactly one. */
function boundForThree(images: BuiltImage[]): { maxSize: number; largest: number } {
  const base = images[0]?.layerSizes[0] ?? 0;
  const own = images.map(ownBytes);
  const largest = Math.max(...own);
  const maxSize = base + Math.floor(3.5 * largest);
  // Eviction goes down to 90% of the bound: three images must fit under it, four must not fit under the bound.
  assert.ok(base + 3 * largest <= Math.floor(0.9 * maxSize), 'three images fit under the low watermark');
  assert.ok(base + 4 * Math.min(...own) > maxSize, 'four images do not fit under the bound');
  return { maxSize, largest };
}

/**
 * Waits until eviction has nothing left to do (what is held is within the bound once every fill is committed) and
 * has counted `evictions` images in all (a run counts once its files are deleted, after the records), checking on
 * every look that the bound held within one image meanwhile. Bounded: past the 10 s timer check.
 */
async function settleEviction(mirror: Regmirror, bound: { maxSize: number; oneImage: number; evictions?: number }): Promise<void> {
  await mirror.fillsSettled();
  const { maxSize, oneImage, evictions = 0 } = bound;
  await waitUntil(
    `what is held comes down to ${maxSize} bytes, and ${evictions} evictions are counted`,
    async () => {
      const held = heldBytes(await cacheStatus(mirror));
      assert.ok(held <= maxSize + oneImage, `${held} bytes held: more than the bound (${maxSize}) plus one image (${oneImage})`);
      return held <= maxSize && (await mirror.metricValue('regmirror_evictions_total')) >= evictions;
    },
    20_000,
  );
}

function upstreamBlobGets(upstream: Distribution, repository: string, digest: string): number {
  return upstream.countRequests('GET', new RegExp(`^/v2/${repository}/blobs/${digest}$`));
}

interface PullCounts {
  pulls: number;
  failed: number;
  short: number;
  mismatched: number;
  errors: string[];
}

/**
 * One client's pull over plain HTTP: the manifest by tag, then every blob, each checked for its status, its
 * whole length and its sha256. A cut response is counted short; a complete one with other bytes, mismatched.
 */
async function pullOverHttp(mirror: Regmirror, repository: string, image: BuiltImage, counts: PullCounts): Promise<void> {
  counts.pulls += 1;
  const objects = [
    { url: `${mirror.url}/v2/${repository}/manifests/v1`, digest: image.manifestDigest, size: image.manifestBytes.length },
    { url: `${mirror.url}/v2/${repository}/blobs/${image.configDigest}`, digest: image.configDigest, size: image.configBytes.length },
    ...image.layerDigests.map((digest, index) => ({ url: `${mirror.url}/v2/${repository}/blobs/${digest}`, digest, size: image.layerSizes[index] ?? 0 })),
  ];
  for (const object of objects) {
    let response;
    try {
      response = await rawGet(object.url, { headers: { accept: MEDIA_TYPES.ociManifest }, timeoutMs: 60_000 });
    } catch (error) {
      counts.failed += 1;
      counts.errors.push(`${object.url}: ${(error as Error).message}`);
      return;
    }
    if (response.status !== 200) {
      counts.failed += 1;
      counts.errors.push(`${object.url}: ${response.status} ${response.body.toString('utf8').slice(0, 200)}`);
      return;
    }
    if (!response.complete || response.body.length < object.size) {
      counts.short += 1;
      counts.errors.push(`${object.url}: ${response.body.length} of ${object.size} bytes (${response.error?.message ?? 'complete'})`);
      return;
    }
    if (response.body.length !== object.size || sha256Of(response.body) !== object.digest) {
      counts.mismatched += 1;
      counts.errors.push(`${object.url}: ${response.body.length} bytes with digest ${sha256Of(response.body)}`);
      return;
    }
  }
}

/** Writes a file of exactly `bytes` into dir (a tmpfs being filled); returns its path. */
async function writeFiller(dir: string, bytes: number): Promise<string> {
  const file = path.join(dir, 'filler');
  const handle = await open(file, 'w');
  const chunk = Buffer.alloc(256 * 1024, 0x5a);
  try {
    for (let written = 0; written < bytes; written += chunk.length) await handle.write(chunk, 0, Math.min(chunk.length, bytes - written));
  } finally {
    await handle.close();
  }
  return file;
}

async function freeBytes(dir: string): Promise<number> {
  const stats = await statfs(dir);
  return stats.bavail * stats.bsize;
}

describe('the cache bound', { timeout: 180_000 }, () => {
  let work: string;
  let upstream: Distribution;
  let images: BuiltImage[];

  before(async () => {
    work = await makeTempDir('eviction-');
    upstream = await startDistribution();
    images = [];
    for (let n = 1; n <= IMAGES; n++) {
      const layout = await buildImageLayout(path.join(work, 'images'), `app-${n}`, [{ layers: [BASE_LAYER, { size: OWN_LAYER_SIZE, seed: 7_000 + n }] }]);
      await pushLayout(layout, `127.0.0.1:${upstream.port}/${repositoryOf(n)}:v1`);
      images.push(layout.images[0] as BuiltImage);
    }
  });

  after(async () => {
    await upstream?.destroy();
    await removeDir(work);
  });

  const imageNumber = (manifest: string): number => images.findIndex((image) => image.manifestDigest === manifest) + 1;

  it('skopeo pulls of a dozen images sharing a base: the bound holds, the least recently used image goes first, the base stays, retained images pull offline', async (t) => {
    const { maxSize, largest } = boundForThree(images);
    // A short in-use window: an image stays "in use" (evicted only when nothing else is left) this long after it was
    // read. Pulls here follow each other within a second, so with the default (1 min) every image would be in use
    // and only that last resort would run; with 1 s most evictions take an image nobody has read for a while, the
    // ordinary path. In-use images are ordered by last use too, so either way the least recently used goes first.
    const mirror = await startRegmirror({
      upstreams: [upstream.url],
      extraArgs: ['--cache-max-size', String(maxSize)],
      env: { REGMIRROR_CACHE_IN_USE_WINDOW: '1s', REGMIRROR_CACHE_MIN_FREE_SPACE: '0' },
    });
    t.after(() => mirror.destroy());
    const base = images[0]?.layerDigests[0] ?? '';
    let pulls = 0;
    const pull = async (n: number): Promise<void> => {
      const out = path.join(work, `pull-${++pulls}`);
      // A fresh destination each time, as a new node would pull: every pull reads the shared base too.
      await copyToOci(`docker://${mirror.host}/${repositoryOf(n)}:v1`, out, 'v1');
      await rm(out, { recursive: true, force: true });
    };
    const retained = (): number[] =>
      metadataRows(mirror.dataDir)
        .manifests.map(imageNumber)
        .sort((a, b) => a - b);

    // The images by last use, most recent last: the three the bound keeps.
    let recent: number[] = [];
    let evictions = 0;
    const pullAndCheck = async (n: number): Promise<void> => {
      await pull(n);
      recent = [...recent.filter((m) => m !== n), n];
      if (recent.length > 3) {
        recent = recent.slice(1);
        evictions += 1;
      }
      await settleEviction(mirror, { maxSize, oneImage: largest, evictions });
      assert.deepEqual(retained(), [...recent].sort((a, b) => a - b), `after pulling app-${n}: the ${recent.length} most recently used images stay`);
      assert.ok(metadataRows(mirror.dataDir).blobs.includes(base), `after pulling app-${n}: the base layer stays`);
      assert.ok(await fileExists(committedBlobPath(mirror.dataDir, base)), `after pulling app-${n}: the base layer's file stays`);
    };

    for (let n = 1; n <= 6; n++) await pullAndCheck(n);
    // app-4 is now the oldest of the three; read again, it is the newest, and app-5 and app-6 (pulled after its
    // first pull, read before its second) go before it.
    await pullAndCheck(4);
    for (let n = 7; n <= IMAGES; n++) await pullAndCheck(n);
    assert.deepEqual(recent, [10, 11, 12]);
    assert.equal(await mirror.metricValue('regmirror_evictions_total', { reason: 'max_size' }), evictions);
    assert.ok((await mirror.metricValue('regmirror_evicted_bytes_total', { reason: 'max_size' })) >= evictions * Math.min(...images.map(ownBytes)));
    const status = await cacheStatus(mirror);
    assert.equal(status.maxSize, maxSize);
    assert.equal(status.lastEviction?.reason, 'max_size');
    assert.equal(await mirror.metricValue('regmirror_damaged_objects_total'), 0, 'eviction is not damage');

    // The retained images pull with the upstream stopped.
    await upstream.stop();
    try {
      for (const n of recent) await pull(n);
    } finally {
      await upstream.start();
    }

    // An evicted image pulls again, from the upstream; the base, retained, is not fetched again.
    await upstream.settle();
    const own = images[0]?.layerDigests[1] ?? '';
    const ownGets = upstreamBlobGets(upstream, repositoryOf(1), own);
    assert.equal(ownGets, 1);
    await pullAndCheck(1);
    await upstream.settle();
    assert.equal(upstreamBlobGets(upstream, repositoryOf(1), own), ownGets + 1, 'the evicted layer was fetched again');
    const baseGets = images.reduce((sum, _image, index) => sum + upstreamBlobGets(upstream, repositoryOf(index + 1), base), 0);
    assert.equal(baseGets, 1, 'the shared base was fetched once, and never evicted');
    assert.equal(await mirror.metricValue('regmirror_evictions_total', { reason: 'max_size' }), evictions);
  });

  it('pull loops from four clients while eviction and garbage collection run: no failed pull, no short body, no wrong bytes', async (t) => {
    const { maxSize } = boundForThree(images);
    // The default in-use window (1 min): every image is in use, so the bound wins over pulls in progress.
    const mirror = await startRegmirror({
      upstreams: [upstream.url],
      // GC with no grace: whatever no tag holds is collectable at once, and a file without its record yet (a commit
      // between its rename and its record) is an orphan unless the collector knows the commit is in progress.
      env: { REGMIRROR_CACHE_MAX_SIZE: String(maxSize), REGMIRROR_CACHE_MIN_FREE_SPACE: '0', REGMIRROR_GC_GRACE: '0', REGMIRROR_GC_INTERVAL: '0' },
      // The access log of a few hundred requests is not read here.
      keepLine: (line) => !line.includes('"msg":"request"'),
    });
    t.after(() => mirror.destroy());
    const clients = 4;
    const pullsPerClient = 18;
    const counts: PullCounts = { pulls: 0, failed: 0, short: 0, mismatched: 0, errors: [] };
    let pulling = true;
    const collections: number[] = [];
    // A collection after another while the clients pull (at most 200: bounded however long they take).
    const collecting = (async () => {
      for (let run = 0; run < 200 && pulling; run++) {
        const response = await fetch(`${mirror.url}/_regmirror/gc`, { method: 'POST' });
        collections.push(response.status);
        await response.arrayBuffer();
      }
    })();
    await Promise.all(
      Array.from({ length: clients }, async (_unused, client) => {
        for (let pull = 0; pull < pullsPerClient; pull++) {
          // Each client walks the twelve images from its own start and with its own stride: they overlap.
          const index = (client * 3 + pull * (client + 1) * 5) % IMAGES;
          await pullOverHttp(mirror, repositoryOf(index + 1), images[index] as BuiltImage, counts);
        }
      }),
    ).finally(() => {
      pulling = false;
    });
    await collecting;
    assert.ok(collections.length > 0 && collections.every((status) => status === 200), `collections answered ${collections.join(' ')}`);
    // Nothing here is an orphan: a file or record GC took for one was a commit or a removal in progress.
    assert.equal(await mirror.metricValue('regmirror_gc_removed_total', { kind: 'orphan_file' }), 0, 'no file of a commit in progress taken for an orphan');
    assert.equal(await mirror.metricValue('regmirror_gc_removed_total', { kind: 'orphan_record' }), 0, 'no record taken for an orphan');
    assert.deepEqual(counts.errors, []);
    assert.deepEqual({ pulls: counts.pulls, failed: counts.failed, short: counts.short, mismatched: counts.mismatched }, { pulls: clients * pullsPerClient, failed: 0, short: 0, mismatched: 0 });
    await settleEviction(mirror, { maxSize, oneImage: Number.POSITIVE_INFINITY });
    assert.ok((await mirror.metricValue('regmirror_evictions_total', { reason: 'max_size' })) > 0, 'evictions happened during the loops');
    assert.equal(await mirror.metricValue('regmirror_damaged_objects_total'), 0, 'eviction is not damage');
    const fills = await mirror.metricValue('regmirror_fills_total', { outcome: 'committed' });
    t.diagnostic(
      `${counts.pulls} pulls, ${await mirror.metricValue('regmirror_evictions_total')} images evicted, ${fills} blob fills (${2 * IMAGES} blobs in all), ${collections.length} collections removing ${await mirror.metricValue('regmirror_gc_removed_total')}`,
    );
  });

  describe('a small tmpfs data directory filled up mid-fill', () => {
    let mountPoint: string;
    const full: Record<'a' | 'b' | 'c', BuiltLayout | undefined> = { a: undefined, b: undefined, c: undefined };

    before(async () => {
      mountPoint = await makeTempDir('eviction-tmpfs-');
      await runCommand('mount', ['-t', 'tmpfs', '-o', 'size=8m', 'tmpfs', mountPoint]);
      // a and b fit; c's layer is larger than what is left after the filler, even once a is evicted.
      const layers = { a: 1600 * 1024, b: 400 * 1024, c: 4 * 1024 * 1024 };
      for (const [name, size] of Object.entries(layers) as Array<['a' | 'b' | 'c', number]>) {
        const layout = await buildImageLayout(path.join(work, 'full-images'), name, [{ layers: [{ size, seed: 7_100 + size + name.charCodeAt(0) }] }]);
        await pushLayout(layout, `127.0.0.1:${upstream.port}/eviction/full-${name}:v1`);
        full[name] = layout;
      }
    });

    after(async () => {
      if (mountPoint !== undefined) {
        await unmountUnder(mountPoint);
        await removeDir(mountPoint);
      }
    });

    it('the fill fails cleanly, cached content is served throughout, eviction frees space, and the pull succeeds once there is room', async (t) => {
      const [a, b, c] = [full.a, full.b, full.c].map((layout) => layout?.images[0] as BuiltImage) as [BuiltImage, BuiltImage, BuiltImage];
      const dataDir = path.join(mountPoint, 'data');
      await mkdir(dataDir);
      const minFree = 1280 * 1024;
      const mirror = await startRegmirror({
        dataDir,
        upstreams: [upstream.url],
        env: { REGMIRROR_CACHE_MIN_FREE_SPACE: `${minFree / 1024}KiB` },
      });
      t.after(() => mirror.stop());
      const layerOf = (image: BuiltImage): string => image.layerDigests[0] ?? '';
      const layerUrl = (name: string, image: BuiltImage): string => `${mirror.url}/v2/eviction/full-${name}/blobs/${layerOf(image)}`;
      const serveExactly = async (name: string, image: BuiltImage, layout: BuiltLayout | undefined): Promise<void> => {
        const response = await rawGet(layerUrl(name, image));
        assert.equal(response.status, 200, `${name}: served`);
        assert.ok(response.complete, `${name}: whole`);
        assert.ok(response.body.equals(await readFile(layoutBlobPath(layout?.dir ?? '', layerOf(image)))), `${name}: the exact bytes`);
      };

      for (const name of ['a', 'b']) await copyToOci(`docker://${mirror.host}/eviction/full-${name}:v1`, path.join(work, `full-${name}`), 'v1');
      await mirror.fillsSettled();
      assert.equal(await mirror.metricValue('regmirror_evictions_total'), 0, 'plenty of room so far');

      // Leave 1.1 MiB: below cache.minFreeSpace (1.25 MiB), and less than c's layer even with a evicted. Evicting a
      // alone brings free space back above the bound plus a tenth (1.375 MiB), even for a run while c's temporary
      // takes every byte left. Nothing is stored from here until the filler goes (c's layer is asked for alone, not
      // after its manifest), so besides the 10 s check only the failed fill wakes eviction: one run at most while
      // space is short, and it takes a, never b.
      const filler = await writeFiller(mountPoint, (await freeBytes(mountPoint)) - 1126 * 1024);
      const freeWhenFull = await freeBytes(mountPoint);
      assert.ok(freeWhenFull < minFree && freeWhenFull + (a.layerSizes[0] ?? 0) < (c.layerSizes[0] ?? 0), `${freeWhenFull} bytes free`);
      await serveExactly('b', b, full.b);

      const cut = await rawGet(layerUrl('c', c));
      t.diagnostic(`the layer that did not fit: ${cut.status}, ${cut.body.length} of ${c.layerSizes[0]} bytes`);
      assert.ok(!(cut.status === 200 && cut.complete), `never a complete-looking 200: ${cut.status}, ${cut.body.length} bytes`);
      if (cut.status === 200) assert.ok(cut.body.length < (c.layerSizes[0] ?? 0), 'a cut response, short of the whole');
      else assert.equal(cut.status, 503, cut.body.toString('utf8'));
      await mirror.fillsSettled();
      assert.deepEqual(await temporaryFiles(dataDir), [], 'no temporary left');
      assert.ok(!metadataRows(dataDir).blobs.includes(layerOf(c)), 'nothing recorded for the layer that did not fit');
      assert.equal(await fileExists(committedBlobPath(dataDir, layerOf(c))), false);
      await serveExactly('b', b, full.b);

      await waitUntil('eviction frees space', async () => (await mirror.metricValue('regmirror_evictions_total', { reason: 'min_free_space' })) > 0, 20_000);
      assert.ok((await freeBytes(mountPoint)) > freeWhenFull, 'space came back');
      const held = metadataRows(dataDir).blobs;
      assert.ok(!held.includes(layerOf(a)), 'a, the least recently used, was evicted');
      assert.ok(held.includes(layerOf(b)), 'b, read while the disk was full, stayed');
      await serveExactly('b', b, full.b);
      await upstream.settle();
      assert.equal(upstreamBlobGets(upstream, 'eviction/full-b', layerOf(b)), 1, 'b was served from the cache throughout');

      await rm(filler);
      const pulled = path.join(work, 'full-c');
      await copyToOci(`docker://${mirror.host}/eviction/full-c:v1`, pulled, 'v1');
      const layer = await readFile(layoutBlobPath(pulled, layerOf(c)));
      assert.equal(sha256Of(layer), layerOf(c));
      await mirror.fillsSettled();
      assert.ok(metadataRows(dataDir).blobs.includes(layerOf(c)), 'cached once there is room');
      assert.deepEqual(await temporaryFiles(dataDir), []);
      assert.equal(await mirror.metricValue('regmirror_damaged_objects_total'), 0, 'eviction is not damage');
    });
  });
});
