// Routing by the Host a request was sent to, end to end: a config file lists virtual hosts for one of two
// distribution upstreams (`hosts:`, written in mixed case); requests whose Host names one of them, in any
// case and with any port, reach that upstream, and everything else the default (the first) one.

import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import { request } from 'node:http';
import path from 'node:path';
import { after, before, describe, it, type TestContext } from 'node:test';
import { startDistribution, type Distribution } from './support/distribution.js';
import { buildImageLayout, layoutBlobPath, MEDIA_TYPES, pushLayout, type BuiltImage } from './support/images.js';
import { startRegmirror, type Regmirror } from './support/regmirror.js';
import { copyToOci } from './support/skopeo.js';
import { makeTempDir, removeDir } from './support/temp.js';

interface Answer {
  status: number;
  digest: string | undefined;
  body: Buffer;
}

/** One GET to the mirror with the Host header as given (fetch would not let a test choose it). */
function getWithHost(mirror: Regmirror, target: string, host: string): Promise<Answer> {
  return new Promise<Answer>((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port: mirror.port, path: target, agent: false, headers: { host, accept: MEDIA_TYPES.ociManifest }, timeout: 30_000 }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (chunk: Buffer) => chunks.push(chunk));
      res.once('error', reject);
      res.once('end', () => resolve({ status: res.statusCode ?? 0, digest: res.headers['docker-content-digest'] as string | undefined, body: Buffer.concat(chunks) }));
    });
    req.once('timeout', () => req.destroy(new Error(`${target}: no answer`)));
    req.once('error', reject);
    req.end();
  });
}

const sha256 = (bytes: Buffer): string => `sha256:${createHash('sha256').update(bytes).digest('hex')}`;

describe('routing by Host (hosts: in a config file)', () => {
  let work: string;
  let hub: Distribution;
  let other: Distribution;
  let config: string;
  /** The same name, team/app:v1, is a different image on each upstream. */
  let hubImage: BuiltImage;
  let otherImage: BuiltImage;
  let otherDir: string;

  before(async () => {
    work = await makeTempDir('host-routing-');
    [hub, other] = await Promise.all([startDistribution(), startDistribution()]);
    const hubLayout = await buildImageLayout(path.join(work, 'hub'), 'v1', [{ layers: [{ size: 40_000, seed: 501 }] }]);
    const otherLayout = await buildImageLayout(path.join(work, 'other'), 'v1', [{ layers: [{ size: 50_000, seed: 502 }] }]);
    await pushLayout(hubLayout, `127.0.0.1:${hub.port}/team/app:v1`);
    await pushLayout(otherLayout, `127.0.0.1:${other.port}/team/app:v1`);
    hubImage = hubLayout.images[0] as BuiltImage;
    otherImage = otherLayout.images[0] as BuiltImage;
    otherDir = otherLayout.dir;
    config = path.join(work, 'regmirror.yaml');
    // JSON is YAML. localhost is a name skopeo can resolve here, so a real client can use the virtual host too.
    await writeFile(
      config,
      JSON.stringify({
        log: { level: 'info' },
        upstreams: [
          { registry: 'hub.example', url: hub.url },
          { registry: 'other.example', url: other.url, hosts: ['Other.Mirror.Example', 'LocalHost'] },
        ],
      }),
    );
  });

  after(async () => {
    await hub?.destroy();
    await other?.destroy();
    if (work !== undefined) await removeDir(work);
  });

  /** GETs of a path the mirror sent each upstream (its own user agent). */
  async function upstreamGets(pathPattern: RegExp): Promise<{ hub: number; other: number }> {
    await Promise.all([hub.settle(), other.settle()]);
    const count = (upstream: Distribution): number =>
      upstream.accessEntries().filter((entry) => entry.method === 'GET' && entry.userAgent.startsWith('regmirror') && pathPattern.test(entry.path)).length;
    return { hub: count(hub), other: count(other) };
  }

  /** Each test's own mirror from the config: a cold cache, so what reaches each upstream is the test's own doing. */
  async function startMirror(t: TestContext): Promise<Regmirror> {
    const mirror = await startRegmirror({ configFile: config });
    t.after(() => mirror.destroy());
    return mirror;
  }

  it('sends a request whose Host names a listed host, in any case and with a port, to that upstream', async (t) => {
    const mirror = await startMirror(t);
    const manifests = /^\/v2\/team\/app\/manifests\/v1$/;
    const layer = otherImage.layerDigests[0] ?? '';
    const blobs = new RegExp(`/blobs/${layer}$`);
    const before = await upstreamGets(manifests);
    const blobsBefore = await upstreamGets(blobs);
    for (const host of ['OTHER.mirror.EXAMPLE:5000', 'other.mirror.example', 'Other.Mirror.Example:443']) {
      const answer = await getWithHost(mirror, '/v2/team/app/manifests/v1', host);
      assert.equal(answer.status, 200, host);
      assert.equal(answer.digest, otherImage.manifestDigest, `${host}: the other upstream's image`);
      assert.ok(answer.body.equals(otherImage.manifestBytes));
    }
    for (const host of [mirror.host, 'mirror.example', 'other.mirror.example.evil:5000', 'localhost.other.example']) {
      const answer = await getWithHost(mirror, '/v2/team/app/manifests/v1', host);
      assert.equal(answer.status, 200, host);
      assert.equal(answer.digest, hubImage.manifestDigest, `${host}: the default upstream's image`);
    }
    const blob = await getWithHost(mirror, `/v2/team/app/blobs/${layer}`, 'Other.Mirror.EXAMPLE:8080');
    assert.equal(blob.status, 200);
    assert.equal(sha256(blob.body), layer, 'a blob only the other upstream has');

    // Each upstream saw its own tag once (then it was cached per upstream), never the other's traffic.
    assert.deepEqual(await upstreamGets(manifests), { hub: before.hub + 1, other: before.other + 1 });
    assert.deepEqual(await upstreamGets(blobs), { hub: blobsBefore.hub, other: blobsBefore.other + 1 });
    await mirror.settle();
    const routed = mirror.accessEntries().filter((entry) => entry.path === '/v2/team/app/manifests/v1').map((entry) => entry.upstream);
    assert.deepEqual(routed, ['other.example', 'other.example', 'other.example', 'hub.example', 'hub.example', 'hub.example', 'hub.example']);
  });

  it('serves a real client (skopeo) that names a listed host', async (t) => {
    const mirror = await startMirror(t);
    const out = path.join(work, 'pulled');
    // skopeo sends Host: localhost:PORT; the config lists LocalHost.
    await copyToOci(`docker://localhost:${mirror.port}/team/app:v1`, out, 'v1');
    const manifest = await readFile(layoutBlobPath(out, otherImage.manifestDigest));
    assert.ok(manifest.equals(otherImage.manifestBytes), 'the other upstream\'s manifest');
    for (const digest of otherImage.layerDigests) {
      const pulled = await readFile(layoutBlobPath(out, digest));
      assert.ok(pulled.equals(await readFile(layoutBlobPath(otherDir, digest))), `layer ${digest}`);
    }
    await mirror.settle();
    const blobEntries = mirror.accessEntries().filter((entry) => entry.path.includes('/blobs/'));
    assert.ok(blobEntries.length > 0 && blobEntries.every((entry) => entry.upstream === 'other.example'), 'every blob from the other upstream');
  });
});
