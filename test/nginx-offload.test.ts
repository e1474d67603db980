// The X-Accel-Redirect offload with Debian's nginx in front, configured exactly as docs/nginx.md says:
// cached blob GETs (whole or one range) are sent by nginx with the registry's headers; misses stream from
// the fill through nginx; HEAD, 304 and a bad range stay with regmirror; the internal location is closed.

import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFile, rm } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { startDistribution, type Distribution } from './support/distribution.js';
import { committedBlobPath, fileExists, waitUntil } from './support/fault-upstream.js';
import { buildImageLayout, layoutBlobPath, pushLayout, type BuiltLayout } from './support/images.js';
import { startNginx, type Nginx } from './support/nginx.js';
import { startRegmirror, type Regmirror } from './support/regmirror.js';
import { copyToOci } from './support/skopeo.js';
import { makeTempDir, removeDir } from './support/temp.js';

const PREFIX = '/_regmirror_data';

describe('X-Accel-Redirect offload behind nginx', () => {
  let upstream: Distribution;
  let mirror: Regmirror;
  let nginx: Nginx;
  let work: string;
  let layout: BuiltLayout;
  let layer: { digest: string; bytes: Buffer };
  /** A blob only the miss test asks for, so it is cold there whatever ran before. */
  let solo: { digest: string; bytes: Buffer };

  before(async () => {
    work = await makeTempDir('nginx-offload-');
    upstream = await startDistribution();
    layout = await buildImageLayout(path.join(work, 'image'), 'v1', [{ layers: [{ size: 700_000, seed: 51 }, { size: 30_000, seed: 52 }] }]);
    await pushLayout(layout, `127.0.0.1:${upstream.port}/team/app:v1`);
    mirror = await startRegmirror({ upstreams: [upstream.url], env: { REGMIRROR_OFFLOAD_X_ACCEL_REDIRECT: PREFIX } });
    nginx = await startNginx({ upstream: mirror.host, dataDir: mirror.dataDir, accessLog: true });
    const digest = layout.images[0]?.layerDigests[0] ?? '';
    layer = { digest, bytes: await readFile(layoutBlobPath(layout.dir, digest)) };
    const soloLayout = await buildImageLayout(path.join(work, 'solo'), 'v1', [{ layers: [{ size: 600_000, seed: 53 }] }]);
    await pushLayout(soloLayout, `127.0.0.1:${upstream.port}/team/app:solo`);
    const soloDigest = soloLayout.images[0]?.layerDigests[0] ?? '';
    solo = { digest: soloDigest, bytes: await readFile(layoutBlobPath(soloLayout.dir, soloDigest)) };
  });

  after(async () => {
    if (process.env.DEBUG_MIRROR) console.log(mirror?.lines().join('\n'));
    await nginx?.stop();
    await mirror?.destroy();
    await upstream?.destroy();
    await removeDir(work);
  });

  const blobUrl = (digest: string): string => `${nginx.url}/v2/team/app/blobs/${digest}`;
  const sha256 = (bytes: Buffer): string => `sha256:${createHash('sha256').update(bytes).digest('hex')}`;

  /** regmirror's access-log entries for one blob, by method. */
  async function mirrorEntries(digest: string, method: string): Promise<Array<{ bytes: number; cache: string; status: number }>> {
    await mirror.settle();
    return mirror.accessEntries().filter((entry) => entry.method === method && entry.path.endsWith(`/blobs/${digest}`));
  }

  /** The blob cached (fetched once through nginx if need be), for the tests about what nginx sends. */
  async function ensureCached(blob: { digest: string; bytes: Buffer }): Promise<void> {
    const response = await fetch(blobUrl(blob.digest));
    assert.ok(Buffer.from(await response.arrayBuffer()).equals(blob.bytes));
    await waitUntil('the blob is committed', () => fileExists(committedBlobPath(mirror.dataDir, blob.digest)));
  }

  it('streams a miss from the fill through nginx, then lets nginx send the cached file', async () => {
    const layer = solo;
    const cold = await fetch(blobUrl(layer.digest));
    assert.equal(cold.status, 200);
    assert.equal(sha256(Buffer.from(await cold.arrayBuffer())), layer.digest);
    assert.equal(cold.headers.get('x-accel-redirect'), null);
    await mirror.fillsSettled();

    const warm = await fetch(blobUrl(layer.digest));
    const body = Buffer.from(await warm.arrayBuffer());
    assert.equal(warm.status, 200);
    assert.ok(body.equals(layer.bytes), 'nginx sent the blob as stored');
    assert.equal(warm.headers.get('content-length'), String(layer.bytes.length));
    assert.equal(warm.headers.get('docker-content-digest'), layer.digest);
    assert.equal(warm.headers.get('etag'), `"${layer.digest}"`);
    assert.equal(warm.headers.get('content-type'), 'application/octet-stream');
    assert.equal(warm.headers.get('docker-distribution-api-version'), 'registry/2.0');
    assert.equal(warm.headers.get('x-accel-redirect'), null, 'nginx consumes the header');

    const entries = await mirrorEntries(layer.digest, 'GET');
    assert.deepEqual(
      entries.map((entry) => [entry.status, entry.cache, entry.bytes === 0 ? 'no body' : 'body']),
      [
        [200, 'miss', 'body'],
        [200, 'hit', 'no body'],
      ],
    );
  });

  it('lets nginx answer a Range on a cached blob with 206', async () => {
    await ensureCached(layer);
    const response = await fetch(blobUrl(layer.digest), { headers: { range: 'bytes=1000-1999' } });
    assert.equal(response.status, 206);
    assert.equal(response.headers.get('content-range'), `bytes 1000-1999/${layer.bytes.length}`);
    assert.equal(response.headers.get('docker-content-digest'), layer.digest);
    assert.ok(Buffer.from(await response.arrayBuffer()).equals(layer.bytes.subarray(1000, 2000)));
  });

  it('sends the whole blob for several ranges, as regmirror itself does', async () => {
    await ensureCached(layer);
    const response = await fetch(blobUrl(layer.digest), { headers: { range: 'bytes=0-9,20-29' } });
    assert.equal(response.status, 200);
    assert.equal(Buffer.from(await response.arrayBuffer()).length, layer.bytes.length);
  });

  it('keeps an unsatisfiable range, HEAD and If-None-Match with regmirror', async () => {
    await ensureCached(layer);
    const beyond = await fetch(blobUrl(layer.digest), { headers: { range: `bytes=${layer.bytes.length + 10}-` } });
    assert.equal(beyond.status, 416);
    assert.equal(beyond.headers.get('content-range'), `bytes */${layer.bytes.length}`);
    const error = (await beyond.json()) as { errors: Array<{ code: string }> };
    assert.equal(error.errors[0]?.code, 'RANGE_INVALID');

    const headsBefore = (await mirrorEntries(layer.digest, 'HEAD')).length;
    const head = await fetch(blobUrl(layer.digest), { method: 'HEAD' });
    assert.equal(head.status, 200);
    assert.equal(head.headers.get('content-length'), String(layer.bytes.length));
    assert.equal(head.headers.get('docker-content-digest'), layer.digest);
    assert.equal(head.headers.get('x-accel-redirect'), null);
    assert.deepEqual((await mirrorEntries(layer.digest, 'HEAD')).slice(headsBefore).map((entry) => [entry.status, entry.cache]), [[200, 'hit']]);

    const unchanged = await fetch(blobUrl(layer.digest), { headers: { 'if-none-match': `"${layer.digest}"` } });
    assert.equal(unchanged.status, 304);
  });

  it('answers a direct request to regmirror with the redirect header and no body', async () => {
    await ensureCached(layer);
    const response = await fetch(`${mirror.url}/v2/team/app/blobs/${layer.digest}`);
    assert.equal(response.status, 200);
    assert.equal(response.headers.get('x-accel-redirect'), `${PREFIX}/blobs/sha256/${layer.digest.slice(7, 9)}/${layer.digest.slice(7)}`);
    assert.equal((await response.arrayBuffer()).byteLength, 0);
  });

  it('keeps the internal location out of clients\' reach', async () => {
    const response = await fetch(`${nginx.url}${PREFIX}/blobs/sha256/${layer.digest.slice(7, 9)}/${layer.digest.slice(7)}`);
    assert.equal(response.status, 404);
    await response.arrayBuffer();
  });

  it('fetches a blob again when its file went missing, instead of redirecting to nothing', async () => {
    await ensureCached(layer);
    const hex = layer.digest.slice(7);
    await rm(path.join(mirror.dataDir, 'blobs', 'sha256', hex.slice(0, 2), hex));
    const response = await fetch(blobUrl(layer.digest));
    assert.equal(response.status, 200);
    assert.ok(Buffer.from(await response.arrayBuffer()).equals(layer.bytes));
    const last = (await mirrorEntries(layer.digest, 'GET')).at(-1);
    assert.equal(last?.cache, 'miss');
  });

  it('pulls a whole image with skopeo through nginx, cold and warm', async () => {
    for (const round of ['cold', 'warm']) {
      const out = path.join(work, `pull-${round}`);
      await copyToOci(`docker://127.0.0.1:${nginx.port}/team/app:v1`, out, 'v1');
      for (const digest of layout.images[0]?.layerDigests ?? []) {
        const copied = await readFile(layoutBlobPath(out, digest));
        assert.equal(sha256(copied), digest, `${round}: layer ${digest}`);
      }
    }
    const offloaded = (await nginx.accessLog()).filter((line) => line.includes('/blobs/') && / 200 /.test(line));
    assert.ok(offloaded.length > 0, 'nginx logged the blob GETs');
  });
});
