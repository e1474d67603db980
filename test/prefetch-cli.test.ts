// `regmirror prefetch` against a running regmirror in front of a real distribution 2.8.2: images named by registry
// prefix, default upstream and digest; an index filtered to one platform fetches only that child's blobs (counted at
// the upstream); each blob is fetched once per run; what it pulled then pulls with the upstream stopped; a missing tag
// fails that image only (exit 1), a malformed reference fails the run before any request (exit 2). And, pointed at a
// fake registry that lies (what regmirror never does, so a fake stands in): wrong bytes, short or cut bodies, a wrong
// Docker-Content-Digest each fail the image, with the reason.

import assert from 'node:assert/strict';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { startDistribution, type Distribution } from './support/distribution.js';
import { startFaultUpstream, type FaultMode, type FaultUpstream } from './support/fault-upstream.js';
import { buildImageLayout, deterministicBytes, pushLayout, type BuiltImage, type BuiltLayout } from './support/images.js';
import { freePort } from './support/ports.js';
import { runRegmirror, startRegmirror, type Regmirror } from './support/regmirror.js';
import { copyToOci, skopeo } from './support/skopeo.js';
import { makeTempDir, removeDir } from './support/temp.js';

/** The blobs of an image: its config, then its layers. */
function blobsOf(image: BuiltImage): string[] {
  return [image.configDigest, ...image.layerDigests];
}

/** How `regmirror prefetch` prints a finished blob when its output is not a terminal. */
function blobLinePattern(digest: string): RegExp {
  return new RegExp(`^(config|layer ) ${digest.slice(0, 'sha256:'.length + 12)} \\d`, 'm');
}

describe('regmirror prefetch', () => {
  let work: string;
  let upstream: Distribution;
  let mirror: Regmirror;
  let app: BuiltLayout;
  let multi: BuiltLayout;
  let other: BuiltLayout;

  before(async () => {
    work = await makeTempDir('prefetch-cli-');
    upstream = await startDistribution();
    app = await buildImageLayout(path.join(work, 'app'), 'v1', [{ layers: [{ size: 300_000, seed: 201 }, { size: 1_500_000, seed: 202 }, { size: 10, seed: 203 }] }]);
    multi = await buildImageLayout(path.join(work, 'multi'), 'v2', [
      { layers: [{ size: 100_000, seed: 211 }], platform: { os: 'linux', architecture: 'amd64' } },
      { layers: [{ size: 120_000, seed: 212 }], platform: { os: 'linux', architecture: 'arm64', variant: 'v8' } },
    ]);
    other = await buildImageLayout(path.join(work, 'other'), 'v1', [{ layers: [{ size: 50_000, seed: 221 }] }]);
    const host = `127.0.0.1:${upstream.port}`;
    await pushLayout(app, `${host}/team/app:v1`);
    await pushLayout(multi, `${host}/team/multi:v2`);
    await pushLayout(other, `${host}/team/other:v1`);
    // One distribution behind two registry names: docker.io (the default) and ghcr.io, both routed by path prefix.
    mirror = await startRegmirror({ upstreams: [`docker.io=${upstream.url}`, `ghcr.io=${upstream.url}`] });
  });

  after(async () => {
    if (process.env.DEBUG_MIRROR) console.log(mirror?.lines().join('\n'));
    await mirror?.destroy();
    await upstream?.destroy();
    await removeDir(work);
  });

  const appImage = (): BuiltImage => app.images[0] as BuiltImage;
  const amd64 = (): BuiltImage => multi.images[0] as BuiltImage;
  const arm64 = (): BuiltImage => multi.images[1] as BuiltImage;
  const upstreamGets = (digest: string): number => upstream.countRequests('GET', new RegExp(`/(blobs|manifests)/${digest}$`));
  const mirrorGets = (digest: string): number => mirror.accessEntries().filter((entry) => entry.method === 'GET' && entry.path.endsWith(`/blobs/${digest}`)).length;

  it('pulls images through the mirror: of an index, only the wanted platform; every blob once', async () => {
    const run = await runRegmirror([
      'prefetch',
      '--server',
      mirror.url,
      '--platform',
      'linux/arm64',
      'docker.io/team/app:v1',
      'ghcr.io/team/multi:v2',
      // The same image under another of Docker Hub's names: its blobs are fetched once all the same.
      'index.docker.io/team/app:v1',
    ]);
    assert.equal(run.code, 0, `${run.stdout}\n${run.stderr}`);
    assert.equal(run.stderr, '');
    for (const digest of [...blobsOf(appImage()), ...blobsOf(arm64())]) {
      assert.equal(run.stdout.match(new RegExp(blobLinePattern(digest).source, 'gm'))?.length, 1, `one line for ${digest}:\n${run.stdout}`);
    }
    for (const digest of blobsOf(amd64())) assert.doesNotMatch(run.stdout, blobLinePattern(digest), 'nothing of the amd64 child');
    assert.match(run.stdout, /^pulled docker\.io\/team\/app:v1 \(sha256:[0-9a-f]{12}, 1 manifest, 4 blobs, /m);
    assert.match(run.stdout, /^pulled ghcr\.io\/team\/multi:v2 \(sha256:[0-9a-f]{12}, 2 manifests, 2 blobs, /m);
    assert.match(run.stdout, /^pulled index\.docker\.io\/team\/app:v1 /m);
    assert.match(run.stdout, /^prefetch: 3 of 3 images pulled; 6 blobs, /m);

    await upstream.settle();
    await mirror.settle();
    for (const digest of [...blobsOf(appImage()), arm64().manifestDigest, ...blobsOf(arm64())]) {
      assert.equal(upstreamGets(digest), 1, `the upstream was asked for ${digest} once`);
    }
    for (const digest of [amd64().manifestDigest, ...blobsOf(amd64())]) assert.equal(upstreamGets(digest), 0, `the upstream was never asked for ${digest}`);
    for (const digest of [...blobsOf(appImage()), ...blobsOf(arm64())]) assert.equal(mirrorGets(digest), 1, `prefetch asked the mirror for ${digest} once`);

    await mirror.fillsSettled();
    assert.equal(await mirror.metricValue('regmirror_cache_objects', { kind: 'blob' }), 6, 'the mirror holds the six blobs');
    // app (one manifest, cached under each registry name it was asked by), the index and its arm64 child.
    assert.ok((await mirror.metricValue('regmirror_cache_objects', { kind: 'manifest' })) >= 3);
  });

  it('fails an image whose tag is missing, naming it, and still pulls the others (exit 1)', async () => {
    await mirror.settle();
    const run = await runRegmirror([
      'prefetch',
      '--server',
      mirror.url,
      'team/other:v1',
      'docker.io/team/app:nope',
      `ghcr.io/team/multi@${amd64().manifestDigest}`,
    ]);
    assert.equal(run.code, 1, `${run.stdout}\n${run.stderr}`);
    assert.match(run.stderr, /^regmirror prefetch: docker\.io\/team\/app:nope failed: manifest nope: HTTP 404 Not Found: MANIFEST_UNKNOWN /m);
    assert.equal(run.stderr.trim().split('\n').length, 1, `only the missing tag failed:\n${run.stderr}`);
    assert.match(run.stdout, /^FAILED docker\.io\/team\/app:nope /m);
    // Without a registry: the mirror's default upstream. By digest: that manifest, here an index's amd64 child.
    assert.match(run.stdout, /^pulled team\/other:v1 /m);
    assert.match(run.stdout, new RegExp(`^pulled ghcr\\.io/team/multi@${amd64().manifestDigest} `, 'm'));
    for (const digest of [...blobsOf(other.images[0] as BuiltImage), ...blobsOf(amd64())]) assert.match(run.stdout, blobLinePattern(digest));
    assert.match(run.stdout, /^prefetch: 2 of 3 images pulled, 1 failed; 4 blobs, /m);
    await upstream.settle();
    for (const digest of blobsOf(amd64())) assert.equal(upstreamGets(digest), 1, `fetched once: ${digest}`);
  });

  it('refuses a malformed reference before asking the mirror anything (exit 2)', async () => {
    await mirror.settle();
    const before = mirror.accessEntries().length;
    const run = await runRegmirror(['prefetch', '--server', mirror.url, 'team/other:v1', 'team/Other:v1', 'ghcr.io/team/multi@sha256:0123']);
    assert.equal(run.code, 2, `${run.stdout}\n${run.stderr}`);
    assert.equal(run.stdout, '');
    assert.match(run.stderr, /^regmirror prefetch: "team\/Other:v1": malformed reference: invalid repository name/m);
    assert.match(run.stderr, /^regmirror prefetch: "ghcr\.io\/team\/multi@sha256:0123": malformed reference: invalid digest/m);
    await mirror.settle();
    assert.equal(mirror.accessEntries().length, before, 'no request reached the mirror');
  });

  it('exits 1 with the reason when the mirror cannot be reached', async () => {
    const url = `http://127.0.0.1:${await freePort()}`;
    const run = await runRegmirror(['prefetch', '--server', url, 'team/app:v1']);
    assert.equal(run.code, 1, `${run.stdout}\n${run.stderr}`);
    assert.match(run.stderr, new RegExp(`^regmirror prefetch: team/app:v1 failed: manifest v1: no answer from ${url.replace(/\./g, '\\.')}: .*ECONNREFUSED`, 'm'));
  });

  it('leaves the mirror holding what it pulled: skopeo pulls it with the upstream stopped', async () => {
    await mirror.fillsSettled();
    await mirror.settle();
    const logged = mirror.accessEntries().length;
    await upstream.stop();
    try {
      await copyToOci(`docker://${mirror.host}/docker.io/team/app:v1`, path.join(work, 'offline'), 'app');
      await skopeo(['--override-arch', 'arm64', '--override-variant', 'v8', 'copy', '--quiet', '--src-tls-verify=false', `docker://${mirror.host}/ghcr.io/team/multi:v2`, `oci:${path.join(work, 'offline')}:multi-arm64`]);
      await copyToOci(`docker://${mirror.host}/team/other:v1`, path.join(work, 'offline'), 'other');
      await mirror.settle();
      const offline = mirror.accessEntries().slice(logged).filter((entry) => entry.path.startsWith('/v2/') && entry.path !== '/v2/');
      assert.ok(offline.filter((entry) => entry.path.includes('/blobs/')).length >= 4 + 2 + 2, 'the blobs were pulled');
      assert.deepEqual(offline.filter((entry) => entry.status !== 200 || entry.cache !== 'hit'), [], 'every manifest and blob answered 200 from the cache');
    } finally {
      await upstream.start();
    }
  });
});

describe('regmirror prefetch against a registry that lies', () => {
  let liar: FaultUpstream;

  before(async () => {
    liar = await startFaultUpstream({ blobs: [deterministicBytes(200_000, 231), deterministicBytes(1000, 232)], repository: 'faults/app', tags: ['v1'] });
  });

  after(async () => {
    await liar?.stop();
  });

  it('pulls the image when every answer is right', async () => {
    liar.clearModes();
    const run = await runRegmirror(['prefetch', '--server', liar.url, 'faults/app:v1']);
    assert.equal(run.code, 0, `${run.stdout}\n${run.stderr}`);
    assert.match(run.stdout, /^pulled faults\/app:v1 \(sha256:[0-9a-f]{12}, 1 manifest, 3 blobs, /m);
  });

  const lies: { mode: FaultMode; on: 'layer' | 'tag'; reason: RegExp }[] = [
    { mode: 'wrong-bytes', on: 'layer', reason: /layer sha256:[0-9a-f]{12}: the mirror sent bytes that hash to sha256:/ },
    { mode: 'chunked-short', on: 'layer', reason: /layer sha256:[0-9a-f]{12}: the mirror sent 100000 bytes, the manifest declares 200000/ },
    { mode: 'cut', on: 'layer', reason: /layer sha256:[0-9a-f]{12}: the body broke off after \d+ bytes/ },
    { mode: 'status-500', on: 'layer', reason: /layer sha256:[0-9a-f]{12}: HTTP 500 Internal Server Error/ },
    { mode: 'wrong-digest', on: 'tag', reason: /manifest v1: its bytes hash to sha256:[0-9a-f]{64}, not to its Docker-Content-Digest sha256:/ },
  ];
  for (const { mode, on, reason } of lies) {
    it(`fails the image, saying why, when ${on === 'tag' ? 'the manifest' : 'a layer'} comes ${mode}`, async () => {
      liar.clearModes();
      liar.setMode(mode, on === 'tag' ? 'v1' : liar.blobDigests[0]);
      const run = await runRegmirror(['prefetch', '--server', liar.url, 'faults/app:v1']);
      assert.equal(run.code, 1, `${run.stdout}\n${run.stderr}`);
      assert.match(run.stderr, new RegExp(`^regmirror prefetch: faults/app:v1 failed: ${reason.source}`, 'm'));
      assert.match(run.stdout, /^FAILED faults\/app:v1 /m);
    });
  }
});
