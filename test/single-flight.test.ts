// One upstream fetch per missing object, however many clients ask: 8 concurrent cold GETs of a 24 MiB
// layer, cold HEAD and cold Range requests (distribution upstream); with an upstream that holds its answer
// open until the test lets go: late joiners, a client that leaves mid-fill, followers of a fill that fails,
// and 8 concurrent cold GETs of one tag.

import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { request } from 'node:http';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { startDistribution, type Distribution } from './support/distribution.js';
import {
  committedBlobPath,
  fileExists,
  rawGet,
  sha256Of,
  startFaultUpstream,
  temporaryFiles,
  waitUntil,
  type FaultUpstream,
  type RawResponse,
} from './support/fault-upstream.js';
import { buildImageLayout, deterministicBytes, pushLayout, type BuiltImage } from './support/images.js';
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

describe('single flight, with an upstream that holds its answer open', () => {
  const MiB = 1024 * 1024;
  // One blob per test, so each runs alone or in any order.
  const blobs = {
    late: deterministicBytes(4 * MiB, 601),
    abandoned: deterministicBytes(4 * MiB + 7, 602),
    failing: deterministicBytes(4 * MiB - 3, 603),
  };
  const digests = Object.fromEntries(Object.entries(blobs).map(([name, bytes]) => [name, sha256Of(bytes)])) as Record<keyof typeof blobs, string>;
  let upstream: FaultUpstream;
  let mirror: Regmirror;

  before(async () => {
    upstream = await startFaultUpstream({ blobs: Object.values(blobs), tags: ['v1', 'held'] });
    mirror = await startRegmirror({ upstreams: [upstream.url] });
  });

  after(async () => {
    // Nothing may stay held: the mirror's stop would wait for it.
    upstream?.release('cut');
    await mirror?.destroy();
    await upstream?.stop();
  });

  const blobUrl = (digest: string): string => `${mirror.url}/v2/${upstream.repository}/blobs/${digest}`;
  const upstreamGets = (path: RegExp): number => upstream.count('GET', path);
  const blobPath = (digest: string): RegExp => new RegExp(`/blobs/${digest}$`);
  async function outcomes(suffix: string, count: number): Promise<Array<{ cache: string; aborted: boolean }>> {
    await mirror.settle();
    const matching = (): Array<{ cache: string; aborted: boolean }> =>
      mirror
        .accessEntries()
        .filter((entry) => entry.method === 'GET' && entry.path.endsWith(suffix))
        .map((entry) => ({ cache: entry.cache, aborted: entry.aborted === true }));
    await waitUntil(`${count} access-log lines for ${suffix}`, () => matching().length >= count);
    return matching();
  }

  /** Starts a GET; `bytes` resolves at its first body byte, `done` when it ended either way. */
  function startGet(url: string): { bytes: Promise<void>; done: Promise<RawResponse> } {
    let firstByte: () => void = () => undefined;
    const bytes = new Promise<void>((resolve) => {
      firstByte = resolve;
    });
    const done = rawGet(url, { timeoutMs: 60_000, onChunk: () => firstByte() });
    return { bytes, done };
  }

  it('clients that arrive while a fill is running follow it from byte 0', async () => {
    const digest = digests.late;
    upstream.setMode('held', digest);
    const first = startGet(blobUrl(digest));
    await first.bytes;
    await waitUntil('the upstream holds the fill open', () => upstream.heldCount() === 1);
    const late = Array.from({ length: 3 }, () => startGet(blobUrl(digest)));
    // Each late client has bytes while the upstream is still holding back the second half: they joined the fill.
    await Promise.all(late.map((get) => get.bytes));
    assert.equal(upstream.heldCount(), 1, 'the fill was still waiting for the upstream');
    assert.equal(await mirror.metricValue('regmirror_fills_in_progress'), 1);
    assert.equal(upstream.release('rest'), 1);
    for (const response of await Promise.all([first.done, ...late.map((get) => get.done)])) {
      assert.equal(response.status, 200);
      assert.ok(response.complete, `complete (${String(response.error)})`);
      assert.equal(sha256Of(response.body), digest, 'the whole blob, from byte 0');
    }
    assert.equal(upstreamGets(blobPath(digest)), 1, 'one upstream GET');
    const caches = (await outcomes(digest, 4)).map((entry) => entry.cache).sort();
    assert.deepEqual(caches, ['fill', 'fill', 'fill', 'miss'], 'one client started the fill, three joined it');
  });

  it('a fill outlives the client that started it', async () => {
    const digest = digests.abandoned;
    upstream.setMode('held', digest);
    const leaving = new Promise<void>((resolve, reject) => {
      const req = request(blobUrl(digest), (response) => {
        response.once('data', () => {
          req.destroy();
          resolve();
        });
      });
      req.on('error', (error: NodeJS.ErrnoException) => (error.code === 'ECONNRESET' ? resolve() : reject(error)));
      req.end();
    });
    await leaving;
    // The mirror saw the client go (its response logged as aborted) while the upstream still held the fill open.
    const [left] = await outcomes(digest, 1);
    assert.deepEqual(left, { cache: 'miss', aborted: true });
    assert.equal(upstream.heldCount(), 1, 'the fill still waited for the upstream after its client left');
    assert.equal(await mirror.metricValue('regmirror_fills_in_progress'), 1);
    assert.equal(upstream.release('rest'), 1);
    await waitUntil('the abandoned fill is committed', () => fileExists(committedBlobPath(mirror.dataDir, digest)));
    const result = await rawGet(blobUrl(digest), { timeoutMs: 30_000 });
    assert.equal(result.status, 200);
    assert.equal(sha256Of(result.body), digest);
    assert.equal(upstreamGets(blobPath(digest)), 1, 'the abandoned fill completed and was cached');
    assert.equal((await outcomes(digest, 2)).at(-1)?.cache, 'hit');
  });

  it('followers of a fill that fails are each cut, nothing is stored, and the next GET succeeds', async () => {
    const digest = digests.failing;
    const size = blobs.failing.length;
    upstream.setMode('held', digest);
    const gets = [startGet(blobUrl(digest))];
    await gets[0]?.bytes;
    gets.push(...Array.from({ length: 4 }, () => startGet(blobUrl(digest))));
    await Promise.all(gets.map((get) => get.bytes));
    assert.equal(upstream.heldCount(), 1, 'all five follow the one fill');
    // The rest of the body, full length but with its last byte wrong: only the digest can tell.
    assert.equal(upstream.release('wrong-rest'), 1);
    for (const response of await Promise.all(gets.map((get) => get.done))) {
      assert.equal(response.status, 200);
      assert.equal(response.headers['content-length'], String(size));
      assert.equal(response.complete, false, 'the connection was cut, not ended as if whole');
      assert.ok(response.body.length < size, `held back: ${response.body.length} of ${size}`);
    }
    const logged = await outcomes(digest, 5);
    assert.ok(logged.every((entry) => entry.aborted), 'every response logged as aborted');
    assert.deepEqual(logged.map((entry) => entry.cache).sort(), ['fill', 'fill', 'fill', 'fill', 'miss']);
    await waitUntil('no fill runs and tmp/ is empty', async () => (await mirror.metricValue('regmirror_fills_in_progress')) === 0 && (await temporaryFiles(mirror.dataDir)).length === 0);
    assert.equal(await fileExists(committedBlobPath(mirror.dataDir, digest)), false, 'nothing committed');
    assert.equal(upstreamGets(blobPath(digest)), 1);

    upstream.setMode('ok', digest);
    const again = await rawGet(blobUrl(digest), { timeoutMs: 30_000 });
    assert.equal(again.status, 200);
    assert.ok(again.complete);
    assert.equal(sha256Of(again.body), digest);
    assert.equal(upstreamGets(blobPath(digest)), 2, 'the next GET fetched it again');
    await waitUntil('the blob is committed', () => fileExists(committedBlobPath(mirror.dataDir, digest)));
  });

  it('8 concurrent cold GETs of one tag cost one upstream manifest GET', async () => {
    const tag = 'held';
    upstream.setMode('held', tag);
    const url = `${mirror.url}/v2/${upstream.repository}/manifests/${tag}`;
    const first = rawGet(url, { headers: { accept: upstream.manifest.mediaType }, timeoutMs: 60_000 });
    await waitUntil('the upstream holds the manifest', () => upstream.heldCount() === 1);
    const others = await Promise.all(
      Array.from({ length: 7 }, async () => {
        let sent: () => void = () => undefined;
        const onWire = new Promise<void>((resolve) => {
          sent = resolve;
        });
        const done = rawGet(url, { headers: { accept: upstream.manifest.mediaType }, timeoutMs: 60_000, onSent: () => sent() });
        await onWire;
        return { done };
      }),
    );
    // The mirror reads each connection's request and joins the flight in the same turn of its event loop: once
    // it answered a request sent after all seven were on the wire, it has read them (the access log confirms).
    for (let round = 0; round < 2; round += 1) await (await fetch(`${mirror.url}/healthz`)).arrayBuffer();
    assert.equal(upstream.release('rest'), 1);
    const responses = await Promise.all([first, ...others.map((other) => other.done)]);
    for (const response of responses) {
      assert.equal(response.status, 200);
      assert.ok(response.body.equals(upstream.manifest.bytes), 'the upstream manifest, byte for byte');
      assert.equal(response.headers['docker-content-digest'], upstream.manifest.digest);
    }
    assert.equal(upstreamGets(new RegExp(`/manifests/${tag}$`)), 1, 'one upstream manifest GET');
    // A client that came after the fetch would be a 'hit' on the fresh tag: all eight shared the one fetch.
    assert.deepEqual((await outcomes(`/manifests/${tag}`, 8)).map((entry) => entry.cache), Array(8).fill('miss'));
  });
});
