// One upstream fetch per missing blob, however many clients ask: 8 concurrent cold GETs of a 24 MiB
// layer, late joiners, a client that leaves mid-fill, cold HEAD and cold Range requests.

import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { request } from 'node:http';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { startDistribution, type Distribution } from './support/distribution.js';
import { buildImageLayout, pushLayout, type BuiltImage } from './support/images.js';
import { startRegmirror, type Regmirror } from './support/regmirror.js';
import { makeTempDir, removeDir } from './support/temp.js';

interface Download {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  digest: string;
  bytes: number;
  body: Buffer | undefined;
}

/** GETs a URL with node:http, hashing the body; `keepBody` keeps small bodies for comparison. */
function download(url: string, headers: Record<string, string> = {}, onFirstByte?: () => void, keepBody = false): Promise<Download> {
  return new Promise((resolve, reject) => {
    const req = request(url, { headers }, (response) => {
      const hash = createHash('sha256');
      const chunks: Buffer[] = [];
      let bytes = 0;
      response.on('data', (chunk: Buffer) => {
        if (bytes === 0) onFirstByte?.();
        bytes += chunk.length;
        hash.update(chunk);
        if (keepBody) chunks.push(chunk);
      });
      response.on('end', () =>
        resolve({
          status: response.statusCode ?? 0,
          headers: response.headers,
          digest: `sha256:${hash.digest('hex')}`,
          bytes,
          body: keepBody ? Buffer.concat(chunks) : undefined,
        }),
      );
      response.on('error', reject);
    });
    req.setTimeout(120_000, () => req.destroy(new Error('timed out')));
    req.on('error', reject);
    req.end();
  });
}

describe('single flight', () => {
  let upstream: Distribution;
  let mirror: Regmirror;
  let work: string;
  let image: BuiltImage;

  before(async () => {
    work = await makeTempDir('single-flight-');
    upstream = await startDistribution();
    const layout = await buildImageLayout(path.join(work, 'layout'), 'big', [
      {
        layers: [
          { size: 24 * 1024 * 1024, seed: 101 },
          { size: 8 * 1024 * 1024, seed: 102 },
          { size: 8 * 1024 * 1024, seed: 103 },
          { size: 1024 * 1024, seed: 104 },
          { size: 1024 * 1024, seed: 105 },
        ],
      },
    ]);
    image = layout.images[0] as BuiltImage;
    await pushLayout(layout, `127.0.0.1:${upstream.port}/team/big:v1`);
    mirror = await startRegmirror({ upstreams: [upstream.url] });
  });

  after(async () => {
    await mirror?.destroy();
    await upstream?.destroy();
    await removeDir(work);
  });

  const blobUrl = (digest: string): string => `${mirror.url}/v2/team/big/blobs/${digest}`;
  const upstreamGets = async (digest: string): Promise<number> => {
    await upstream.settle();
    return upstream.countRequests('GET', new RegExp(`/blobs/${digest}$`));
  };

  it('8 concurrent cold GETs of a 24 MiB blob cost one upstream GET, and all get the right bytes', async () => {
    const digest = image.layerDigests[0] as string;
    assert.ok((image.layerSizes[0] ?? 0) >= 20 * 1024 * 1024, 'the layer is at least 20 MiB');
    const results = await Promise.all(Array.from({ length: 8 }, () => download(blobUrl(digest))));
    for (const result of results) {
      assert.equal(result.status, 200);
      assert.equal(result.digest, digest);
      assert.equal(result.bytes, image.layerSizes[0]);
      assert.equal(result.headers['docker-content-digest'], digest);
    }
    assert.equal(await upstreamGets(digest), 1);
    await mirror.settle();
    const outcomes = mirror.accessEntries().filter((entry) => entry.path.endsWith(digest)).map((entry) => entry.cache);
    assert.equal(outcomes.filter((cache) => cache === 'miss').length, 1, 'one client started the fill');
    assert.equal(outcomes.filter((cache) => cache === 'fill').length, 7, 'seven followed it');
    const again = await download(blobUrl(digest));
    assert.equal(again.digest, digest);
    assert.equal(await upstreamGets(digest), 1, 'a warm GET does not go upstream');
  });

  it('clients that arrive while a fill is running follow it from byte 0', async () => {
    const digest = image.layerDigests[1] as string;
    let releaseLate: () => void = () => undefined;
    const firstBytes = new Promise<void>((resolve) => {
      releaseLate = resolve;
    });
    const early = [download(blobUrl(digest), {}, releaseLate), download(blobUrl(digest))];
    await firstBytes;
    const late = Array.from({ length: 3 }, () => download(blobUrl(digest)));
    for (const result of await Promise.all([...early, ...late])) {
      assert.equal(result.status, 200);
      assert.equal(result.digest, digest);
    }
    assert.equal(await upstreamGets(digest), 1);
  });

  it('a fill outlives the client that started it', async () => {
    const digest = image.layerDigests[2] as string;
    await new Promise<void>((resolve, reject) => {
      const req = request(blobUrl(digest), (response) => {
        response.once('data', () => {
          req.destroy();
          resolve();
        });
      });
      req.on('error', (error: NodeJS.ErrnoException) => (error.code === 'ECONNRESET' ? resolve() : reject(error)));
      req.end();
    });
    const deadline = Date.now() + 30_000;
    while ((await mirror.metricValue('regmirror_fills_in_progress')) > 0 && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    const result = await download(blobUrl(digest));
    assert.equal(result.digest, digest);
    assert.equal(await upstreamGets(digest), 1, 'the abandoned fill completed and was cached');
    await mirror.settle();
    const last = mirror.accessEntries().filter((entry) => entry.path.endsWith(digest)).at(-1);
    assert.equal(last?.cache, 'hit');
  });

  it('a HEAD of a cold blob asks the upstream with a HEAD only', async () => {
    const digest = image.layerDigests[3] as string;
    await upstream.settle();
    // skopeo's push already HEADed each blob: count from here.
    const headsBefore = upstream.countRequests('HEAD', new RegExp(`/blobs/${digest}$`));
    const response = await fetch(blobUrl(digest), { method: 'HEAD' });
    assert.equal(response.status, 200);
    assert.equal(response.headers.get('content-length'), String(image.layerSizes[3]));
    assert.equal(response.headers.get('docker-content-digest'), digest);
    await upstream.settle();
    assert.equal(upstream.countRequests('HEAD', new RegExp(`/blobs/${digest}$`)) - headsBefore, 1);
    assert.equal(upstream.countRequests('GET', new RegExp(`/blobs/${digest}$`)), 0);
  });

  it('a Range on a cold blob gets a correct 206', async () => {
    const digest = image.layerDigests[4] as string;
    const size = image.layerSizes[4] as number;
    // The whole blob, for comparison, through the first mirror; the ranges through a second one, cold.
    const whole = await download(blobUrl(digest), {}, undefined, true);
    assert.equal(whole.digest, digest);
    const fresh = await startRegmirror({ upstreams: [upstream.url] });
    try {
      const part = await download(`${fresh.url}/v2/team/big/blobs/${digest}`, { range: 'bytes=100-199' }, undefined, true);
      assert.equal(part.status, 206);
      assert.equal(part.headers['content-range'], `bytes 100-199/${size}`);
      assert.ok(part.body?.equals((whole.body as Buffer).subarray(100, 200)));
      const tail = await download(`${fresh.url}/v2/team/big/blobs/${digest}`, { range: 'bytes=-10' }, undefined, true);
      assert.equal(tail.status, 206);
      assert.ok(tail.body?.equals((whole.body as Buffer).subarray(size - 10)));
    } finally {
      await fresh.destroy();
    }
  });
});
