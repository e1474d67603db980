// A full disk is the storage failing, not a bug (issue 9, typed errors from the stores): with the data
// directory on a full tmpfs, a cold manifest and a v1 push are answered 503 in their protocol's shape and
// logged as errors with the cause; a cold blob is never given whole; nothing partial is committed; once there
// is space again the same requests succeed.

import assert from 'node:assert/strict';
import { mkdir, readFile, readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { runCommand, unmountUnder } from './support/commands.js';
import { startDistribution, type Distribution } from './support/distribution.js';
import { rawGet, sha256Of } from './support/fault-upstream.js';
import { fillDisk } from './support/full-disk.js';
import { buildImageLayout, layoutBlobPath, pushLayout, type BuiltLayout } from './support/images.js';
import { startRegmirror, type Regmirror } from './support/regmirror.js';
import { makeTempDir, removeDir } from './support/temp.js';
import { makeV1Chain, V1Client, v1Request } from './support/v1-client.js';

const REPOSITORY = 'team/full';
const STORAGE_UNAVAILABLE = 'storage unavailable; retry later';

/** Error-level log lines saying the storage is unavailable, with the system's or the database's code. */
function storageErrors(mirror: Regmirror): Array<{ type: string; code: string }> {
  return mirror
    .lines()
    .filter((line) => line.startsWith('{'))
    .map((line) => JSON.parse(line) as { level: number; msg: string; err?: { type: string; code: string } })
    .filter((entry) => entry.level === 50 && entry.msg === 'storage unavailable' && entry.err !== undefined)
    .map((entry) => ({ type: entry.err?.type ?? '', code: entry.err?.code ?? '' }));
}

describe('a full data directory', { timeout: 180_000 }, () => {
  let mountPoint: string;
  let work: string;
  let upstream: Distribution;
  let layout: BuiltLayout;

  before(async () => {
    work = await makeTempDir('storage-full-work-');
    mountPoint = await makeTempDir('storage-full-');
    await runCommand('mount', ['-t', 'tmpfs', '-o', 'size=8m', 'tmpfs', mountPoint]);
    upstream = await startDistribution();
    layout = await buildImageLayout(join(work, 'image'), 'v1', [{ layers: [{ size: 60_000, seed: 961 }] }]);
    await pushLayout(layout, `127.0.0.1:${upstream.port}/${REPOSITORY}:v1`);
  });

  after(async () => {
    await upstream?.destroy();
    if (mountPoint !== undefined) {
      await unmountUnder(mountPoint);
      await removeDir(mountPoint);
    }
    await removeDir(work);
  });

  it('v2: a cold manifest is 503 UNAVAILABLE, logged at error with the cause; a cold blob never goes out whole; all works once space is back', async () => {
    const dataDir = join(mountPoint, 'v2');
    await mkdir(dataDir);
    const mirror = await startRegmirror({ dataDir, upstreams: [upstream.url] });
    try {
      const image = layout.images[0];
      assert.ok(image !== undefined);
      const layer = image.layerDigests[0] ?? '';
      const manifestUrl = `${mirror.url}/v2/${REPOSITORY}/manifests/v1`;
      const blobUrl = `${mirror.url}/v2/${REPOSITORY}/blobs/${layer}`;
      const fillers = await fillDisk(mountPoint);

      const manifest = await rawGet(manifestUrl);
      assert.equal(manifest.status, 503);
      assert.deepEqual(JSON.parse(manifest.body.toString('utf8')), { errors: [{ code: 'UNAVAILABLE', message: STORAGE_UNAVAILABLE }] });
      const head = await rawGet(manifestUrl, { method: 'HEAD' });
      assert.equal(head.status, 503);
      await mirror.settle();
      const logged = storageErrors(mirror);
      assert.ok(logged.length >= 1, 'logged at error level');
      assert.ok(
        logged.every((entry) => (entry.type === 'StorageError' && entry.code === 'ENOSPC') || (entry.type === 'MetadataError' && entry.code === 'SQLITE_FULL')),
        JSON.stringify(logged),
      );

      const blob = await rawGet(blobUrl);
      assert.ok(!(blob.status === 200 && blob.complete), 'a blob that could not be stored is not given as whole');
      if (!blob.complete || blob.status !== 200) {
        assert.ok(blob.status === 200 || blob.status === 503, `cut, or refused: ${blob.status}`);
      }
      if (blob.status === 503) assert.deepEqual(JSON.parse(blob.body.toString('utf8')), { errors: [{ code: 'UNAVAILABLE', message: STORAGE_UNAVAILABLE }] });
      assert.deepEqual(await readdir(join(dataDir, 'blobs')).catch(() => []), [], 'nothing committed');

      for (const filler of fillers) await rm(filler);
      const again = await rawGet(manifestUrl, { headers: { accept: 'application/vnd.oci.image.manifest.v1+json' } });
      assert.equal(again.status, 200);
      assert.ok(again.body.equals(image.manifestBytes));
      const blobAgain = await rawGet(blobUrl);
      assert.equal(blobAgain.status, 200);
      assert.ok(blobAgain.complete);
      assert.ok(blobAgain.body.equals(await readFile(layoutBlobPath(layout.dir, layer))));
      assert.equal(sha256Of(blobAgain.body), layer);
    } finally {
      await mirror.stop();
    }
  });

  it('v1: a push to a plain registry is answered 503 in the v1 shape; once space is back the push completes', async () => {
    const dataDir = join(mountPoint, 'v1');
    await mkdir(dataDir);
    const registry = await startRegmirror({ dataDir });
    try {
      const [image] = makeV1Chain('full', [{ size: 40_000, seed: 962 }]);
      assert.ok(image !== undefined);
      const fillers = await fillDisk(mountPoint);
      const refused = await v1Request(`${registry.url}/v1/images/${image.id}/json`, { method: 'PUT', headers: { 'content-type': 'application/json' }, body: image.json });
      assert.equal(refused.status, 503);
      assert.deepEqual(JSON.parse(refused.body.toString('utf8')), { error: STORAGE_UNAVAILABLE });
      await registry.settle();
      assert.ok(storageErrors(registry).length >= 1, 'logged at error level');

      for (const filler of fillers) await rm(filler);
      const client = new V1Client(registry.url);
      await client.push('team/full', 'v1', [image]);
      const pulled = await client.pull('team/full', 'v1');
      assert.ok(pulled.images[0]?.layer.equals(image.layer));
    } finally {
      await registry.stop();
    }
  });
});
