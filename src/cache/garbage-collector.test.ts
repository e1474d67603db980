// Garbage collection over a real LocalRegistry (fs store and SQLite): what tags, pins and recent reads hold is
// kept with all it references; the rest goes once older than the grace; orphans and abandoned temporaries go;
// a dry run removes nothing and reports the same.

import assert from 'node:assert/strict';
import { access, mkdir, rm, utimes, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterEach, beforeEach, describe, it } from 'node:test';
import type { SqliteMetadataStore } from '../meta/sqlite-store.js';
import { digestOf, type Digest } from '../oci/digest.js';
import { cacheImageManifest, cacheRandomBlob, openRegistry } from '../registry/local-registry.fixture.js';
import type { LocalRegistry } from '../registry/local-registry.js';
import type { FsObjectStore } from '../store/fs-store.js';
import { contentKey } from '../store/layout.js';
import type { Metrics } from '../telemetry/metrics.js';
import { GarbageCollector, type Collected, type GcOptions } from './garbage-collector.js';

const REPOSITORY = { registry: 'docker.io', name: 'library/app' };
const HOUR = 3_600_000;

describe('GarbageCollector', () => {
  let clock: number;
  let root: string, store: FsObjectStore, meta: SqliteMetadataStore, metrics: Metrics, local: LocalRegistry;

  beforeEach(async () => {
    clock = Date.now() - 3 * HOUR;
    ({ root, store, meta, metrics, local } = await openRegistry(() => clock));
  });

  afterEach(async () => {
    await meta.close();
    await rm(root, { recursive: true, force: true });
  });

  function collector(options: Partial<GcOptions> = {}, collected: Collected[] = []): GarbageCollector {
    return new GarbageCollector(local, {
      graceMs: HOUR,
      pinned: () => new Set(),
      abandonedTemporaryMs: HOUR,
      metrics,
      log: { info: () => undefined, error: () => undefined },
      onCollected: (entry) => collected.push(entry),
      now: () => clock,
      ...options,
    });
  }

  /** An image over the shared base and a layer of its own; returns the digests only it holds. */
  async function cacheImage(base: Digest, label: string): Promise<{ manifest: Digest; own: Digest[] }> {
    const config = await cacheRandomBlob(local, 100, REPOSITORY);
    const layer = await cacheRandomBlob(local, 3_000, REPOSITORY);
    const layers = [
      { digest: base, size: 8_000 },
      { digest: layer.digest, size: 3_000 },
    ];
    const { digest } = await cacheImageManifest(local, { digest: config.digest, size: 100 }, layers, label, REPOSITORY);
    return { manifest: digest, own: [config.digest, layer.digest] };
  }

  async function cached(digest: Digest): Promise<boolean> {
    const record = (await meta.getBlob(digest)) ?? (await meta.getManifest(digest));
    const file = await exists(store.filePath(contentKey(digest)));
    assert.equal(record !== undefined, file, `record and file of ${digest} go together`);
    return file;
  }

  it('keeps what tags, pins and recent reads hold; sweeps the rest once older than the grace', async () => {
    const base = (await cacheRandomBlob(local, 8_000, REPOSITORY)).digest;
    const tagged = await cacheImage(base, 'tagged');
    const untagged = await cacheImage(base, 'untagged');
    const pinned = await cacheImage(base, 'pinned');
    const stray = (await cacheRandomBlob(local, 500, REPOSITORY)).digest;
    await local.setTag(REPOSITORY, 'v1', tagged.manifest);
    clock += 2 * HOUR;
    const recent = await cacheImage(base, 'recent');

    const collected: Collected[] = [];
    const report = await collector({ pinned: () => new Set([pinned.manifest]) }, collected).run({ dryRun: false });

    for (const digest of [tagged.manifest, ...tagged.own, base, pinned.manifest, ...pinned.own, recent.manifest, ...recent.own]) assert.equal(await cached(digest), true);
    for (const digest of [untagged.manifest, ...untagged.own, stray]) assert.equal(await cached(digest), false);
    assert.deepEqual(report.removed, { manifest: 1, blob: 3, orphan_file: 0, orphan_record: 0, temporary: 0 });
    assert.equal(report.freedBytes, collected.reduce((sum, entry) => sum + entry.bytes, 0));
    assert.ok(report.freedBytes > 3_600, 'the untagged image and the stray blob');
    assert.equal((await metrics.gcRemoved.get()).values.find((value) => value.labels.kind === 'blob')?.value, 3);
    assert.equal((await metrics.gcFreedBytes.get()).values[0]?.value, report.freedBytes);
  });

  it('keeps content read within the grace, and what it references', async () => {
    const base = (await cacheRandomBlob(local, 8_000, REPOSITORY)).digest;
    const image = await cacheImage(base, 'read lately');
    clock += 2 * HOUR;
    await local.getManifest(image.manifest);
    const report = await collector().run({ dryRun: false });
    assert.equal(report.removed.manifest + report.removed.blob, 0);
    for (const digest of [image.manifest, ...image.own, base]) assert.equal(await cached(digest), true);
  });

  it('removes an unreferenced index before its children', async () => {
    const base = (await cacheRandomBlob(local, 8_000, REPOSITORY)).digest;
    const child = await cacheImage(base, 'child');
    const indexBytes = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: 'application/vnd.oci.image.index.v1+json', manifests: [{ mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: child.manifest, size: 1, platform: { os: 'linux', architecture: 'amd64' } }] }));
    const index = digestOf(indexBytes);
    await local.putManifest({ digest: index, mediaType: 'application/vnd.oci.image.index.v1+json', bytes: indexBytes }, { references: [{ digest: child.manifest, role: 'manifest' }] });
    clock += 2 * HOUR;
    const report = await collector().run({ dryRun: false });
    assert.equal(report.removed.manifest, 2);
    assert.equal(await cached(index), false);
    assert.equal(await cached(child.manifest), false);
  });

  it('removes orphan files older than the grace, records whose file is gone, and abandoned temporaries', async () => {
    clock = Date.now();
    const orphan = Buffer.from('no record names me');
    const orphanKey = contentKey(digestOf(orphan));
    const young = Buffer.from('written a moment ago');
    await store.putBytes(orphanKey, orphan);
    await store.putBytes(contentKey(digestOf(young)), young);
    const twoHoursAgo = new Date(Date.now() - 2 * HOUR);
    await utimes(store.filePath(orphanKey), twoHoursAgo, twoHoursAgo);
    const lost = (await cacheRandomBlob(local, 300)).digest;
    await rm(store.filePath(contentKey(lost)));
    await mkdir(path.join(root, 'tmp'), { recursive: true });
    await writeFile(path.join(root, 'tmp', 'abandoned'), 'x'.repeat(50));
    await utimes(path.join(root, 'tmp', 'abandoned'), twoHoursAgo, twoHoursAgo);
    const working = await store.createWriter();
    await working.append(Buffer.from('a fill in progress'));

    const collected: Collected[] = [];
    const report = await collector({}, collected).run({ dryRun: false });
    assert.deepEqual(report.removed, { manifest: 0, blob: 0, orphan_file: 1, orphan_record: 1, temporary: 1 });
    assert.equal(await exists(store.filePath(orphanKey)), false);
    assert.equal(await exists(store.filePath(contentKey(digestOf(young)))), true, 'a file younger than the grace may be a commit between its rename and its record');
    assert.equal(await meta.getBlob(lost), undefined);
    assert.deepEqual((await store.listTemporaries()).map((temporary) => temporary.size), [18], 'the fill in progress keeps its temporary');
    assert.deepEqual(
      collected.map((entry) => entry.kind),
      ['orphan_file', 'orphan_record', 'temporary'],
    );
    await working.abort();
  });

  it('offline, takes every temporary as abandoned', async () => {
    const spool = await store.createWriter();
    await spool.append(Buffer.from('left by a crash'));
    const report = await collector({ abandonedTemporaryMs: undefined }).run({ dryRun: false });
    assert.equal(report.removed.temporary, 1);
    assert.deepEqual(await store.listTemporaries(), []);
  });

  it('in a dry run, reports what it would remove and removes nothing', async () => {
    const base = (await cacheRandomBlob(local, 8_000, REPOSITORY)).digest;
    const image = await cacheImage(base, 'untagged');
    clock += 2 * HOUR;
    const collected: Collected[] = [];
    const dry = await collector({}, collected).run({ dryRun: true });
    assert.deepEqual(dry.removed, { manifest: 1, blob: 3, orphan_file: 0, orphan_record: 0, temporary: 0 });
    for (const digest of [image.manifest, ...image.own, base]) assert.equal(await cached(digest), true);
    assert.equal((await metrics.gcRuns.get()).values.length, 0, 'a dry run is not counted as a collection');
    const real = await collector().run({ dryRun: false });
    assert.deepEqual(real.removed, dry.removed);
    assert.equal(real.freedBytes, dry.freedBytes);
  });
});

async function exists(file: string): Promise<boolean> {
  return access(file).then(
    () => true,
    () => false,
  );
}
