// regmirror as a v1 mirror, configured with its own YAML (`v1.mirroring`): of another regmirror (a Docker 1.x
// pull with identical bytes and headers, one source fetch for concurrent cold pulls, Range on a cold layer,
// pulls from the cache with the source gone); of a fake source that demands credentials and tokens, fails,
// cuts and lies (nothing unverified cached, nothing of the client's sent, nothing of the source's passed
// back); and with a separate source index (search merged, image lists from the index, endpoints rewritten).

import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileExists, rawGet, temporaryFiles, waitUntil } from './support/fault-upstream.js';
import { SOURCE_ONLY_HEADERS, startFakeV1Source, type FakeV1Source } from './support/fake-v1-source.js';
import { startRegmirror, type Regmirror } from './support/regmirror.js';
import { makeTempDir, removeDir } from './support/temp.js';
import { makeV1Chain, V1Client, v1Request, type PullResult, type V1Image } from './support/v1-client.js';

const KiB = 1024;
const MiB = 1024 * KiB;
const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** Starts a regmirror whose configuration file holds the given YAML `v1:` section. */
async function startV1Mirror(configDir: string, name: string, v1Yaml: string, dataDir?: string): Promise<Regmirror> {
  const configFile = path.join(configDir, `${name}.yaml`);
  await writeFile(configFile, `log:\n  level: info\nv1:\n${v1Yaml}`);
  return startRegmirror({ configFile, ...(dataDir === undefined ? {} : { dataDir }) });
}

/**
 * A data directory holding repositories of its own, pushed while it was a plain registry: a mirror refuses
 * pushes, so this is how a mirror comes to have local repositories (a registry turned into a mirror).
 */
async function pushedBeforeMirroring(dataDir: string, pushes: Array<[name: string, tag: string, images: V1Image[]]>): Promise<void> {
  const plain = await startRegmirror({ dataDir });
  try {
    const pusher = new V1Client(plain.url);
    for (const [name, tag, images] of pushes) await pusher.push(name, tag, images);
  } finally {
    await plain.destroy();
  }
}

function layerFile(mirror: Regmirror, id: string): string {
  return path.join(mirror.dataDir, 'v1', 'images', id, 'layer');
}

/** Waits until no fill runs and tmp/ is empty, then asserts the layer was not committed. */
async function assertNotCached(mirror: Regmirror, id: string): Promise<void> {
  await waitUntil('no fill is in progress and tmp/ is empty', async () => {
    const running = await mirror.metricValue('regmirror_fills_in_progress');
    return running === 0 && (await temporaryFiles(mirror.dataDir)).length === 0;
  });
  assert.equal(await fileExists(layerFile(mirror, id)), false, 'no layer committed');
}

function assertSamePull(actual: PullResult, expected: PullResult): void {
  assert.deepEqual(actual.tags, expected.tags);
  assert.deepEqual(actual.ancestry, expected.ancestry);
  assert.equal(actual.images.length, expected.images.length);
  for (const [index, image] of expected.images.entries()) {
    const got = actual.images[index];
    assert.ok(got !== undefined);
    assert.equal(got.id, image.id);
    assert.ok(got.json.equals(image.json), `json of ${image.id}`);
    assert.ok(got.layer.equals(image.layer), `layer of ${image.id}`);
    assert.equal(got.jsonHeaders['x-docker-size'], image.jsonHeaders['x-docker-size'], `X-Docker-Size of ${image.id}`);
    assert.equal(got.jsonHeaders['x-docker-checksum-payload'], image.jsonHeaders['x-docker-checksum-payload'], `checksum of ${image.id}`);
  }
}

describe('v1 mirror of a regmirror', { timeout: 180_000 }, () => {
  let configDir: string;
  let source: Regmirror;
  let mirror: Regmirror;
  const chain = makeV1Chain('mirrored', [
    { size: 300 * KiB, seed: 31 },
    { size: 0, seed: 32 },
    { size: 200 * KiB, seed: 33 },
  ]);
  const [big] = makeV1Chain('big', [{ size: 4 * MiB + 5, seed: 34 }]) as [V1Image];
  const [ranged] = makeV1Chain('ranged', [{ size: 512 * KiB, seed: 35 }]) as [V1Image];
  let direct: PullResult;
  /** Successful GETs the source answered for a path (the pushes' existence checks were 404s). */
  const sourceGets = (requestPath: string): number =>
    source.accessEntries().filter((entry) => entry.method === 'GET' && entry.status === 200 && entry.path === requestPath).length;

  before(async () => {
    configDir = await makeTempDir('regmirror-v1-config-');
    source = await startRegmirror();
    const pusher = new V1Client(source.url);
    await pusher.push('team/app', 'latest', chain);
    await pusher.push('team/big', 'latest', [big]);
    await pusher.push('team/ranged', 'latest', [ranged]);
    direct = await pusher.pull('team/app', 'latest');
    mirror = await startV1Mirror(configDir, 'mirror', `  mirroring:\n    source: ${source.url}\n    tagsCacheTtl: 1s\n`);
  });

  after(async () => {
    await mirror?.destroy();
    await source?.destroy();
    if (configDir !== undefined) await removeDir(configDir);
  });

  it('says it is a mirror on _ping', async () => {
    const ping = await v1Request(`${mirror.url}/v1/_ping`);
    assert.equal(ping.status, 200);
    assert.equal(ping.headers['x-docker-registry-standalone'], 'mirror');
  });

  it('serves a Docker 1.x pull identical to the source: bytes, ancestry, X-Docker-Size, payload checksums', async () => {
    await source.settle();
    const sourceBefore = new Map(chain.map((image) => [image.id, sourceGets(`/v1/images/${image.id}/layer`)]));
    const client = new V1Client(mirror.url);
    const first = await client.pull('team/app', 'latest');
    assertSamePull(first, direct);
    assert.equal(first.indexHeaders['x-docker-endpoints'], mirror.host, 'endpoints rewritten to the mirror');
    assert.match(String(first.indexHeaders['x-docker-token']), /^Token signature=[A-Z0-9]{16},repository="team\/app",access=read$/);
    await mirror.fillsSettled();
    assertSamePull(await client.pull('team/app', 'latest'), direct);
    await mirror.settle();
    const layerGets = (id: string): string[] =>
      mirror
        .accessEntries()
        .filter((entry) => entry.method === 'GET' && entry.path === `/v1/images/${id}/layer`)
        .map((entry) => entry.cache);
    for (const image of chain) assert.deepEqual(layerGets(image.id), ['miss', 'hit'], `layer ${image.id}: fetched once, then from the cache`);
    for (const image of chain) {
      assert.ok(await fileExists(layerFile(mirror, image.id)), 'layer cached');
      for (const file of ['json', '_checksum']) assert.ok(await fileExists(path.join(mirror.dataDir, 'v1', 'images', image.id, file)), `${file} cached`);
    }
    // Docker asks for the ancestry of the tagged image only.
    assert.ok(await fileExists(path.join(mirror.dataDir, 'v1', 'images', chain[2]?.id ?? '', 'ancestry')), 'ancestry cached');
    await source.settle();
    for (const image of chain) assert.equal(sourceGets(`/v1/images/${image.id}/layer`), (sourceBefore.get(image.id) ?? 0) + 1, 'one fill for two pulls');
  });

  it('costs one source fetch for 6 concurrent cold pulls of one layer', async () => {
    const pulls = await Promise.all(Array.from({ length: 6 }, () => new V1Client(mirror.url).pull('team/big', 'latest')));
    for (const pulled of pulls) {
      assert.equal(pulled.images.length, 1);
      assert.ok(pulled.images[0]?.layer.equals(big.layer), 'every client got the whole layer');
      assert.equal(pulled.images[0]?.jsonHeaders['x-docker-size'], String(big.layer.length));
    }
    await source.settle();
    const fetched = (suffix: string): number => sourceGets(`/v1/images/${big.id}/${suffix}`);
    assert.equal(fetched('layer'), 1, 'one layer fetch at the source');
    assert.equal(fetched('json'), 1, 'one json fetch at the source');
    assert.equal(fetched('ancestry'), 1, 'one ancestry fetch at the source');
    await mirror.settle();
    const outcomes = mirror.accessEntries().filter((entry) => entry.method === 'GET' && entry.path === `/v1/images/${big.id}/layer`).map((entry) => entry.cache);
    assert.equal(outcomes.length, 6);
    assert.equal(outcomes.filter((cache) => cache === 'miss').length, 1, `one request started the fill, the others joined it or hit the cache: ${outcomes.join(' ')}`);
    assert.ok(outcomes.every((cache) => ['miss', 'fill', 'hit'].includes(cache)));
  });

  it('answers a Range on a cold layer with 206, and caches the whole layer', async () => {
    const response = await v1Request(`${mirror.url}/v1/images/${ranged.id}/layer`, { headers: { range: 'bytes=1000-1999' } });
    assert.equal(response.status, 206);
    assert.equal(response.headers['content-range'], `bytes 1000-1999/${ranged.layer.length}`);
    assert.ok(response.body.equals(ranged.layer.subarray(1000, 2000)));
    const open = await v1Request(`${mirror.url}/v1/images/${ranged.id}/layer`, { headers: { range: 'bytes=524000-' } });
    assert.equal(open.status, 206);
    assert.equal(open.headers['content-range'], `bytes 524000-${ranged.layer.length - 1}/${ranged.layer.length}`);
    await waitUntil('the ranged layer is cached', () => fileExists(layerFile(mirror, ranged.id)));
    await source.settle();
    assert.equal(sourceGets(`/v1/images/${ranged.id}/layer`), 1);
  });

  it('searches its own repositories merged with the source\'s', async () => {
    const dataDir = await makeTempDir('regmirror-v1-local-');
    await pushedBeforeMirroring(dataDir, [['local/only', 'v1', makeV1Chain('local-search', [{ size: 1000, seed: 36 }])]]);
    const turned = await startV1Mirror(configDir, 'turned', `  mirroring:\n    source: ${source.url}\n`, dataDir);
    try {
      const found = JSON.parse((await v1Request(`${turned.url}/v1/search?q=`)).body.toString()) as { num_results: number; results: Array<{ name: string }> };
      assert.deepEqual(found.results.map((result) => result.name), ['local/only', 'team/app', 'team/big', 'team/ranged']);
      assert.equal(found.num_results, 4);
    } finally {
      await turned.destroy();
      await removeDir(dataDir);
    }
  });

  it('refuses every write: nothing a client pushes can shadow or poison what the source serves', async () => {
    const [poison] = makeV1Chain('poison', [{ size: 1000, seed: 37 }]) as [V1Image];
    const refusals: Array<[method: string, path: string, body: string | Buffer]> = [
      ['PUT', `/v1/images/${poison.id}/json`, poison.json],
      // An image id the source has, pushed before anyone pulled it through the mirror.
      ['PUT', `/v1/images/${ranged.id}/json`, ranged.json],
      ['PUT', `/v1/images/${ranged.id}/layer`, poison.layer],
      ['PUT', `/v1/images/${ranged.id}/checksum`, ''],
      ['PUT', '/v1/repositories/team/app/tags/latest', JSON.stringify(poison.id)],
      ['DELETE', '/v1/repositories/team/app/tags/latest', ''],
      ['DELETE', '/v1/repositories/team/app/', ''],
      ['PUT', '/v1/repositories/team/app/', '[]'],
      ['PUT', '/v1/repositories/team/app/images', '[]'],
      ['DELETE', '/v1/repositories/team/app/images', ''],
      ['PUT', '/v1/repositories/team/app/properties', '{"access": "private"}'],
    ];
    for (const [method, requestPath, body] of refusals) {
      const response = await v1Request(`${mirror.url}${requestPath}`, { method, body: Buffer.from(body), headers: { 'x-docker-checksum-payload': 'sha256:0' } });
      assert.equal(response.status, 405, `${method} ${requestPath}`);
      assert.deepEqual(JSON.parse(response.body.toString()), { error: 'This registry is a mirror: pushes, tags and deletes are refused' }, `${method} ${requestPath}`);
    }
    // What the source serves is what clients get.
    const json = await v1Request(`${mirror.url}/v1/images/${ranged.id}/json`);
    assert.ok(json.body.equals(ranged.json));
    const tag = await v1Request(`${mirror.url}/v1/repositories/team/app/tags/latest`);
    assert.equal(JSON.parse(tag.body.toString()), direct.tags.latest);
    assert.equal(await fileExists(path.join(mirror.dataDir, 'v1', 'images', poison.id)), false, 'nothing of the push was kept');
  });

  it('is started as well from the seed document\'s docker-registry configuration, serving the same pull', async () => {
    const storagePath = path.join(configDir, 'registry');
    const configFile = path.join(configDir, 'seed.yml');
    await writeFile(
      configFile,
      ['common: &common', '    loglevel: info', '    mirroring:', `        source: ${source.url}`, '        tags_cache_ttl: 172800', 'local:', '    <<: *common', '    storage: local', `    storage_path: ${storagePath}`, ''].join('\n'),
    );
    const legacy = await startRegmirror({ configFile, dataDir: storagePath, env: { SETTINGS_FLAVOR: 'local' } });
    try {
      assertSamePull(await new V1Client(legacy.url).pull('team/app', 'latest'), direct);
      await legacy.fillsSettled();
      // docker-registry's own layout, in the storage_path itself.
      for (const image of chain) assert.ok(await fileExists(path.join(storagePath, 'images', image.id, 'layer')), `${image.id} in storage_path/images`);
    } finally {
      await legacy.destroy();
    }
  });

  it('still serves a pull from its cache with the source stopped and the tags TTL expired', async (t) => {
    // A source and mirror of its own: stopping this source takes nothing from the other tests.
    const ownSource = await startRegmirror();
    t.after(() => ownSource.destroy());
    await new V1Client(ownSource.url).push('team/app', 'latest', chain);
    const expected = await new V1Client(ownSource.url).pull('team/app', 'latest');
    const ownMirror = await startV1Mirror(configDir, 'cache-only', `  mirroring:\n    source: ${ownSource.url}\n    tagsCacheTtl: 1s\n`);
    t.after(() => ownMirror.destroy());
    assertSamePull(await new V1Client(ownMirror.url).pull('team/app', 'latest'), expected);
    const cachedAt = Date.now();
    await ownSource.stop();
    await sleep(Math.max(0, cachedAt + 1_200 - Date.now())); // past the 1 s tags TTL

    await ownMirror.settle();
    const logged = ownMirror.accessEntries().length;
    const pulled = await new V1Client(ownMirror.url).pull('team/app', 'latest');
    assertSamePull(pulled, expected);
    await ownMirror.settle();
    const stale = ownMirror.accessEntries().slice(logged).filter((entry) => entry.cache === 'stale').map((entry) => entry.path);
    assert.ok(stale.includes('/v1/repositories/team/app/tags'), 'tags served stale');
    assert.ok(stale.includes('/v1/repositories/team/app/images'), 'the image list served stale');
    // What was never cached is the source's failure, said as such.
    const cold = await v1Request(`${ownMirror.url}/v1/images/${'0'.repeat(64)}/json`);
    assert.equal(cold.status, 502);
    assert.deepEqual(JSON.parse(cold.body.toString()), { error: 'source registry is unreachable' });
  });
});

describe('v1 mirror of a fake source: credentials, tokens, faults', { timeout: 180_000 }, () => {
  let configDir: string;
  let source: FakeV1Source;
  let mirror: Regmirror;
  const credentials = { username: 'mirror-user', password: 'mirror-pass' };
  const images = makeV1Chain('faulty', [
    { size: 100 * KiB, seed: 41 },
    { size: 1 * MiB, seed: 42 },
    { size: 1 * MiB, seed: 43 },
    { size: 1 * MiB, seed: 44 },
    { size: 1 * MiB, seed: 45 },
    { size: 64 * KiB, seed: 46 },
    { size: 64 * KiB, seed: 47 },
    { size: 64 * KiB, seed: 48 },
  ]);
  const [plain, cut, lying, lyingChunked, wrong, failing, refused, leak] = images as [V1Image, V1Image, V1Image, V1Image, V1Image, V1Image, V1Image, V1Image];
  const layerUrl = (image: V1Image): string => `${mirror.url}/v1/images/${image.id}/layer`;
  /**
   * What a Docker 1.x pull asks first: the repository's image list with a token. The mirror gets its source
   * token on the way; image routes name no repository, so without one this source refuses them.
   */
  const openPull = async (): Promise<void> => {
    const index = await v1Request(`${mirror.url}/v1/repositories/faults/app/images`, { headers: { 'x-docker-token': 'true' } });
    assert.equal(index.status, 200);
  };

  before(async () => {
    configDir = await makeTempDir('regmirror-v1-fake-');
    source = await startFakeV1Source({ repository: 'faults/app', images, credentials, requireToken: true });
    source.setLayerMode(cut.id, 'cut');
    source.setLayerMode(lying.id, 'size-lie');
    source.setLayerMode(lyingChunked.id, 'size-lie-chunked');
    source.setLayerMode(wrong.id, 'wrong-bytes');
    source.setLayerMode(failing.id, 'status-500');
    source.setLayerMode(refused.id, 'status-401');
    mirror = await startV1Mirror(
      configDir,
      'fake',
      `  mirroring:\n    source: ${source.url}\n    tagsCacheTtl: 1s\n    credentials:\n      username: ${credentials.username}\n      password: ${credentials.password}\n`,
    );
  });

  after(async () => {
    await mirror?.destroy();
    await source?.stop();
    if (configDir !== undefined) await removeDir(configDir);
  });

  it('authenticates itself: Basic to the index, then the index\'s token to the registry; clients get its own token', async () => {
    const client = new V1Client(mirror.url);
    const index = await v1Request(`${mirror.url}/v1/repositories/faults/app/images`, { headers: { 'x-docker-token': 'true' } });
    assert.equal(index.status, 200);
    const indexRequest = source.requests.find((request) => request.path === '/v1/repositories/faults/app/images');
    assert.ok(indexRequest !== undefined);
    assert.equal(indexRequest.headers.authorization, `Basic ${Buffer.from('mirror-user:mirror-pass').toString('base64')}`);
    assert.equal(indexRequest.headers['x-docker-token'], 'true');
    assert.equal(index.headers['x-docker-endpoints'], mirror.host, 'the source\'s endpoints are not passed on');
    const granted = String(index.headers['x-docker-token']);
    assert.ok(!source.issuedTokens.some((token) => granted.includes(token)), 'the client gets the mirror\'s token, not the source\'s');
    const response = await rawGet(layerUrl(plain), { headers: { authorization: granted } });
    assert.equal(response.status, 200);
    assert.ok(response.body.equals(plain.layer));
    const layerRequest = source.requests.find((request) => request.path === `/v1/images/${plain.id}/layer`);
    assert.ok(layerRequest !== undefined && source.issuedTokens.map((token) => `Token ${token}`).includes(String(layerRequest.headers.authorization)));
    assert.ok((await client.ping()).status === 200);
  });

  it('renews its source token on a 401 from the registry', async () => {
    // The source forgets every token it granted: the mirror's next registry request is refused once.
    source.issuedTokens.splice(0);
    const indexRequests = source.count('GET', /\/images$/);
    const tags = await v1Request(`${mirror.url}/v1/repositories/faults/app/tags`);
    assert.equal(tags.status, 200);
    assert.deepEqual(JSON.parse(tags.body.toString()), { latest: leak.id });
    assert.equal(source.count('GET', /\/tags$/), 2, 'refused, then accepted with the renewed token');
    assert.equal(source.count('GET', /\/images$/), indexRequests + 1, 'one token renewal at the index');
    assert.equal(source.issuedTokens.length, 1);
  });

  it("never sends the client's credentials or cookies, nor passes back the source's cookies and private headers", async () => {
    await openPull();
    const clientHeaders = { authorization: 'Basic Y2xpZW50OnNlY3JldA==', cookie: 'client-session=very-secret', 'x-docker-token': 'true' };
    const answers = [
      await rawGet(`${mirror.url}/v1/images/${leak.id}/json`, { headers: clientHeaders }),
      await rawGet(`${mirror.url}/v1/images/${leak.id}/ancestry`, { headers: clientHeaders }),
      await rawGet(layerUrl(leak), { headers: clientHeaders }),
      await rawGet(`${mirror.url}/v1/repositories/faults/app/json`, { headers: clientHeaders }),
      await rawGet(`${mirror.url}/v1/search?q=x`, { headers: clientHeaders }),
    ];
    for (const answer of answers) {
      assert.equal(answer.status, 200);
      for (const name of Object.keys(SOURCE_ONLY_HEADERS)) assert.equal(answer.headers[name], undefined, `${name} is not passed back`);
    }
    for (const request of source.requests) {
      assert.equal(request.headers.cookie, undefined, `no cookie to ${request.path}`);
      assert.notEqual(request.headers.authorization, clientHeaders.authorization, `no client credentials to ${request.path}`);
    }
  });

  it('leaves nothing cached when the source cuts a layer mid-stream', async () => {
    await openPull();
    const response = await rawGet(layerUrl(cut));
    assert.ok(response.status === 502 || !response.complete, `the client sees a failure, never a short body as whole: ${response.status} ${String(response.complete)} ${response.body.length} ${response.body.toString().slice(0, 200)}`);
    assert.ok(response.body.length < cut.layer.length);
    await assertNotCached(mirror, cut.id);
    source.setLayerMode(cut.id, 'ok');
    const recovered = await rawGet(layerUrl(cut));
    assert.equal(recovered.status, 200);
    assert.ok(recovered.complete && recovered.body.equals(cut.layer));
    await waitUntil('the recovered layer is cached', () => fileExists(layerFile(mirror, cut.id)));
  });

  it('leaves nothing cached when the source lies about the size or the bytes', async () => {
    await openPull();
    const announced = await rawGet(layerUrl(lying));
    assert.equal(announced.status, 502, 'Content-Length against X-Docker-Size: refused before any byte');
    assert.deepEqual(JSON.parse(announced.body.toString()), { error: `source registry sent a layer of ${lying.layer.length} bytes, not the ${lying.layer.length + 10} it announced` });
    await assertNotCached(mirror, lying.id);
    for (const image of [lyingChunked, wrong]) {
      const response = await rawGet(layerUrl(image));
      assert.ok(response.status === 502 || !response.complete, 'the client sees a failure');
      await assertNotCached(mirror, image.id);
    }
    // A source that keeps lying is never believed.
    assert.equal((await rawGet(layerUrl(lying))).status, 502);
    await assertNotCached(mirror, lying.id);
  });

  it('reports a failing or refusing source as 502, not 404', async () => {
    await openPull();
    for (const image of [failing, refused]) {
      const response = await rawGet(layerUrl(image));
      assert.equal(response.status, 502);
      const body = JSON.parse(response.body.toString()) as { error: string };
      assert.match(body.error, /^source registry answered (500|401)$/);
      assert.ok(!response.body.toString().includes('10.1.2.3'), 'no source address');
    }
    const unknown = await rawGet(`${mirror.url}/v1/images/${'1'.repeat(64)}/json`);
    assert.equal(unknown.status, 404, 'a 404 at the source is a 404');
    assert.deepEqual(JSON.parse(unknown.body.toString()), { error: 'Image not found' });
  });
});

describe('v1 mirror with a separate source index', { timeout: 120_000 }, () => {
  let configDir: string;
  let dataDir: string;
  let registry: FakeV1Source;
  let index: FakeV1Source;
  let mirror: Regmirror;
  // The first is in no chain: a layer nobody has pulled yet.
  const [unpulled] = makeV1Chain('accel', [{ size: 20 * KiB, seed: 54 }]) as [V1Image];
  const images = [unpulled, ...makeV1Chain('indexed', [{ size: 10 * KiB, seed: 51 }])];

  before(async () => {
    configDir = await makeTempDir('regmirror-v1-index-');
    registry = await startFakeV1Source({ repository: 'faults/app', images });
    index = await startFakeV1Source({
      repository: 'faults/app',
      images,
      searchResults: [
        { name: 'team/app', description: 'from the index' },
        { name: 'library/busybox', description: 'busybox' },
      ],
    });
    dataDir = await makeTempDir('regmirror-v1-index-data-');
    await pushedBeforeMirroring(dataDir, [
      ['team/app', 'latest', makeV1Chain('local-app', [{ size: 1000, seed: 52 }])],
      ['local/only', 'latest', makeV1Chain('local-only', [{ size: 1000, seed: 53 }])],
    ]);
    mirror = await startV1Mirror(
      configDir,
      'indexed',
      `  nginxXAccelRedirect: /_v1data\n  mirroring:\n    source: ${registry.url}\n    sourceIndex: ${index.url}\n    tagsCacheTtl: 1s\n`,
      dataDir,
    );
  });

  after(async () => {
    await mirror?.destroy();
    await registry?.stop();
    await index?.stop();
    if (configDir !== undefined) await removeDir(configDir);
    if (dataDir !== undefined) await removeDir(dataDir);
  });

  it('merges the index\'s search results into its own: same names replaced, others appended', async () => {
    const response = await v1Request(`${mirror.url}/v1/search?q=a`);
    assert.equal(response.status, 200);
    assert.deepEqual(JSON.parse(response.body.toString()), {
      query: 'a',
      num_results: 3,
      results: [
        { name: 'local/only', description: '' },
        { name: 'team/app', description: 'from the index' },
        { name: 'library/busybox', description: 'busybox' },
      ],
    });
    assert.equal(index.count('GET', /^\/v1\/search\?q=a$/), 1);
    assert.equal(registry.count('GET', /^\/v1\/search/), 0);
  });

  it('asks the index, not the registry, for image lists, and names itself as the endpoint', async () => {
    const indexLists = (): number => index.count('GET', /^\/v1\/repositories\/faults\/app\/images$/);
    const listsBefore = indexLists();
    const layersBefore = registry.count('GET', /\/layer$/);
    const response = await v1Request(`${mirror.url}/v1/repositories/faults/app/images`, { headers: { 'x-docker-token': 'true' } });
    assert.equal(response.status, 200);
    assert.equal(response.headers['x-docker-endpoints'], mirror.host);
    assert.equal(indexLists(), listsBefore + 1);
    assert.equal(registry.count('GET', /\/images$/), 0);
    const pulled = await new V1Client(mirror.url).pull('faults/app', 'latest');
    assert.ok(pulled.images[0]?.layer.equals(images[1]?.layer ?? Buffer.alloc(1)));
    assert.equal(registry.count('GET', /\/layer$/), layersBefore + 1, 'the layer from the registry');
    assert.equal(index.count('GET', /\/layer$/), 0, 'no layer from the index');
  });

  it('hands a cached layer to nginx with X-Accel-Redirect, and streams a miss itself', async () => {
    const missed = await v1Request(`${mirror.url}/v1/images/${unpulled.id}/layer`);
    assert.equal(missed.status, 200);
    assert.equal(missed.headers['x-accel-redirect'], undefined, 'never for a layer that is not here yet');
    assert.ok(missed.body.equals(unpulled.layer), 'the miss streams from the fill');
    await waitUntil('the layer is cached', () => fileExists(layerFile(mirror, unpulled.id)));
    const offloaded = await v1Request(`${mirror.url}/v1/images/${unpulled.id}/layer`);
    assert.equal(offloaded.status, 200);
    assert.equal(offloaded.headers['x-accel-redirect'], `/_v1data/v1/images/${unpulled.id}/layer`);
    assert.equal(offloaded.body.length, 0, 'nginx sends the bytes');
  });
});
