// The referrers API through the mirror. With distribution 2.8.2 upstream (no referrers API): artifacts pushed with a
// `subject` and the referrers tag index cosign and oras maintain, listed from that tag, filtered, kept fresh with the
// tag TTL (upstream requests counted from distribution's access log), served stale when it is gone, followed when
// the tag moves, and the referrers readable by digest — with auth too. With a scripted upstream that has the API
// (none of the real registries here does): its list passed through, cached, stale on failure, paged; its faults
// refused in the OCI shape.

import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import type { ServerResponse } from 'node:http';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { pushArtifact, pushReferrersTag, referrersTagOf, type Descriptor, type PushedArtifact } from './support/artifacts.js';
import { startDistribution, type Distribution } from './support/distribution.js';
import { writeHtpasswd } from './support/htpasswd.js';
import { buildImageLayout, MEDIA_TYPES, pushLayout, type BuiltImage } from './support/images.js';
import { startRegmirror, type Regmirror } from './support/regmirror.js';
import { sendError, startScriptedUpstream, type ScriptedUpstream } from './support/scripted-upstream.js';
import { makeTempDir, removeDir } from './support/temp.js';

const FRESHNESS_MS = 1500;
const FRESHNESS_ENV = { REGMIRROR_CACHE_TAG_FRESHNESS: `${FRESHNESS_MS}ms`, REGMIRROR_CACHE_MAX_STALENESS: '1h' };
const SIGNATURE = 'application/vnd.dev.cosign.artifact.sig.v1+json';
const SBOM = 'application/spdx+json';
const UNKNOWN_SUBJECT = `sha256:${'e'.repeat(64)}`;

interface Index {
  schemaVersion: number;
  mediaType: string;
  manifests: Descriptor[];
}

interface OciErrors {
  errors: Array<{ code: string; message: string }>;
}

async function referrers(mirror: Regmirror, name: string, subject: string, query = '', headers: Record<string, string> = {}): Promise<Response> {
  return fetch(`${mirror.url}/v2/${name}/referrers/${subject}${query}`, { headers });
}

/** A 200 referrers answer: its index (checked to be one), and its filter header. */
async function listed(response: Response): Promise<{ manifests: Descriptor[]; filters: string | null }> {
  assert.equal(response.status, 200, await response.clone().text());
  assert.equal(response.headers.get('content-type'), MEDIA_TYPES.ociIndex);
  const text = await response.text();
  assert.equal(response.headers.get('content-length'), String(Buffer.byteLength(text)));
  const index = JSON.parse(text) as Index;
  assert.equal(index.schemaVersion, 2);
  assert.equal(index.mediaType, MEDIA_TYPES.ociIndex);
  return { manifests: index.manifests, filters: response.headers.get('oci-filters-applied') };
}

async function refused(response: Response, status: number, code: string): Promise<string> {
  assert.equal(response.status, status);
  assert.match(response.headers.get('content-type') ?? '', /^application\/json/);
  const body = (await response.json()) as OciErrors;
  assert.equal(body.errors[0]?.code, code);
  return body.errors[0]?.message ?? '';
}

async function lastCache(mirror: Regmirror): Promise<string | undefined> {
  await mirror.settle();
  return mirror.accessEntries().filter((entry) => entry.path.includes('/referrers/')).at(-1)?.cache;
}

function descriptorOf(image: BuiltImage): Descriptor {
  return { mediaType: MEDIA_TYPES.ociManifest, digest: image.manifestDigest, size: image.manifestBytes.length };
}

describe('referrers from the referrers tag of distribution 2.8.2', { timeout: 180_000 }, () => {
  let work: string;
  let upstream: Distribution;
  let mirror: Regmirror;
  let app: BuiltImage;
  let bare: BuiltImage;
  let signature: PushedArtifact;
  let sbom: PushedArtifact;

  before(async () => {
    work = await makeTempDir('referrers-');
    upstream = await startDistribution();
    const appLayout = await buildImageLayout(path.join(work, 'app'), 'v1', [{ layers: [{ size: 2000, seed: 1301 }] }]);
    const bareLayout = await buildImageLayout(path.join(work, 'bare'), 'v1', [{ layers: [{ size: 2000, seed: 1302 }] }]);
    app = appLayout.images[0] as BuiltImage;
    bare = bareLayout.images[0] as BuiltImage;
    await pushLayout(appLayout, `127.0.0.1:${upstream.port}/team/app:v1`);
    await pushLayout(bareLayout, `127.0.0.1:${upstream.port}/team/bare:v1`);
    signature = await pushArtifact(upstream.url, 'team/app', descriptorOf(app), {
      artifactType: SIGNATURE,
      payload: Buffer.from('{"critical":{"image":{"docker-manifest-digest":"x"}}}'),
      payloadType: 'application/vnd.dev.cosign.simplesigning.v1+json',
      annotations: { 'dev.cosignproject.cosign/signature': 'MEUCIQ-test' },
    });
    sbom = await pushArtifact(upstream.url, 'team/app', descriptorOf(app), { artifactType: SBOM, payload: Buffer.from('{"spdxVersion":"SPDX-2.3"}'), payloadType: SBOM });
    await pushReferrersTag(upstream.url, 'team/app', app.manifestDigest, [signature.descriptor, sbom.descriptor]);
    mirror = await startRegmirror({ upstreams: [`docker.io=${upstream.url}`], env: FRESHNESS_ENV });
  });

  after(async () => {
    await mirror?.destroy();
    await upstream?.destroy();
    await removeDir(work);
  });

  it('lists the referrers the tag holds, as an image index of their descriptors; HEAD says the same without a body', async () => {
    const list = await listed(await referrers(mirror, 'team/app', app.manifestDigest));
    assert.deepEqual(list.manifests, [signature.descriptor, sbom.descriptor]);
    assert.equal(list.filters, null, 'no filter asked, none applied');
    const head = await fetch(`${mirror.url}/v2/team/app/referrers/${app.manifestDigest}`, { method: 'HEAD' });
    assert.equal(head.status, 200);
    assert.equal(head.headers.get('content-type'), MEDIA_TYPES.ociIndex);
    assert.equal(Number(head.headers.get('content-length')), Buffer.byteLength(JSON.stringify({ schemaVersion: 2, mediaType: MEDIA_TYPES.ociIndex, manifests: list.manifests })));
    assert.equal((await head.arrayBuffer()).byteLength, 0);
  });

  it('filters by artifactType and says it did', async () => {
    const sboms = await listed(await referrers(mirror, 'team/app', app.manifestDigest, `?artifactType=${encodeURIComponent(SBOM)}`));
    assert.deepEqual(sboms.manifests, [sbom.descriptor]);
    assert.equal(sboms.filters, 'artifactType');
    const none = await listed(await referrers(mirror, 'team/app', app.manifestDigest, '?artifactType=application/vnd.example.none'));
    assert.deepEqual(none.manifests, []);
    assert.equal(none.filters, 'artifactType');
  });

  it('answers an empty index for a manifest nothing refers to, and for an unknown digest', async () => {
    assert.deepEqual((await listed(await referrers(mirror, 'team/bare', bare.manifestDigest))).manifests, []);
    assert.deepEqual((await listed(await referrers(mirror, 'team/app', UNKNOWN_SUBJECT))).manifests, []);
    assert.deepEqual((await listed(await referrers(mirror, 'team/nothing-here', UNKNOWN_SUBJECT))).manifests, []);
  });

  it('serves each referrer, and its blobs, by digest under the repository', async () => {
    for (const artifact of [signature, sbom]) {
      const manifest = await fetch(`${mirror.url}/v2/team/app/manifests/${artifact.descriptor.digest}`, { headers: { accept: MEDIA_TYPES.ociManifest } });
      assert.equal(manifest.status, 200);
      assert.ok(Buffer.from(await manifest.arrayBuffer()).equals(artifact.manifestBytes));
      for (const blob of artifact.blobs) {
        const response = await fetch(`${mirror.url}/v2/team/app/blobs/${blob.digest}`);
        assert.equal(response.status, 200);
        assert.ok(Buffer.from(await response.arrayBuffer()).equals(blob.bytes));
      }
    }
  });

  it('asks the upstream once per tag TTL (its missing API once for all), revalidates, and serves the list stale when the upstream is gone', async (t) => {
    const own = await startRegmirror({ upstreams: [`docker.io=${upstream.url}`], env: FRESHNESS_ENV });
    t.after(() => own.destroy());
    const asked = async (): Promise<{ api: number; tagGets: number; tagHeads: number; all: number }> => {
      await upstream.settle();
      const tagPath = new RegExp(`/manifests/${referrersTagOf(app.manifestDigest)}$`);
      return {
        api: upstream.countRequests('GET', /\/referrers\//),
        tagGets: upstream.countRequests('GET', tagPath),
        tagHeads: upstream.countRequests('HEAD', tagPath),
        all: upstream.accessEntries().length,
      };
    };
    const start = await asked();
    const expected = [signature.descriptor, sbom.descriptor];
    assert.deepEqual((await listed(await referrers(own, 'team/app', app.manifestDigest))).manifests, expected);
    let now = await asked();
    assert.deepEqual([now.api - start.api, now.tagGets - start.tagGets], [1, 1], 'the API asked (404), then the tag');
    assert.equal(await lastCache(own), 'miss');

    assert.deepEqual((await listed(await referrers(own, 'team/app', app.manifestDigest, `?artifactType=${encodeURIComponent(SIGNATURE)}`))).manifests, [signature.descriptor]);
    assert.deepEqual((await listed(await referrers(own, 'team/bare', bare.manifestDigest))).manifests, []);
    const afterBare = await asked();
    assert.equal(afterBare.api, now.api, 'an upstream without the API is not asked for it again');
    assert.equal(afterBare.all, now.all + 1, 'within the TTL the cached tag answered; only the other image’s tag was asked');
    now = afterBare;

    await sleep(FRESHNESS_MS + 300);
    assert.deepEqual((await listed(await referrers(own, 'team/app', app.manifestDigest))).manifests, expected);
    const revalidated = await asked();
    assert.deepEqual([revalidated.api - now.api, revalidated.tagGets - now.tagGets, revalidated.tagHeads - now.tagHeads], [0, 0, 1], 'one HEAD of the tag');
    assert.equal(await lastCache(own), 'revalidated');

    await upstream.stop();
    try {
      await sleep(FRESHNESS_MS + 300);
      assert.deepEqual((await listed(await referrers(own, 'team/app', app.manifestDigest))).manifests, expected);
      assert.equal(await lastCache(own), 'stale');
      // A new process has not asked the upstream about its API yet: the tag it cached still answers.
      await own.stop();
      await own.start();
      assert.deepEqual((await listed(await referrers(own, 'team/app', app.manifestDigest))).manifests, expected);
      assert.equal(await lastCache(own), 'stale');
      // Nothing cached and nobody to ask: the upstream's failure, in the OCI shape.
      await refused(await referrers(own, 'team/other', UNKNOWN_SUBJECT), 502, 'UPSTREAM_UNAVAILABLE');
    } finally {
      await upstream.start();
    }
  });

  it('follows the referrers tag when it moves', async () => {
    assert.equal((await listed(await referrers(mirror, 'team/app', app.manifestDigest))).manifests.length, 2);
    const second = await pushArtifact(upstream.url, 'team/app', descriptorOf(app), { artifactType: SIGNATURE, payload: Buffer.from('{"second":true}'), payloadType: 'application/vnd.dev.cosign.simplesigning.v1+json' });
    await pushReferrersTag(upstream.url, 'team/app', app.manifestDigest, [signature.descriptor, sbom.descriptor, second.descriptor]);
    await sleep(FRESHNESS_MS + 300);
    const list = await listed(await referrers(mirror, 'team/app', app.manifestDigest, `?artifactType=${encodeURIComponent(SIGNATURE)}`));
    assert.deepEqual(list.manifests, [signature.descriptor, second.descriptor]);
  });
});

describe('referrers with auth', { timeout: 120_000 }, () => {
  const PASSWORDS = { alice: 'alice-secret-5c1e', bob: 'bob-secret-0b7d' };
  const basic = (user: keyof typeof PASSWORDS): string => `Basic ${Buffer.from(`${user}:${PASSWORDS[user]}`).toString('base64')}`;
  let work: string;
  let upstream: Distribution;
  let mirror: Regmirror;
  let app: BuiltImage;
  let signature: PushedArtifact;

  before(async () => {
    work = await makeTempDir('referrers-auth-');
    upstream = await startDistribution();
    const layout = await buildImageLayout(path.join(work, 'app'), 'v1', [{ layers: [{ size: 2000, seed: 1311 }] }]);
    app = layout.images[0] as BuiltImage;
    await pushLayout(layout, `127.0.0.1:${upstream.port}/team/app:v1`);
    // The same image elsewhere, without its signature: a repository that does not hold the referrer.
    await pushLayout(layout, `127.0.0.1:${upstream.port}/team/copy:v1`);
    signature = await pushArtifact(upstream.url, 'team/app', descriptorOf(app), { artifactType: SIGNATURE, payload: Buffer.from('{"signed":1}'), payloadType: 'application/vnd.dev.cosign.simplesigning.v1+json' });
    await pushReferrersTag(upstream.url, 'team/app', app.manifestDigest, [signature.descriptor]);
    const htpasswd = path.join(work, 'htpasswd');
    await writeHtpasswd(htpasswd, PASSWORDS);
    const config = path.join(work, 'regmirror.yaml');
    const rules = ['access:', '  - users: [alice]', '    repositories: ["team/*"]', '    actions: [pull]', '  - users: [bob]', '    repositories: ["team/copy"]', '    actions: [pull]'];
    await writeFile(config, [`upstreams:`, `  - url: ${upstream.url}`, 'auth:', `  htpasswd: ${htpasswd}`, ...rules, ''].join('\n'));
    mirror = await startRegmirror({ configFile: config });
  });

  after(async () => {
    await mirror?.destroy();
    await upstream?.destroy();
    await removeDir(work);
  });

  it('needs pull on the repository', async () => {
    const anonymous = await referrers(mirror, 'team/app', app.manifestDigest);
    assert.match(anonymous.headers.get('www-authenticate') ?? '', /scope="repository:team\/app:pull"/);
    await refused(anonymous, 401, 'UNAUTHORIZED');
    await refused(await referrers(mirror, 'team/app', app.manifestDigest, '', { authorization: basic('bob') }), 403, 'DENIED');
    const list = await listed(await referrers(mirror, 'team/app', app.manifestDigest, '', { authorization: basic('alice') }));
    assert.deepEqual(list.manifests, [signature.descriptor]);
  });

  it('serves a listed referrer and its blobs under the repository that lists it, not under one that does not hold it', async () => {
    const authorization = basic('alice');
    const manifest = await fetch(`${mirror.url}/v2/team/app/manifests/${signature.descriptor.digest}`, { headers: { authorization, accept: MEDIA_TYPES.ociManifest } });
    assert.equal(manifest.status, 200);
    assert.ok(Buffer.from(await manifest.arrayBuffer()).equals(signature.manifestBytes));
    for (const blob of signature.blobs) {
      const response = await fetch(`${mirror.url}/v2/team/app/blobs/${blob.digest}`, { headers: { authorization } });
      assert.equal(response.status, 200);
      assert.ok(Buffer.from(await response.arrayBuffer()).equals(blob.bytes));
    }
    // Cached now, but team/copy's upstream does not hold it: not served there.
    const elsewhere = await fetch(`${mirror.url}/v2/team/copy/manifests/${signature.descriptor.digest}`, { headers: { authorization, accept: MEDIA_TYPES.ociManifest } });
    await refused(elsewhere, 404, 'MANIFEST_UNKNOWN');
    const layer = signature.blobs[1]?.digest as string;
    await refused(await fetch(`${mirror.url}/v2/team/copy/blobs/${layer}`, { headers: { authorization } }), 404, 'BLOB_UNKNOWN');
  });
});

describe('referrers from an upstream with the referrers API (scripted)', { timeout: 120_000 }, () => {
  const SUBJECT = `sha256:${'a'.repeat(64)}`;
  const signature: Descriptor = { mediaType: MEDIA_TYPES.ociManifest, digest: `sha256:${'1'.repeat(64)}`, size: 700, artifactType: SIGNATURE, annotations: { created: '2026-01-01T00:00:00Z' } };
  const sbom: Descriptor = { mediaType: MEDIA_TYPES.ociManifest, digest: `sha256:${'2'.repeat(64)}`, size: 800, artifactType: SBOM };
  let work: string;
  const started: Array<{ destroy?: () => Promise<void>; stop?: () => Promise<void> }> = [];

  before(async () => {
    work = await makeTempDir('referrers-api-');
  });

  after(async () => {
    for (const thing of started.reverse()) await (thing.destroy ?? thing.stop)?.();
    await removeDir(work);
  });

  function sendIndex(response: ServerResponse, manifests: unknown[], headers: Record<string, string> = {}): void {
    const body = JSON.stringify({ schemaVersion: 2, mediaType: MEDIA_TYPES.ociIndex, manifests });
    response.writeHead(200, { 'content-type': MEDIA_TYPES.ociIndex, 'content-length': String(Buffer.byteLength(body)), ...headers });
    response.end(body);
  }

  async function setup(handler: Parameters<typeof startScriptedUpstream>[0]): Promise<{ upstream: ScriptedUpstream; mirror: Regmirror }> {
    const upstream = await startScriptedUpstream(handler);
    started.push(upstream);
    const config = path.join(work, `config-${started.length}.yaml`);
    await writeFile(config, `upstreams:\n  - registry: api.test\n    url: ${upstream.url}\n`);
    const mirror = await startRegmirror({ configFile: config, env: FRESHNESS_ENV });
    started.push(mirror);
    return { upstream, mirror };
  }

  it('passes the list through, filters it itself from one cached answer, refetches it after the TTL and serves it stale on failure', async () => {
    let failing = false;
    const { upstream, mirror } = await setup((request, response) => {
      if (failing) return sendError(response, 503, 'UNAVAILABLE');
      if (request.url === `/v2/team/app/referrers/${SUBJECT}`) return sendIndex(response, [{ ...signature, platform: { os: 'linux' }, urls: ['http://10.0.0.1/x'] }, sbom]);
      return sendError(response, 404, 'NAME_UNKNOWN');
    });
    const api = (): number => upstream.count('GET', /\/referrers\//);
    assert.deepEqual((await listed(await referrers(mirror, 'team/app', SUBJECT))).manifests, [signature, sbom], 'only the descriptor fields of a referrers list');
    assert.equal(await lastCache(mirror), 'miss');
    const filtered = await listed(await referrers(mirror, 'team/app', SUBJECT, `?artifactType=${encodeURIComponent(SBOM)}`));
    assert.deepEqual(filtered.manifests, [sbom]);
    assert.equal(filtered.filters, 'artifactType');
    assert.equal(await lastCache(mirror), 'hit');
    assert.equal(api(), 1, 'one upstream request for both, with no filter passed on');
    assert.ok(upstream.requests.every((request) => !request.path.includes('artifactType')));
    assert.equal(upstream.count('GET', /\/manifests\//), 0, 'the referrers tag is not asked of an upstream with the API');

    await sleep(FRESHNESS_MS + 300);
    assert.equal((await listed(await referrers(mirror, 'team/app', SUBJECT))).manifests.length, 2);
    assert.equal(api(), 2, 'refetched after the TTL');

    failing = true;
    await sleep(FRESHNESS_MS + 300);
    assert.deepEqual((await listed(await referrers(mirror, 'team/app', SUBJECT))).manifests, [signature, sbom]);
    assert.equal(await lastCache(mirror), 'stale');
    assert.equal(api(), 3);
    await refused(await referrers(mirror, 'team/other', SUBJECT), 502, 'UPSTREAM_UNAVAILABLE');
  });

  it('keeps an empty list as long as any other, in memory only', async () => {
    let answer: Descriptor[] = [signature];
    let failing = false;
    const { upstream, mirror } = await setup((request, response) => {
      if (failing) return sendError(response, 503, 'UNAVAILABLE');
      if (request.url === `/v2/team/app/referrers/${SUBJECT}`) return sendIndex(response, answer);
      if (request.url?.startsWith('/v2/team/app/referrers/')) return sendIndex(response, []);
      return sendError(response, 404, 'NAME_UNKNOWN');
    });
    const api = (): number => upstream.count('GET', /\/referrers\//);
    for (let i = 0; i < 2; i += 1) assert.deepEqual((await listed(await referrers(mirror, 'team/app', UNKNOWN_SUBJECT))).manifests, []);
    assert.equal(api(), 1, 'an empty list is cached too');

    assert.deepEqual((await listed(await referrers(mirror, 'team/app', SUBJECT))).manifests, [signature]);
    answer = [];
    await sleep(FRESHNESS_MS + 300);
    for (let i = 0; i < 2; i += 1) assert.deepEqual((await listed(await referrers(mirror, 'team/app', SUBJECT))).manifests, []);
    assert.equal(api(), 3, 'the list that became empty, asked once');

    // Not kept on disk: a new process has nothing to serve stale when the upstream fails.
    failing = true;
    await mirror.stop();
    await mirror.start();
    await refused(await referrers(mirror, 'team/app', SUBJECT), 502, 'UPSTREAM_UNAVAILABLE');
  });

  it('follows the pages of a paged list', async () => {
    const { upstream, mirror } = await setup((request, response) => {
      const url = request.url ?? '';
      if (url === `/v2/team/app/referrers/${SUBJECT}`) return sendIndex(response, [signature], { link: `</v2/team/app/referrers/${SUBJECT}?n=1&last=x>; rel="next"` });
      if (url === `/v2/team/app/referrers/${SUBJECT}?n=1&last=x`) return sendIndex(response, [sbom]);
      return sendError(response, 404, 'NAME_UNKNOWN');
    });
    assert.deepEqual((await listed(await referrers(mirror, 'team/app', SUBJECT))).manifests, [signature, sbom]);
    assert.equal(upstream.count('GET', /\/referrers\//), 2);
  });

  it('takes a 404 naming an unknown repository for what it is, not for a missing API', async () => {
    const { upstream, mirror } = await setup((request, response) => {
      if (request.url?.startsWith('/v2/team/app/referrers/')) return sendIndex(response, [signature]);
      return sendError(response, 404, 'NAME_UNKNOWN');
    });
    assert.deepEqual((await listed(await referrers(mirror, 'team/gone', SUBJECT))).manifests, []);
    assert.equal(upstream.count('GET', /^\/v2\/team\/gone\/manifests\/sha256-a{64}$/), 1, 'the referrers tag was tried');
    assert.deepEqual((await listed(await referrers(mirror, 'team/app', SUBJECT))).manifests, [signature]);
    assert.equal(upstream.count('GET', /^\/v2\/team\/app\/referrers\//), 1, 'the API is still asked');
  });

  it('refuses what is not a referrers list, or too much of one, in the OCI shape; passes on a rate limit', async () => {
    const huge = Buffer.alloc(5 * 1024 * 1024, 0x20);
    const { mirror } = await setup((request, response) => {
      const url = request.url ?? '';
      if (url.startsWith('/v2/team/html/')) {
        response.writeHead(200, { 'content-type': 'text/html', 'content-length': '15' });
        response.end('<html>hi</html>');
        return;
      }
      if (url.startsWith('/v2/team/manifest/')) {
        const body = JSON.stringify({ schemaVersion: 2, mediaType: MEDIA_TYPES.ociManifest, config: sbom, layers: [] });
        response.writeHead(200, { 'content-type': MEDIA_TYPES.ociManifest, 'content-length': String(body.length) });
        response.end(body);
        return;
      }
      if (url.startsWith('/v2/team/bad-descriptor/')) return sendIndex(response, [{ ...sbom, size: 'big' }]);
      if (url.startsWith('/v2/team/huge/')) {
        response.writeHead(200, { 'content-type': MEDIA_TYPES.ociIndex });
        response.end(huge);
        return;
      }
      if (url.startsWith('/v2/team/limited/')) return sendError(response, 429, 'TOOMANYREQUESTS', { 'retry-after': '7' });
      return sendError(response, 404, 'NAME_UNKNOWN');
    });
    for (const name of ['team/html', 'team/manifest', 'team/bad-descriptor']) {
      assert.match(await refused(await referrers(mirror, name, SUBJECT), 502, 'UPSTREAM_UNAVAILABLE'), /referrers list that is not valid/, name);
    }
    assert.match(await refused(await referrers(mirror, 'team/huge', SUBJECT), 502, 'UPSTREAM_UNAVAILABLE'), /larger than/);
    const limited = await referrers(mirror, 'team/limited', SUBJECT);
    assert.equal(limited.headers.get('retry-after'), '7');
    await refused(limited, 429, 'TOOMANYREQUESTS');
  });
});
