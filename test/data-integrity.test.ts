// A damaged cached file is never served (issue 9, hole 10): a blob truncated under the mirror is fetched
// again (also when nginx would be handed the file), a manifest with a flipped byte likewise, and a plain
// registry answers BLOB_UNKNOWN; each logged and counted. Then `regmirror verify` finds each kind of damage,
// --repair removes it, and the next pull gets it all back from the upstream.

import assert from 'node:assert/strict';
import { mkdir, readFile, rm, stat, truncate, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { startDistribution, type Distribution } from './support/distribution.js';
import { committedBlobPath, rawGet, sha256Of, waitUntil } from './support/fault-upstream.js';
import { buildImageLayout, layoutBlobPath, pushLayout, type BuiltLayout } from './support/images.js';
import { runRegmirror, startRegmirror, type Regmirror } from './support/regmirror.js';
import { copyToOci } from './support/skopeo.js';
import { makeTempDir, removeDir } from './support/temp.js';
import { makeV1Chain, V1Client, v1Request } from './support/v1-client.js';

const REPOSITORY = 'team/app';

/** The JSON log lines of a regmirror with this message. */
function logged(mirror: Regmirror, message: RegExp): Array<Record<string, unknown>> {
  return mirror
    .lines()
    .filter((line) => line.startsWith('{'))
    .map((line) => JSON.parse(line) as Record<string, unknown>)
    .filter((entry) => typeof entry.msg === 'string' && message.test(entry.msg));
}

async function flipByte(file: string, offset: number): Promise<void> {
  const bytes = await readFile(file);
  bytes[offset] = (bytes[offset] ?? 0) ^ 0x20;
  await writeFile(file, bytes);
}

describe('data integrity', { timeout: 300_000 }, () => {
  let work: string;
  let upstream: Distribution;
  let layout: BuiltLayout;
  /** The image's first layer: 18000 bytes of tar+gzip or so. */
  let layerDigest: string;
  let layerBytes: Buffer;
  let manifestDigest: string;
  let manifestBytes: Buffer;

  before(async () => {
    work = await makeTempDir('data-integrity-');
    upstream = await startDistribution();
    layout = await buildImageLayout(path.join(work, 'image'), 'v1', [{ layers: [{ size: 18_000, seed: 901 }, { size: 50_000, seed: 902 }] }]);
    await pushLayout(layout, `127.0.0.1:${upstream.port}/${REPOSITORY}:v1`);
    const image = layout.images[0];
    assert.ok(image !== undefined);
    layerDigest = image.layerDigests[0] ?? '';
    layerBytes = await readFile(layoutBlobPath(layout.dir, layerDigest));
    manifestDigest = image.manifestDigest;
    manifestBytes = image.manifestBytes;
  });

  after(async () => {
    await upstream?.destroy();
    await removeDir(work);
  });

  const blobUrl = (mirror: Regmirror, digest: string): string => `${mirror.url}/v2/${REPOSITORY}/blobs/${digest}`;
  const upstreamBlobGets = async (digest: string): Promise<number> => {
    await upstream.settle();
    return upstream.countRequests('GET', new RegExp(`^/v2/${REPOSITORY}/blobs/${digest}$`));
  };

  describe('on open', () => {
    it('a truncated cached blob is fetched again: the client gets every right byte; logged with its sizes and counted', async () => {
      const mirror = await startRegmirror({ upstreams: [upstream.url] });
      try {
        const before = await upstreamBlobGets(layerDigest);
        const first = await rawGet(blobUrl(mirror, layerDigest));
        assert.equal(first.status, 200);
        assert.ok(first.body.equals(layerBytes));
        const file = committedBlobPath(mirror.dataDir, layerDigest);
        // The client has its last byte a moment before the commit (sync, rename, record) ends.
        await mirror.fillsSettled();
        await truncate(file, 100);

        const again = await rawGet(blobUrl(mirror, layerDigest));
        assert.equal(again.status, 200);
        assert.ok(again.complete, `complete (${String(again.error)})`);
        assert.equal(again.headers['content-length'], String(layerBytes.length));
        assert.ok(again.body.equals(layerBytes), 'every right byte, not 100 of them');
        assert.equal(await upstreamBlobGets(layerDigest), before + 2, 'fetched once to fill, once again after the damage');
        assert.equal(await mirror.metricValue('regmirror_damaged_objects_total', { kind: 'blob', reason: 'size' }), 1);
        const [warning] = logged(mirror, /damaged/);
        assert.ok(warning !== undefined, 'the damage is logged');
        assert.equal(warning.level, 40, 'at warn');
        assert.deepEqual([warning.digest, warning.expectedSize, warning.actualSize], [layerDigest, layerBytes.length, 100]);
        await waitUntil('the blob is committed again, whole', async () => (await stat(file).catch(() => undefined))?.size === layerBytes.length);
        assert.equal(sha256Of(await readFile(file)), layerDigest);
      } finally {
        await mirror.destroy();
      }
    });

    it('with nginx offload, a truncated blob is not handed to nginx but fetched again and streamed', async () => {
      const mirror = await startRegmirror({ upstreams: [upstream.url], env: { REGMIRROR_OFFLOAD_X_ACCEL_REDIRECT: '/_regmirror_data' } });
      try {
        const url = blobUrl(mirror, layerDigest);
        const before = await upstreamBlobGets(layerDigest);
        assert.ok((await rawGet(url)).body.equals(layerBytes), 'a miss streams');
        const file = committedBlobPath(mirror.dataDir, layerDigest);
        await waitUntil('the blob is committed', async () => (await stat(file).catch(() => undefined))?.size === layerBytes.length);
        const hit = await rawGet(url);
        assert.equal(hit.headers['x-accel-redirect'], `/_regmirror_data/blobs/sha256/${layerDigest.slice(7, 9)}/${layerDigest.slice(7)}`, 'an intact hit goes to nginx');

        await truncate(file, 100);
        const again = await rawGet(url);
        assert.equal(again.status, 200);
        assert.equal(again.headers['x-accel-redirect'], undefined, 'the damaged file is not handed over');
        assert.ok(again.complete && again.body.equals(layerBytes));
        assert.equal(await upstreamBlobGets(layerDigest), before + 2);
        assert.equal(await mirror.metricValue('regmirror_damaged_objects_total', { kind: 'blob', reason: 'size' }), 1);
      } finally {
        await mirror.destroy();
      }
    });

    it('a cached manifest with a flipped byte is fetched again (after a restart: until then memory holds the verified copy)', async () => {
      const mirror = await startRegmirror({ upstreams: [upstream.url] });
      try {
        const url = `${mirror.url}/v2/${REPOSITORY}/manifests/${manifestDigest}`;
        const accept = { accept: 'application/vnd.oci.image.manifest.v1+json' };
        assert.ok((await rawGet(url, { headers: accept })).body.equals(manifestBytes));
        await mirror.stop();
        await flipByte(committedBlobPath(mirror.dataDir, manifestDigest), 10);
        await mirror.start();
        const again = await rawGet(url, { headers: accept });
        assert.equal(again.status, 200);
        assert.ok(again.body.equals(manifestBytes), 'the exact bytes, fetched again');
        await upstream.settle();
        assert.equal(upstream.countRequests('GET', new RegExp(`^/v2/${REPOSITORY}/manifests/${manifestDigest}$`)), 2);
        assert.equal(await mirror.metricValue('regmirror_damaged_objects_total', { kind: 'manifest', reason: 'digest' }), 1);
        assert.ok(logged(mirror, /damaged/).some((entry) => entry.digest === manifestDigest && entry.kind === 'manifest'));
      } finally {
        await mirror.destroy();
      }
    });

    it('a plain registry answers BLOB_UNKNOWN for a truncated blob pushed to it, never a short body', async () => {
      const dataDir = await makeTempDir('data-integrity-plain-');
      try {
        const pushedTo = await startRegmirror({ dataDir });
        try {
          const pushed = await fetch(`${pushedTo.url}/v2/${REPOSITORY}/blobs/uploads/?digest=${layerDigest}`, { method: 'POST', body: layerBytes });
          assert.equal(pushed.status, 201);
          assert.ok((await rawGet(blobUrl(pushedTo, layerDigest))).body.equals(layerBytes));
          await waitUntil('the blob is committed', async () => (await stat(committedBlobPath(dataDir, layerDigest)).catch(() => undefined)) !== undefined);
        } finally {
          await pushedTo.stop();
        }
        const plain = await startRegmirror({ dataDir });
        try {
          await truncate(committedBlobPath(dataDir, layerDigest), 100);
          const answer = await rawGet(blobUrl(plain, layerDigest));
          assert.equal(answer.status, 404);
          assert.deepEqual(JSON.parse(answer.body.toString('utf8')), { errors: [{ code: 'BLOB_UNKNOWN', message: 'blob unknown to registry', detail: { digest: layerDigest } }] });
          assert.equal((await rawGet(blobUrl(plain, layerDigest), { method: 'HEAD' })).status, 404, 'its record is gone too');
          assert.equal(await plain.metricValue('regmirror_damaged_objects_total', { kind: 'blob', reason: 'size' }), 1);
          assert.equal(logged(plain, /damaged/).length, 1);
        } finally {
          await plain.stop();
        }
      } finally {
        await removeDir(dataDir);
      }
    });
  });

  describe('regmirror verify', () => {
    it('finds a flipped byte, a truncated file, an orphan record and file, a stale temporary and a damaged v1 layer; --repair fixes them', async () => {
      const dataDir = await makeTempDir('data-integrity-verify-');
      const verify = (...args: string[]) => runRegmirror(['verify', '--data', dataDir, ...args]);
      try {
        // v1 content pushed to a plain registry, v2 content cached by a mirror, in one data directory.
        const chain = makeV1Chain('verify', [
          { size: 30_000, seed: 911 },
          { size: 20_000, seed: 912 },
        ]);
        const plain = await startRegmirror({ dataDir });
        try {
          await new V1Client(plain.url).push('team/legacy', 'v1', chain);
        } finally {
          await plain.stop();
        }
        const mirror = await startRegmirror({ dataDir, upstreams: [upstream.url] });
        try {
          await copyToOci(`docker://${mirror.host}/${REPOSITORY}:v1`, path.join(work, 'pulled'), 'v1');
        } finally {
          await mirror.stop();
        }

        const clean = await verify();
        assert.equal(clean.code, 0, clean.stdout + clean.stderr);
        assert.match(clean.stdout, /: 4 content files and 2 v1 layers hashed \(.+\), 4 records checked; all well\n$/);

        const image = layout.images[0];
        assert.ok(image !== undefined);
        const [firstLayer = '', secondLayer = ''] = image.layerDigests;
        await flipByte(committedBlobPath(dataDir, firstLayer), 5000);
        await truncate(committedBlobPath(dataDir, secondLayer), 100);
        await rm(committedBlobPath(dataDir, image.configDigest));
        const orphan = Buffer.from('content that no record names');
        await mkdir(path.dirname(committedBlobPath(dataDir, sha256Of(orphan))), { recursive: true });
        await writeFile(committedBlobPath(dataDir, sha256Of(orphan)), orphan);
        await writeFile(path.join(dataDir, 'tmp', '1700000000000-0123456789abcdef'), 'a fill cut short');
        const v1Layer = path.join(dataDir, 'v1', 'images', chain[1]?.id ?? '', 'layer');
        await flipByte(v1Layer, 100);

        const expected = [
          `damaged blobs/sha256/${firstLayer.slice(7, 9)}/${firstLayer.slice(7)}`,
          `damaged blobs/sha256/${secondLayer.slice(7, 9)}/${secondLayer.slice(7)}`,
          `orphan-record ${image.configDigest}`,
          `orphan-file blobs/sha256/${sha256Of(orphan).slice(7, 9)}/${sha256Of(orphan).slice(7)}`,
          'temporary tmp/1700000000000-0123456789abcdef',
          `v1-layer-damaged v1/images/${chain[1]?.id ?? ''}/layer`,
        ].sort();
        const problemLines = (stdout: string): string[] =>
          stdout
            .trim()
            .split('\n')
            .slice(0, -1)
            .map((line) => line.split(': ')[0] ?? '')
            .sort();

        const found = await verify();
        assert.equal(found.code, 1, found.stderr);
        assert.deepEqual(problemLines(found.stdout), expected);
        assert.doesNotMatch(found.stdout, /repaired/);
        assert.match(found.stdout, /; 6 problems \(--repair removes them, to be fetched again\)\n$/);
        assert.equal((await readFile(committedBlobPath(dataDir, sha256Of(orphan)))).toString(), orphan.toString(), 'without --repair nothing changes');

        const repaired = await verify('--repair');
        assert.equal(repaired.code, 1, 'problems were found, even though repaired');
        assert.deepEqual(problemLines(repaired.stdout), expected);
        assert.equal(repaired.stdout.trim().split('\n').filter((line) => line.includes('[repaired: ')).length, 6);
        assert.match(repaired.stdout, /; 6 problems, 6 repaired\n$/);

        const after = await verify();
        assert.equal(after.code, 0, after.stdout);
        assert.match(after.stdout, /all well\n$/);

        // What was removed comes back from the upstream, byte for byte; the v1 layer, from nowhere: a clear 404.
        const again = await startRegmirror({ dataDir, upstreams: [upstream.url] });
        try {
          const before = await upstreamBlobGets(firstLayer);
          await copyToOci(`docker://${again.host}/${REPOSITORY}:v1`, path.join(work, 'pulled-again'), 'v1');
          for (const digest of [firstLayer, secondLayer, image.configDigest]) {
            assert.equal(sha256Of(await readFile(path.join(work, 'pulled-again', 'blobs', 'sha256', digest.slice(7)))), digest);
          }
          assert.equal(await upstreamBlobGets(firstLayer), before + 1, 'the damaged layer was fetched again');
          const layer = await v1Request(`${again.url}/v1/images/${chain[1]?.id ?? ''}/layer`);
          assert.equal(layer.status, 404);
          assert.deepEqual(JSON.parse(layer.body.toString('utf8')), { error: 'Image not found' });
        } finally {
          await again.stop();
        }
        assert.equal((await verify()).code, 0, 'and all is still well');
      } finally {
        await removeDir(dataDir);
      }
    });

    it('exits 2 on bad usage: no data directory, an unknown option', async () => {
      const missing = await runRegmirror(['verify', '--data', path.join(work, 'no-such-directory')]);
      assert.equal(missing.code, 2);
      assert.match(missing.stderr, /no data directory at .*no-such-directory/);
      const unknown = await runRegmirror(['verify', '--frobnicate']);
      assert.equal(unknown.code, 2);
      assert.match(unknown.stderr, /unknown option '--frobnicate'/);
    });
  });
});
