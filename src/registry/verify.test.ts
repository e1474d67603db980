// verify over a real fs store and SQLite: each kind of problem found once, nothing changed without repair;
// repair removes exactly what does not match, and a second pass finds all well with the good content intact.

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm, truncate, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, it } from 'node:test';
import { SqliteMetadataStore } from '../meta/sqlite-store.js';
import { digestOf, type Digest } from '../oci/digest.js';
import { FsObjectStore } from '../store/fs-store.js';
import { contentKey, V1Layout } from '../store/layout.js';
import { checksumsFile, PayloadChecksum } from '../v1/grammar.js';
import { verifyData, type Problem } from './verify.js';

const layout = new V1Layout('v1');

describe('verifyData', () => {
  let root: string;
  let store: FsObjectStore;
  let meta: SqliteMetadataStore;

  beforeEach(async () => {
    root = await mkdtemp(path.join(os.tmpdir(), 'regmirror-verify-'));
    store = new FsObjectStore(root);
    await store.init();
    meta = new SqliteMetadataStore(path.join(root, 'metadata.sqlite'));
  });

  afterEach(async () => {
    await meta.close();
    await rm(root, { recursive: true, force: true });
  });

  async function run(repair: boolean): Promise<{ problems: Problem[]; summary: Awaited<ReturnType<typeof verifyData>> }> {
    const problems: Problem[] = [];
    const summary = await verifyData(store, meta, { repair, v1: layout, onProblem: (problem) => problems.push(problem) });
    return { problems, summary };
  }

  async function blob(size: number): Promise<{ bytes: Buffer; digest: Digest; file: string }> {
    const bytes = randomBytes(size);
    const digest = digestOf(bytes);
    await store.putBytes(contentKey(digest), bytes);
    await meta.putBlob(digest, size, 1);
    return { bytes, digest, file: store.filePath(contentKey(digest)) };
  }

  async function v1Image(id: string, layer: Buffer, recordedLayer: Buffer = layer): Promise<void> {
    const json = Buffer.from(JSON.stringify({ id }));
    const checksum = new PayloadChecksum(json);
    checksum.update(recordedLayer);
    await store.putBytes(layout.imageKey(id, 'json'), json);
    await store.putBytes(layout.imageKey(id, 'layer'), layer);
    await store.putBytes(layout.imageKey(id, '_checksum'), checksumsFile([checksum.digest()]));
  }

  it('finds all well in an empty data directory and in one whose content matches', async () => {
    assert.deepEqual((await run(false)).problems, []);
    await blob(3 * 1024 * 1024 + 1);
    const manifest = Buffer.from('{"schemaVersion":2}');
    await store.putBytes(contentKey(digestOf(manifest)), manifest);
    await meta.putManifest({ digest: digestOf(manifest), mediaType: 'application/vnd.oci.image.manifest.v1+json', size: manifest.length }, 1);
    await v1Image('a'.repeat(64), randomBytes(5000));
    const { problems, summary } = await run(false);
    assert.deepEqual(problems, []);
    assert.deepEqual(summary, { contentFiles: 2, v1Layers: 1, v1Unverifiable: 0, bytes: 3 * 1024 * 1024 + 1 + manifest.length + 5000, records: 2, problems: 0, repaired: 0 });
  });

  it('reports each problem without touching anything, then repair removes exactly those, and all is well after', async () => {
    const good = await blob(20_000);
    const flipped = await blob(20_000);
    const flippedBytes = Buffer.from(flipped.bytes);
    flippedBytes[12_345] = (flippedBytes[12_345] ?? 0) ^ 0x40;
    await writeFile(flipped.file, flippedBytes);
    const truncated = await blob(18_000);
    await truncate(truncated.file, 100);
    const misrecorded = await blob(1000);
    await meta.putBlob(misrecorded.digest, 999, 1);
    const recordOnly = await blob(500);
    await rm(recordOnly.file);
    const orphanBytes = randomBytes(700);
    const orphanKey = contentKey(digestOf(orphanBytes));
    await store.putBytes(orphanKey, orphanBytes);
    await store.putBytes('blobs/sha256/zz/stray', Buffer.from('not content'));
    const leftover = await store.createWriter();
    await leftover.append(randomBytes(321));
    await leftover.close();
    const goodLayer = randomBytes(4000);
    await v1Image('b'.repeat(64), goodLayer);
    const damagedLayer = randomBytes(4000);
    await v1Image('c'.repeat(64), Buffer.concat([damagedLayer.subarray(0, 3999), Buffer.from([(damagedLayer[3999] ?? 0) ^ 1])]), damagedLayer);
    await store.putBytes(layout.imageKey('d'.repeat(64), 'layer'), randomBytes(10));
    await store.putBytes(layout.imageKey('d'.repeat(64), '_inprogress'), Buffer.from('true'));

    const found = await run(false);
    const byKind = (problems: Problem[]): string[] => problems.map((problem) => `${problem.kind} ${problem.subject}`).sort();
    const expected = [
      `damaged ${contentKey(flipped.digest)}`,
      `damaged ${contentKey(truncated.digest)}`,
      `size-mismatch ${contentKey(misrecorded.digest)}`,
      `orphan-record ${recordOnly.digest}`,
      `orphan-file ${orphanKey}`,
      'stray-file blobs/sha256/zz/stray',
      `temporary tmp/${path.basename(leftover.path)}`,
      `v1-layer-damaged ${layout.imageKey('c'.repeat(64), 'layer')}`,
    ].sort();
    assert.deepEqual(byKind(found.problems), expected);
    assert.ok(found.problems.every((problem) => problem.repaired === undefined));
    assert.match(found.problems.find((problem) => problem.kind === 'size-mismatch')?.detail ?? '', /1000 bytes, but its blob record says 999 bytes/);
    assert.equal(found.summary.problems, 8);
    assert.equal(found.summary.v1Unverifiable, 1, 'the layer of a push in progress has nothing to check against yet');
    // Nothing was changed.
    assert.notEqual(await meta.getBlob(recordOnly.digest), undefined);
    assert.notEqual(await store.stat(orphanKey), undefined);
    assert.equal((await store.listTemporaries()).length, 1);

    const repaired = await run(true);
    assert.deepEqual(byKind(repaired.problems), expected);
    assert.ok(repaired.problems.every((problem) => problem.repaired !== undefined));
    assert.equal(repaired.summary.repaired, 8);
    for (const gone of [flipped, truncated, misrecorded]) {
      assert.equal(await store.stat(contentKey(gone.digest)), undefined);
      assert.equal(await meta.getBlob(gone.digest), undefined);
    }
    assert.equal(await meta.getBlob(recordOnly.digest), undefined);
    assert.equal(await store.stat(orphanKey), undefined);
    assert.equal(await store.stat(layout.imageKey('c'.repeat(64), 'layer')), undefined, 'the damaged layer is removed');
    assert.notEqual(await store.stat(layout.imageKey('c'.repeat(64), 'json')), undefined, 'its json and checksum stay, to verify a layer fetched again');

    const after = await run(false);
    assert.deepEqual(after.problems, []);
    assert.deepEqual(await store.readBytes(contentKey(good.digest)), good.bytes);
    assert.deepEqual(await meta.getBlob(good.digest), { digest: good.digest, size: 20_000, lastAccess: 1 });
    assert.deepEqual(await store.readBytes(layout.imageKey('b'.repeat(64), 'layer')), goodLayer);
  });
});
