// storage.s3.redirect: a cached blob's GET is a 307 to a presigned GetObject URL of the bucket (Swift's s3api),
// which skopeo follows byte for byte; HEAD, ranges, 304s and misses are answered as without it; the URL stops
// working after storage.s3.redirectTtl.

import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { startDistribution, type Distribution } from './support/distribution.js';
import { buildImageLayout, pushLayout, sha256Digest, type BuiltImage, type BuiltLayout } from './support/images.js';
import { startRegmirror, type Regmirror } from './support/regmirror.js';
import { copyToOci } from './support/skopeo.js';
import { s3StorageEnvironment, startSwift, SWIFT_SECRET_KEY, type Swift } from './support/swift.js';
import { makeTempDir, removeDir } from './support/temp.js';

const BUCKET = 'regmirror';
const PREFIX = 'redirected/';
/** Short, so that the test sees a URL expire; skopeo follows each at once. */
const TTL_SECONDS = 3;

describe('regmirror with storage.s3.redirect: true', { timeout: 300_000 }, () => {
  let swift: Swift;
  let upstream: Distribution;
  let mirror: Regmirror;
  let work: string;
  let layout: BuiltLayout;

  before(async () => {
    work = await makeTempDir('s3-redirect-');
    swift = await startSwift();
    await swift.createBucket(BUCKET);
    upstream = await startDistribution();
    // 12 MB: more than a part, streamed into a multipart upload as it fills.
    layout = await buildImageLayout(path.join(work, 'image'), 'v1', [{ layers: [{ size: 12_000_000, seed: 6101 }, { size: 70_000, seed: 6102 }] }]);
    await pushLayout(layout, `127.0.0.1:${upstream.port}/team/app:v1`);
    mirror = await startRegmirror({
      upstreams: [upstream.url],
      env: { ...s3StorageEnvironment(swift, BUCKET, PREFIX), REGMIRROR_STORAGE_S3_REDIRECT: 'true', REGMIRROR_STORAGE_S3_REDIRECT_TTL: `${TTL_SECONDS}s` },
    });
  });

  after(async () => {
    await mirror?.destroy();
    await upstream?.destroy();
    await swift?.destroy();
    await removeDir(work);
  });

  const image = (): BuiltImage => {
    const built = layout.images[0];
    assert.ok(built !== undefined);
    return built;
  };

  async function pullExactly(name: string): Promise<void> {
    const out = path.join(work, name);
    await copyToOci(`docker://${mirror.host}/team/app:v1`, out, 'v1');
    const pushed = image();
    for (const digest of [...pushed.layerDigests, pushed.configDigest]) {
      const copied = await readFile(path.join(out, 'blobs', 'sha256', digest.slice(7)));
      const original = await readFile(path.join(layout.dir, 'blobs', 'sha256', digest.slice(7)));
      assert.ok(copied.equals(original), `${digest} differs`);
    }
  }

  it('streams a cold pull, then sends skopeo to the bucket for the cached blobs: byte for byte both times', async () => {
    await pullExactly('cold');
    await mirror.fillsSettled();
    await mirror.settle();
    const coldGets = mirror.accessEntries().filter((entry) => entry.method === 'GET' && entry.path.includes('/blobs/'));
    assert.ok(coldGets.length >= 3 && coldGets.every((entry) => entry.status === 200 && entry.cache === 'miss'), JSON.stringify(coldGets));
    await pullExactly('warm');
    await mirror.settle();
    const warmGets = mirror.accessEntries().filter((entry) => entry.method === 'GET' && entry.path.includes('/blobs/')).slice(coldGets.length);
    assert.ok(warmGets.length >= 3, JSON.stringify(warmGets));
    for (const entry of warmGets) {
      assert.equal(entry.status, 307, `${entry.path} redirected`);
      assert.equal(entry.cache, 'hit');
      assert.equal(entry.bytes, 0, 'no body sent by regmirror');
    }
  });

  it('answers a cached GET with a 307 to a presigned URL of the object, keeping the digest headers; the URL works, then expires', async () => {
    const layer = image().layerDigests[0];
    assert.ok(layer !== undefined);
    const response = await fetch(`${mirror.url}/v2/team/app/blobs/${layer}`, { redirect: 'manual' });
    assert.equal(response.status, 307);
    assert.equal(response.headers.get('docker-content-digest'), layer);
    assert.equal(response.headers.get('etag'), `"${layer}"`);
    assert.equal(response.headers.get('cache-control'), 'no-store');
    assert.equal(await response.text(), '');
    const location = new URL(response.headers.get('location') ?? '');
    assert.equal(`${location.origin}${location.pathname}`, `${swift.endpoint}/${BUCKET}/${PREFIX}blobs/sha256/${layer.slice(7, 9)}/${layer.slice(7)}`);
    assert.equal(location.searchParams.get('X-Amz-Expires'), String(TTL_SECONDS));
    assert.ok(location.searchParams.get('X-Amz-Signature'), 'signed');
    assert.ok(!location.href.includes(SWIFT_SECRET_KEY), 'no secret in the URL');

    const followed = await fetch(location);
    assert.equal(followed.status, 200);
    assert.equal(sha256Digest(Buffer.from(await followed.arrayBuffer())), layer);
    // fetch follows the 307 itself, as clients do.
    const direct = await fetch(`${mirror.url}/v2/team/app/blobs/${layer}`);
    assert.equal(direct.status, 200);
    assert.equal(sha256Digest(Buffer.from(await direct.arrayBuffer())), layer);

    await new Promise((resolve) => setTimeout(resolve, (TTL_SECONDS + 1.5) * 1000));
    const expired = await fetch(location);
    await expired.arrayBuffer();
    assert.equal(expired.status, 403, 'refused by the bucket once the TTL is over');
  });

  it('answers HEAD, ranges, If-None-Match and misses itself, as without redirects', async () => {
    const layer = image().layerDigests[1];
    assert.ok(layer !== undefined);
    const size = image().layerSizes[1] ?? 0;
    const head = await fetch(`${mirror.url}/v2/team/app/blobs/${layer}`, { method: 'HEAD', redirect: 'manual' });
    assert.equal(head.status, 200);
    assert.equal(head.headers.get('content-length'), String(size));
    assert.equal(head.headers.get('docker-content-digest'), layer);

    const ranged = await fetch(`${mirror.url}/v2/team/app/blobs/${layer}`, { headers: { range: 'bytes=10-19' }, redirect: 'manual' });
    assert.equal(ranged.status, 206);
    assert.equal(ranged.headers.get('content-range'), `bytes 10-19/${size}`);
    const original = await readFile(path.join(layout.dir, 'blobs', 'sha256', layer.slice(7)));
    assert.ok(Buffer.from(await ranged.arrayBuffer()).equals(original.subarray(10, 20)));

    const unchanged = await fetch(`${mirror.url}/v2/team/app/blobs/${layer}`, { headers: { 'if-none-match': `"${layer}"` }, redirect: 'manual' });
    assert.equal(unchanged.status, 304);
    assert.equal(unchanged.headers.get('location'), null);

    const unknown = sha256Digest('never pushed');
    const missing = await fetch(`${mirror.url}/v2/team/app/blobs/${unknown}`, { redirect: 'manual' });
    assert.equal(missing.status, 404);
    assert.equal(((await missing.json()) as { errors: { code: string }[] }).errors[0]?.code, 'BLOB_UNKNOWN');
  });
});
