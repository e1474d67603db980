// Manifests through the mirror: tags fresh for a TTL then revalidated with HEAD, moved tags followed,
// digests fetched once, Accept negotiation for indexes, tag lists and the catalog, stale when the
// upstream is gone.

import assert from 'node:assert/strict';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { startDistribution, type Distribution } from './support/distribution.js';
import { buildImageLayout, MEDIA_TYPES, pushLayout, type BuiltLayout } from './support/images.js';
import { startRegmirror, type Regmirror } from './support/regmirror.js';
import { makeTempDir, removeDir } from './support/temp.js';

const FRESHNESS_MS = 1500;
const ALL_TYPES = [MEDIA_TYPES.ociIndex, MEDIA_TYPES.dockerManifestList, MEDIA_TYPES.ociManifest, MEDIA_TYPES.dockerManifest].join(', ');

describe('manifest cache', () => {
  let upstream: Distribution;
  let mirror: Regmirror;
  let work: string;
  let first: BuiltLayout;
  let second: BuiltLayout;
  let multi: BuiltLayout;

  before(async () => {
    work = await makeTempDir('manifest-cache-');
    upstream = await startDistribution();
    first = await buildImageLayout(path.join(work, 'first'), 'v1', [{ layers: [{ size: 1000, seed: 1 }] }]);
    second = await buildImageLayout(path.join(work, 'second'), 'v1', [{ layers: [{ size: 1000, seed: 2 }] }]);
    multi = await buildImageLayout(path.join(work, 'multi'), 'v1', [
      { layers: [{ size: 500, seed: 3 }], platform: { os: 'linux', architecture: 'arm64' } },
      { layers: [{ size: 500, seed: 4 }], platform: { os: 'linux', architecture: 'amd64' } },
    ]);
    const host = `127.0.0.1:${upstream.port}`;
    await pushLayout(first, `${host}/team/moving:v1`);
    await pushLayout(multi, `${host}/team/multi:v1`);
    await pushLayout(first, `${host}/library/alpine:3`);
    mirror = await startMirror();
  });

  after(async () => {
    await mirror?.destroy();
    await upstream?.destroy();
    await removeDir(work);
  });

  const manifestPath = (name: string, reference: string): RegExp => new RegExp(`^/v2/${name}/manifests/${reference.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}$`);
  const counts = async (name: string, reference: string): Promise<{ get: number; head: number }> => {
    await upstream.settle();
    return { get: upstream.countRequests('GET', manifestPath(name, reference)), head: upstream.countRequests('HEAD', manifestPath(name, reference)) };
  };
  const startMirror = (): Promise<Regmirror> =>
    startRegmirror({
      upstreams: [`docker.io=${upstream.url}`],
      env: { REGMIRROR_CACHE_TAG_FRESHNESS: `${FRESHNESS_MS}ms`, REGMIRROR_CACHE_MAX_STALENESS: '1h' },
    });
  const getManifest = (name: string, reference: string, accept = ALL_TYPES, from: Regmirror = mirror): Promise<Response> =>
    fetch(`${from.url}/v2/${name}/manifests/${reference}`, { headers: { accept } });

  it('keeps a tag fresh for its TTL, then revalidates it with HEAD, and follows a moved tag', async (t) => {
    // A mirror of its own: the tag must be cold here, whatever other tests cached.
    const own = await startMirror();
    t.after(() => own.destroy());
    const get = (name: string, reference: string): Promise<Response> => getManifest(name, reference, ALL_TYPES, own);
    const before = await counts('team/moving', 'v1');
    const response = await get('team/moving', 'v1');
    assert.equal(response.status, 200);
    const body = Buffer.from(await response.arrayBuffer());
    assert.ok(body.equals(first.images[0]?.manifestBytes as Buffer));
    assert.equal(response.headers.get('content-type'), MEDIA_TYPES.ociManifest);
    assert.equal(response.headers.get('docker-content-digest'), first.topDigest);
    await get('team/moving', 'v1');
    let now = await counts('team/moving', 'v1');
    assert.deepEqual(now, { get: before.get + 1, head: before.head }, 'fresh: one GET for two client requests');

    await sleep(FRESHNESS_MS + 300);
    const revalidated = await get('team/moving', 'v1');
    assert.equal(revalidated.headers.get('docker-content-digest'), first.topDigest);
    now = await counts('team/moving', 'v1');
    assert.deepEqual(now, { get: before.get + 1, head: before.head + 1 }, 'stale: one HEAD, no GET');
    await own.settle();
    assert.equal(own.accessEntries().at(-1)?.cache, 'revalidated');

    await pushLayout(second, `127.0.0.1:${upstream.port}/team/moving:v1`);
    await sleep(FRESHNESS_MS + 300);
    const moved = await get('team/moving', 'v1');
    assert.equal(moved.headers.get('docker-content-digest'), second.topDigest);
    assert.ok(Buffer.from(await moved.arrayBuffer()).equals(second.images[0]?.manifestBytes as Buffer));
  });

  it('fetches a manifest by digest once and keeps it', async () => {
    const digest = multi.images[0]?.manifestDigest as string;
    for (let i = 0; i < 3; i += 1) assert.equal((await getManifest('team/multi', digest)).status, 200);
    assert.equal((await counts('team/multi', digest)).get, 1);
  });

  it('gives a client that cannot read an index the linux/amd64 child, never a conversion', async () => {
    const index = await getManifest('team/multi', 'v1');
    assert.equal(index.headers.get('content-type'), MEDIA_TYPES.ociIndex);
    assert.equal(index.headers.get('docker-content-digest'), multi.indexDigest);
    const child = await getManifest('team/multi', 'v1', MEDIA_TYPES.ociManifest);
    assert.equal(child.status, 200);
    assert.equal(child.headers.get('docker-content-digest'), multi.images[1]?.manifestDigest);
    assert.ok(Buffer.from(await child.arrayBuffer()).equals(multi.images[1]?.manifestBytes as Buffer));
    const refused = await getManifest('team/multi', 'v1', MEDIA_TYPES.dockerManifest);
    assert.equal(refused.status, 404);
    const error = (await refused.json()) as { errors: Array<{ code: string }> };
    assert.equal(error.errors[0]?.code, 'MANIFEST_UNKNOWN');
  });

  it('answers If-None-Match with 304', async () => {
    const response = await fetch(`${mirror.url}/v2/team/multi/manifests/v1`, { headers: { accept: ALL_TYPES, 'if-none-match': `"${multi.indexDigest}"` } });
    assert.equal(response.status, 304);
  });

  it('maps one-component Docker Hub names to library/', async () => {
    const response = await getManifest('alpine', '3');
    assert.equal(response.status, 200);
    assert.equal(response.headers.get('docker-content-digest'), first.topDigest);
    assert.equal((await counts('library/alpine', '3')).get, 1);
  });

  it('lists tags from the upstream, the catalog from what is cached', async () => {
    // What the catalog lists is what this test cached, whatever ran before it.
    for (const [name, tag] of [['alpine', '3'], ['team/moving', 'v1'], ['team/multi', 'v1']] as const) {
      const cached = await getManifest(name, tag);
      await cached.arrayBuffer();
      assert.equal(cached.status, 200, `${name}:${tag}`);
    }
    const tags = (await (await fetch(`${mirror.url}/v2/team/multi/tags/list`)).json()) as { name: string; tags: string[] };
    assert.deepEqual(tags.tags, ['v1']);
    const catalog = (await (await fetch(`${mirror.url}/v2/_catalog`)).json()) as { repositories: string[] };
    assert.deepEqual(catalog.repositories, ['library/alpine', 'team/moving', 'team/multi']);
    const page = await fetch(`${mirror.url}/v2/_catalog?n=1`);
    assert.deepEqual(((await page.json()) as { repositories: string[] }).repositories, ['library/alpine']);
    assert.match(page.headers.get('link') ?? '', /<\/v2\/_catalog\?n=1&last=library%2Falpine>; rel="next"/);
  });

  it('serves stale tags and cached tag lists when the upstream is down', async () => {
    const cached = await getManifest('team/multi', 'v1');
    await cached.arrayBuffer();
    assert.equal(cached.status, 200, 'cached while the upstream is up');
    await upstream.stop();
    try {
      await sleep(FRESHNESS_MS + 300);
      const response = await getManifest('team/multi', 'v1');
      assert.equal(response.status, 200);
      assert.equal(response.headers.get('docker-content-digest'), multi.indexDigest);
      await mirror.settle();
      assert.equal(mirror.accessEntries().at(-1)?.cache, 'stale');
      const tags = (await (await fetch(`${mirror.url}/v2/team/multi/tags/list`)).json()) as { tags: string[] };
      assert.deepEqual(tags.tags, ['v1']);
      const unknown = await getManifest('team/never-seen', 'v1');
      assert.equal(unknown.status, 502);
    } finally {
      await upstream.start();
    }
  });
});
