// The evictor over a real LocalRegistry (fs store and SQLite): it keeps the cache within cache.maxSize,
// cache.minFreeSpace and cache.maxAge, whole images at a time, least recently used first, never a shared layer
// a retained image uses, never a pinned image; files go with their records. The disk's free space is given.

import assert from 'node:assert/strict';
import { access, rm } from 'node:fs/promises';
import { afterEach, beforeEach, describe, it } from 'node:test';
import type { SqliteMetadataStore } from '../meta/sqlite-store.js';
import type { Digest } from '../oci/digest.js';
import { cacheImageManifest, cacheRandomBlob, openRegistry } from '../registry/local-registry.fixture.js';
import type { LocalRegistry } from '../registry/local-registry.js';
import type { FsObjectStore } from '../store/fs-store.js';
import { contentKey } from '../store/layout.js';
import type { Metrics } from '../telemetry/metrics.js';
import { CacheEvictor, LOW_WATERMARK, type DiskSpace, type EvictionBounds } from './evictor.js';

const REPOSITORY = { registry: 'docker.io', name: 'library/app' };
const MINUTE = 60_000;
const DAY = 24 * 60 * MINUTE;

interface CachedImage {
  manifest: Digest;
  /** Its config and own layer (not the shared base). */
  own: Digest[];
  ownLayer: Buffer;
  bytes: number;
}

describe('CacheEvictor', () => {
  let root: string;
  let store: FsObjectStore;
  let meta: SqliteMetadataStore;
  let metrics: Metrics;
  let local: LocalRegistry;
  let clock: number;
  let disk: DiskSpace;
  let base: Digest;
  const logged: string[] = [];

  beforeEach(async () => {
    clock = 1_800_000_000_000;
    disk = { freeBytes: 1e12, totalBytes: 2e12 };
    ({ root, store, meta, metrics, local } = await openRegistry(() => clock));
    base = (await cacheRandomBlob(local, 10_000, REPOSITORY)).digest;
  });

  afterEach(async () => {
    await meta.close();
    await rm(root, { recursive: true, force: true });
  });

  function evictor(bounds: Partial<EvictionBounds>, pinned: ReadonlySet<Digest> = new Set()): CacheEvictor {
    const log = { info: (_fields: object, message: string) => logged.push(message), warn: (_fields: object, message: string) => logged.push(message), error: () => undefined };
    return new CacheEvictor(local, { maxSizeBytes: undefined, minFreeSpace: { bytes: 0 }, inUseWindowMs: MINUTE, maxAgeMs: undefined, ...bounds }, metrics, {
      dataDir: root,
      pinned: () => pinned,
      log,
      now: () => clock,
      diskSpace: () => Promise.resolve(disk),
    });
  }

  /** An image of a config, the shared base layer and a layer of its own (~5 KB), stored as a pull would, then read at `clock`. */
  async function cacheImage(label: string): Promise<CachedImage> {
    const config = await cacheRandomBlob(local, 200, REPOSITORY);
    const layer = await cacheRandomBlob(local, 5_000, REPOSITORY);
    const layers = [
      { digest: base, size: 10_000 },
      { digest: layer.digest, size: 5_000 },
    ];
    const { digest, bytes } = await cacheImageManifest(local, { digest: config.digest, size: 200 }, layers, label, REPOSITORY);
    return { manifest: digest, own: [config.digest, layer.digest], ownLayer: layer.bytes, bytes: bytes.length + 5_200 };
  }

  /** Images cached one minute apart, oldest first, all idle by the time eviction runs. */
  async function cacheImages(count: number): Promise<CachedImage[]> {
    const images: CachedImage[] = [];
    for (let index = 0; index < count; index++) {
      images.push(await cacheImage(`image ${index}`));
      clock += MINUTE;
    }
    clock += 10 * MINUTE;
    return images;
  }

  async function held(): Promise<number> {
    const totals = await meta.totals();
    return totals.blobBytes + totals.manifestBytes;
  }

  async function isCached(image: CachedImage): Promise<boolean> {
    const records = await Promise.all([meta.getManifest(image.manifest), ...image.own.map((digest) => meta.getBlob(digest))]);
    const files = await Promise.all([image.manifest, ...image.own].map((digest) => exists(store.filePath(contentKey(digest)))));
    assert.equal(new Set([...records.map((record) => record !== undefined), ...files]).size, 1, 'records and files go together');
    return records[0] !== undefined;
  }

  async function counter(metric: 'evictions' | 'evictedBytes', reason: string): Promise<number> {
    return (await metrics[metric].get()).values.find((value) => value.labels.reason === reason)?.value ?? 0;
  }

  it('does nothing within its bounds', async () => {
    await cacheImages(3);
    const report = await evictor({ maxSizeBytes: 1_000_000 }).run();
    assert.equal(report.reason, undefined);
    assert.equal(report.images, 0);
  });

  it('evicts least recently used images down to the low watermark of cache.maxSize, keeping the shared base', async () => {
    const images = await cacheImages(5);
    const maxSizeBytes = (await held()) - 1;
    const report = await evictor({ maxSizeBytes }).run();
    assert.equal(report.reason, 'max_size');
    assert.ok((await held()) <= maxSizeBytes * LOW_WATERMARK, 'down to the low watermark');
    const kept = await Promise.all(images.map((image) => isCached(image)));
    const evicted = kept.filter((cached) => !cached).length;
    assert.equal(evicted, report.images);
    assert.deepEqual(kept, [...Array<boolean>(evicted).fill(false), ...Array<boolean>(5 - evicted).fill(true)], 'the oldest go first');
    assert.notEqual(await meta.getBlob(base), undefined, 'the base layer stays while a retained image uses it');
    assert.equal(await counter('evictions', 'max_size'), evicted);
    assert.equal(await counter('evictedBytes', 'max_size'), report.freedBytes);
  });

  it('keeps an image read since it was cached: a hit refreshes the whole image', async () => {
    const [first, second] = await cacheImages(3);
    assert.ok(first !== undefined && second !== undefined);
    clock += MINUTE;
    await local.getManifest(first.manifest);
    clock += 10 * MINUTE;
    await evictor({ maxSizeBytes: (await held()) - 1 }).run();
    assert.equal(await isCached(first), true, 'read most recently');
    assert.equal(await isCached(second), false, 'now the least recently used');
  });

  it('never evicts a pinned image, and says when the bound cannot be reached', async () => {
    const images = await cacheImages(2);
    const pinned = new Set(images.map((image) => image.manifest));
    const report = await evictor({ maxSizeBytes: 1 }, pinned).run();
    assert.equal(report.reachesTarget, false);
    for (const image of images) assert.equal(await isCached(image), true);
    assert.equal(report.images, 0);
    assert.ok(logged.includes('cache above its bound with nothing it may evict: what it holds is pinned'));
  });

  it('evicts images in use only when nothing else is left', async () => {
    const [idle, busy] = await cacheImages(2);
    assert.ok(idle !== undefined && busy !== undefined);
    await local.getManifest(busy.manifest);
    const oneImage = busy.bytes + 10_000;
    await evictor({ maxSizeBytes: Math.ceil(oneImage / LOW_WATERMARK) + 1 }).run();
    assert.equal(await isCached(idle), false);
    assert.equal(await isCached(busy), true, 'the bound was met without it');
    clock += 1; // a read in the very millisecond of the decision counts as a read since
    await evictor({ maxSizeBytes: 1 }).run();
    assert.equal(await isCached(busy), false, 'the bound wins');
    assert.equal(await meta.getBlob(base), undefined, 'and the base goes with the last image');
  });

  it('frees space when the filesystem runs short of cache.minFreeSpace', async () => {
    const images = await cacheImages(4);
    disk = { freeBytes: 1_000, totalBytes: 100_000 };
    const report = await evictor({ minFreeSpace: { percent: 10 } }).run();
    assert.equal(report.reason, 'min_free_space');
    const needed = 10_000 * (2 - LOW_WATERMARK) - disk.freeBytes;
    assert.ok(report.freedBytes >= needed, `freed ${report.freedBytes}, needed ${needed}`);
    assert.equal(await isCached(images[0] as CachedImage), false);
    assert.equal(await isCached(images[3] as CachedImage), true);
    assert.equal(await counter('evictions', 'min_free_space'), report.images);
  });

  it('evicts what was not read for cache.maxAge, whatever the size', async () => {
    const [old] = await cacheImages(1);
    clock += 8 * DAY;
    const [fresh] = await cacheImages(1);
    assert.ok(old !== undefined && fresh !== undefined);
    const report = await evictor({ maxAgeMs: 7 * DAY }).run();
    assert.equal(report.reason, 'max_age');
    assert.equal(await isCached(old), false);
    assert.equal(await isCached(fresh), true);
    assert.equal(await counter('evictions', 'max_age'), 1);
  });

  it('lets a commit of a digest being removed wait, so its new file is not the one deleted', async () => {
    const [image] = await cacheImages(1);
    assert.ok(image !== undefined);
    const layer = image.own[1] as Digest;
    const spool = await local.createBlobWriter();
    await spool.append(image.ownLayer);
    const removal = local.removeContent({ manifests: [image.manifest], blobs: image.own, readBefore: clock });
    const recommit = local.commitBlob(spool, layer, image.ownLayer.length);
    const [removed] = await Promise.all([removal, recommit]);
    await spool.close();
    assert.ok(removed.blobs.some((entry) => entry.digest === layer), 'the removal removed the layer');
    assert.equal((await meta.getBlob(layer))?.size, image.ownLayer.length, 'then the commit recorded it again');
    assert.equal(await exists(store.filePath(contentKey(layer))), true, 'and its file is there');
  });
});

async function exists(file: string): Promise<boolean> {
  return access(file).then(
    () => true,
    () => false,
  );
}
