// The local registry over the fs store and SQLite: a cached object that is not what its record says
// (file truncated, missing, or a manifest with a flipped byte) is never served; it is dropped, logged and counted.

import assert from 'node:assert/strict';
import { readFile, rm, truncate, writeFile } from 'node:fs/promises';
import type { Readable } from 'node:stream';
import { afterEach, beforeEach, describe, it } from 'node:test';
import type { SqliteMetadataStore } from '../meta/sqlite-store.js';
import { digestOf, type Digest } from '../oci/digest.js';
import type { FsObjectStore } from '../store/fs-store.js';
import { contentKey } from '../store/layout.js';
import type { Metrics } from '../telemetry/metrics.js';
import type { LocalRegistry } from './local-registry.js';
import { cacheRandomBlob, openRegistry } from './local-registry.fixture.js';

async function readAll(stream: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

describe('LocalRegistry: damaged cached objects', () => {
  let root: string;
  let store: FsObjectStore;
  let meta: SqliteMetadataStore;
  let metrics: Metrics;
  let warnings: Array<{ fields: Record<string, unknown>; message: string }>;
  let local: LocalRegistry;

  beforeEach(async () => {
    ({ root, store, meta, metrics, warnings, local } = await openRegistry());
  });

  afterEach(async () => {
    await meta.close();
    await rm(root, { recursive: true, force: true });
  });

  async function cacheBlob(size: number): Promise<{ bytes: Buffer; digest: Digest; file: string }> {
    const { bytes, digest } = await cacheRandomBlob(local, size);
    return { bytes, digest, file: store.filePath(contentKey(digest)) };
  }

  async function damaged(kind: string, reason: string): Promise<number> {
    const metric = await metrics.damagedObjects.get();
    return metric.values.find((value) => value.labels.kind === kind && value.labels.reason === reason)?.value ?? 0;
  }

  async function assertDropped(digest: Digest, file: string): Promise<void> {
    assert.equal(await meta.getBlob(digest), undefined, 'the record is dropped');
    assert.equal(await meta.getManifest(digest), undefined);
    await assert.rejects(readFile(file), { code: 'ENOENT' }, 'the file is removed');
  }

  it('serves an intact blob, whole or a range', async () => {
    const { bytes, digest } = await cacheBlob(18_000);
    const whole = await local.openBlob(digest);
    assert.ok(whole !== undefined);
    assert.ok((await readAll(whole)).equals(bytes));
    const range = await local.openBlob(digest, { start: 100, end: 199 });
    assert.ok(range !== undefined);
    assert.ok((await readAll(range)).equals(bytes.subarray(100, 200)));
    assert.equal(await local.locateBlob(digest), contentKey(digest));
    assert.equal(await damaged('blob', 'size'), 0);
    assert.deepEqual(warnings, []);
  });

  it('drops a truncated blob on open: not served, logged with its sizes, counted, to be fetched again', async () => {
    const { digest, file } = await cacheBlob(18_000);
    await truncate(file, 100);
    assert.equal(await local.openBlob(digest), undefined);
    await assertDropped(digest, file);
    assert.equal(await damaged('blob', 'size'), 1);
    assert.equal(warnings.length, 1);
    assert.deepEqual(warnings[0]?.fields, { kind: 'blob', digest, reason: 'size', expectedSize: 18_000, actualSize: 100 });
    assert.match(warnings[0]?.message ?? '', /damaged/);
    assert.equal(await local.statBlob(digest), undefined, 'no longer cached: a mirror fills it again');
  });

  it('drops a truncated blob located for an offload, and one whose file is missing', async () => {
    const truncated = await cacheBlob(5000);
    await truncate(truncated.file, 4999);
    assert.equal(await local.locateBlob(truncated.digest), undefined);
    await assertDropped(truncated.digest, truncated.file);
    const missing = await cacheBlob(5000);
    await rm(missing.file);
    assert.equal(await local.openBlob(missing.digest), undefined);
    await assertDropped(missing.digest, missing.file);
    assert.equal(await damaged('blob', 'size'), 1);
    assert.equal(await damaged('blob', 'missing'), 1);
    assert.deepEqual(warnings[1]?.fields, { kind: 'blob', digest: missing.digest, reason: 'missing', expectedSize: 5000, actualSize: undefined });
  });

  it('drops a manifest whose bytes no longer match its digest, whether a byte flipped or the file shrank', async () => {
    const manifests = [Buffer.from('{"schemaVersion":2,"layers":[1]}'), Buffer.from('{"schemaVersion":2,"layers":[2]}')];
    const digests = manifests.map((bytes) => digestOf(bytes));
    for (const [index, bytes] of manifests.entries()) {
      await meta.putManifest({ digest: digests[index] as Digest, mediaType: 'application/vnd.oci.image.manifest.v1+json', size: bytes.length }, 1);
      await store.putBytes(contentKey(digests[index] as Digest), bytes);
    }
    const [flipped, shrunk] = digests as [Digest, Digest];
    const flippedBytes = Buffer.from(manifests[0] ?? '');
    flippedBytes[5] = (flippedBytes[5] ?? 0) ^ 0x01;
    await writeFile(store.filePath(contentKey(flipped)), flippedBytes);
    await truncate(store.filePath(contentKey(shrunk)), 10);

    assert.equal(await local.getManifest(flipped), undefined);
    assert.equal(await local.getManifest(shrunk), undefined);
    await assertDropped(flipped, store.filePath(contentKey(flipped)));
    await assertDropped(shrunk, store.filePath(contentKey(shrunk)));
    assert.equal(await damaged('manifest', 'digest'), 1);
    assert.equal(await damaged('manifest', 'size'), 1);
    assert.deepEqual(
      warnings.map((warning) => warning.fields.reason),
      ['digest', 'size'],
    );
  });
});

describe('LocalRegistry: the content graph of manifests stored before it existed', () => {
  let root: string;
  let store: FsObjectStore;
  let meta: SqliteMetadataStore;
  let local: LocalRegistry;

  beforeEach(async () => {
    ({ root, store, meta, local } = await openRegistry());
  });

  afterEach(async () => {
    await meta.close();
    await rm(root, { recursive: true, force: true });
  });

  it('records their references from their bytes, once, and leaves a damaged one alone', async () => {
    const config = digestOf(Buffer.from('config'));
    const layer = digestOf(Buffer.from('layer'));
    const mediaType = 'application/vnd.oci.image.manifest.v1+json';
    const bytes = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType, config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: config, size: 6 }, layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar', digest: layer, size: 5 }] }));
    const old = digestOf(bytes);
    // As an earlier version stored it: the bytes and the record, no graph.
    await store.putBytes(contentKey(old), bytes);
    await meta.putManifest({ digest: old, mediaType, size: bytes.length }, 1);
    const damagedBytes = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType, config: { mediaType: 'x', digest: config, size: 6 }, layers: [] }));
    const damaged = digestOf(damagedBytes);
    await store.putBytes(contentKey(damaged), Buffer.from('not what the digest says'));
    await meta.putManifest({ digest: damaged, mediaType, size: damagedBytes.length }, 1);

    assert.equal(await local.backfillReferences(), 1);
    assert.deepEqual(await meta.referencesOf(old), [
      { digest: config, role: 'config' },
      { digest: layer, role: 'layer' },
    ]);
    assert.deepEqual(await meta.referencesOf(damaged), []);
    assert.equal(await local.backfillReferences(), 0, 'nothing left to record');
  });
});
