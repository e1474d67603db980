// One plain regmirror as a Docker Registry v1: a Docker 1.x push of a 3-image chain (one 0-byte layer) and
// its pull; docker-registry 0.9's layout on disk; and every error of the push flow, names, tags, ranges,
// bodies, properties, repository deletion, the standalone index and search, in docker-registry's shape.

import assert from 'node:assert/strict';
import { readdir, readFile, stat } from 'node:fs/promises';
import { connect } from 'node:net';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { startRegmirror, type Regmirror } from './support/regmirror.js';
import { DOCKER_USER_AGENT, makeV1Chain, V1Client, v1Request, type V1Image, type V1Response } from './support/v1-client.js';

const KiB = 1024;
const ERROR_HEADERS = { 'cache-control': 'no-cache', expires: '-1', pragma: 'no-cache', 'content-type': 'application/json' };

function json(response: V1Response): unknown {
  return JSON.parse(response.body.toString('utf8')) as unknown;
}

/** Asserts a docker-registry error: the status, `{"error": message}` and its headers. */
function assertV1Error(response: V1Response, status: number, message: string, what: string): void {
  assert.equal(response.status, status, `${what}: status (${response.body.toString('utf8')})`);
  assert.deepEqual(json(response), { error: message }, `${what}: body`);
  for (const [name, value] of Object.entries(ERROR_HEADERS)) assert.equal(response.headers[name], value, `${what}: ${name}`);
}

/** Sends a request's head only and returns the raw answer (the server must answer without the body). */
function headersOnly(port: number, head: string): Promise<string> {
  return new Promise<string>((resolve, reject) => {
    const socket = connect({ host: '127.0.0.1', port });
    const chunks: Buffer[] = [];
    const timer = setTimeout(() => socket.destroy(new Error('no answer within 10 s')), 10_000);
    const finish = (): void => {
      clearTimeout(timer);
      socket.destroy();
      resolve(Buffer.concat(chunks).toString('utf8'));
    };
    socket.on('data', (chunk: Buffer) => {
      chunks.push(chunk);
      const text = Buffer.concat(chunks).toString('utf8');
      const length = /content-length: (\d+)/i.exec(text)?.[1];
      const bodyAt = text.indexOf('\r\n\r\n');
      if (length !== undefined && bodyAt !== -1 && Buffer.byteLength(text.slice(bodyAt + 4)) >= Number(length)) finish();
    });
    socket.once('end', finish);
    socket.once('error', (error) => {
      clearTimeout(timer);
      reject(error);
    });
    socket.write(head);
  });
}

describe('v1 registry: one plain regmirror', { timeout: 120_000 }, () => {
  let registry: Regmirror;
  let client: V1Client;
  // 300 KiB, 0 bytes, 200 KiB: a real chain with an empty layer in the middle.
  const chain = makeV1Chain('plain', [
    { size: 300 * KiB, seed: 11 },
    { size: 0, seed: 12 },
    { size: 200 * KiB + 3, seed: 13 },
  ]);
  const [base, empty, top] = chain as [V1Image, V1Image, V1Image];
  const url = (suffix: string): string => `${registry.url}${suffix}`;
  const get = (suffix: string, headers: Record<string, string> = {}): Promise<V1Response> => v1Request(url(suffix), { headers });
  const put = (suffix: string, body: Buffer, headers: Record<string, string> = {}): Promise<V1Response> =>
    v1Request(url(suffix), { method: 'PUT', body, headers: { 'content-type': 'application/json', ...headers } });

  before(async () => {
    registry = await startRegmirror();
    client = new V1Client(registry.url);
    await client.push('team/app', 'latest', chain);
  });

  after(async () => {
    await registry?.destroy();
  });

  it('answers _ping on both paths as a standalone registry', async () => {
    for (const suffix of ['/_ping', '/v1/_ping']) {
      const response = await get(suffix);
      assert.equal(response.status, 200);
      assert.deepEqual(json(response), {});
      assert.equal(response.headers['x-docker-registry-standalone'], 'True');
      assert.equal(response.headers['x-docker-registry-version'], '0.9.1');
    }
  });

  it('serves the pushed chain back to a Docker 1.x pull, byte for byte', async () => {
    const pulled = await client.pull('team/app', 'latest');
    assert.deepEqual(pulled.tags, { latest: top.id });
    assert.deepEqual(pulled.ancestry, [top.id, empty.id, base.id]);
    assert.equal(pulled.indexHeaders['x-docker-endpoints'], registry.host);
    assert.match(String(pulled.indexHeaders['x-docker-token']), /^Token signature=[A-Z0-9]{16},repository="team\/app",access=read$/);
    assert.equal(pulled.indexHeaders['www-authenticate'], pulled.indexHeaders['x-docker-token']);
    assert.equal(pulled.images.length, 3);
    for (const [index, image] of chain.entries()) {
      const got = pulled.images[index];
      assert.ok(got !== undefined);
      assert.equal(got.id, image.id);
      assert.ok(got.json.equals(image.json), `json of ${index} byte for byte`);
      assert.ok(got.layer.equals(image.layer), `layer of ${index} byte for byte`);
      assert.equal(got.jsonHeaders['x-docker-size'], String(image.layer.length));
      assert.equal(got.jsonHeaders['x-docker-checksum-payload'], image.checksum);
      assert.equal(got.jsonHeaders['cache-control'], 'public, max-age=31536000');
      assert.equal(got.jsonHeaders['last-modified'], 'Thu, 01 Jan 1970 00:00:00 GMT');
    }
  });

  it("keeps docker-registry 0.9's layout on disk, with nothing in progress or temporary", async () => {
    const v1 = path.join(registry.dataDir, 'v1');
    for (const image of chain) {
      assert.deepEqual((await readdir(path.join(v1, 'images', image.id))).sort(), ['_checksum', 'ancestry', 'json', 'layer']);
      assert.ok((await readFile(path.join(v1, 'images', image.id, 'json'))).equals(image.json));
      assert.equal((await readFile(path.join(v1, 'images', image.id, '_checksum'), 'utf8')), `["${image.checksum}"]`);
    }
    assert.equal(await readFile(path.join(v1, 'images', top.id, 'ancestry'), 'utf8'), `["${top.id}", "${empty.id}", "${base.id}"]`);
    assert.equal((await stat(path.join(v1, 'images', empty.id, 'layer'))).size, 0);
    const repository = path.join(v1, 'repositories', 'team', 'app');
    assert.deepEqual((await readdir(repository)).sort(), ['_index_images', 'json', 'tag_latest', 'taglatest_json']);
    assert.equal(await readFile(path.join(repository, 'tag_latest'), 'utf8'), top.id);
    assert.deepEqual(JSON.parse(await readFile(path.join(repository, '_index_images'), 'utf8')), chain.map((image) => ({ id: image.id, checksum: image.checksum })));
    assert.deepEqual(await readdir(path.join(registry.dataDir, 'tmp')), []);
  });

  it('serves tags, a tag, the tag json and the repository json from the pusher\'s User-Agent', async () => {
    assert.deepEqual(json(await get('/v1/repositories/team/app/tags')), { latest: top.id });
    const tag = await get('/v1/repositories/team/app/tags/latest');
    assert.equal(tag.body.toString(), `"${top.id}"`);
    assert.equal(tag.headers['cache-control'], 'no-cache');
    for (const suffix of ['/v1/repositories/team/app/tags/latest/json', '/v1/repositories/team/app/json']) {
      const facts = json(await get(suffix)) as Record<string, unknown>;
      assert.equal(facts.arch, 'amd64', suffix);
      assert.equal(facts.os, 'linux');
      assert.equal(facts.docker_version, '1.3.2');
      assert.equal(facts.docker_go_version, 'go1.3.3');
      assert.equal(facts.kernel, '3.16.0-4-amd64');
      assert.equal(typeof facts.last_update, 'number');
    }
    // A repository nobody described gets docker-registry's defaults.
    assert.deepEqual(json(await get('/v1/repositories/nobody/here/json')), {
      arch: 'amd64',
      docker_go_version: null,
      docker_version: null,
      kernel: null,
      last_update: null,
      os: 'linux',
    });
    assert.equal(DOCKER_USER_AGENT.includes('docker/1.3.2'), true);
  });

  it('serves layers with Accept-Ranges, open, closed and suffix ranges, and 416 past the end', async () => {
    const layerUrl = `/v1/images/${base.id}/layer`;
    const size = base.layer.length;
    const whole = await get(layerUrl);
    assert.equal(whole.status, 200);
    assert.equal(whole.headers['accept-ranges'], 'bytes');
    assert.equal(whole.headers['content-length'], String(size));
    assert.equal(whole.headers['content-type'], 'application/octet-stream');
    const cases: Array<[string, number, number]> = [
      ['bytes=0-9', 0, 9],
      ['bytes=100-', 100, size - 1],
      ['bytes=0-', 0, size - 1],
      [`bytes=${size - 1}-`, size - 1, size - 1],
      ['bytes=5-5', 5, 5],
      [`bytes=10-${size + 100}`, 10, size - 1],
      ['bytes=-10', size - 10, size - 1],
    ];
    for (const [range, start, end] of cases) {
      const response = await get(layerUrl, { range });
      assert.equal(response.status, 206, range);
      assert.equal(response.headers['content-range'], `bytes ${start}-${end}/${size}`, range);
      assert.equal(response.headers['content-length'], String(end - start + 1), range);
      assert.ok(response.body.equals(base.layer.subarray(start, end + 1)), `${range}: bytes`);
    }
    const past = await get(layerUrl, { range: `bytes=${size}-` });
    assertV1Error(past, 416, 'Requested range not satisfiable', 'range past the end');
    assert.equal(past.headers['content-range'], `bytes */${size}`);
    // Malformed or multiple ranges are ignored: the whole layer, as HTTP allows.
    for (const range of ['bytes=x-', 'items=0-1', 'bytes=0-1,5-6', 'bytes=9-3']) {
      const response = await get(layerUrl, { range });
      assert.equal(response.status, 200, range);
      assert.ok(response.body.equals(base.layer), range);
    }
  });

  it('serves a 0-byte layer (docker-registry answered 416)', async () => {
    const response = await get(`/v1/images/${empty.id}/layer`);
    assert.equal(response.status, 200);
    assert.equal(response.headers['content-length'], '0');
    assert.equal(response.body.length, 0);
    assertV1Error(await get(`/v1/images/${empty.id}/layer`, { range: 'bytes=0-' }), 416, 'Requested range not satisfiable', 'a range of nothing');
  });

  it('answers a conditional GET with 304 only for an image that exists', async () => {
    const since = { 'if-modified-since': 'Thu, 01 Jan 1970 00:00:00 GMT' };
    for (const resource of ['json', 'layer', 'ancestry']) {
      const response = await get(`/v1/images/${base.id}/${resource}`, since);
      assert.equal(response.status, 304, resource);
      assert.equal(response.body.length, 0);
      assert.equal(response.headers['cache-control'], 'public, max-age=31536000');
    }
    const missing = 'f'.repeat(64);
    for (const resource of ['json', 'layer', 'ancestry']) {
      assertV1Error(await get(`/v1/images/${missing}/${resource}`, since), 404, 'Image not found', `conditional ${resource} of a missing image`);
    }
  });

  it('follows the push flow: in progress until the checksum, then complete; each misstep refused', async () => {
    const [image] = makeV1Chain('flow', [{ size: 1000, seed: 21 }]) as [V1Image];
    const id = image.id;
    assertV1Error(await put(`/v1/images/${id}/layer`, image.layer), 404, 'Image not found', 'layer before json');
    assertV1Error(await put(`/v1/images/${id}/checksum`, Buffer.alloc(0), { 'x-docker-checksum-payload': image.checksum }), 404, 'Image not found', 'checksum before json');
    assert.equal((await put(`/v1/images/${id}/json`, image.json)).status, 200);
    for (const resource of ['json', 'layer', 'ancestry']) {
      assertV1Error(await get(`/v1/images/${id}/${resource}`), 400, 'Image is being uploaded, retry later', `${resource} before the checksum`);
    }
    assertV1Error(await put(`/v1/images/${id}/checksum`, Buffer.alloc(0), { 'x-docker-checksum-payload': image.checksum }), 400, 'Image layer not uploaded yet', 'checksum before layer');
    assert.equal((await put(`/v1/images/${id}/layer`, image.layer, { 'content-type': 'application/octet-stream' })).status, 200);
    assertV1Error(await put(`/v1/images/${id}/checksum`, Buffer.alloc(0)), 412, "Missing Image's checksum", 'no checksum header');
    assertV1Error(await put(`/v1/images/${id}/checksum`, Buffer.alloc(0), { 'x-docker-checksum-payload': '' }), 400, "Missing Image's checksum", 'an empty checksum');
    assertV1Error(await put(`/v1/images/${id}/checksum`, Buffer.alloc(0), { 'x-docker-checksum-payload': `sha256:${'0'.repeat(64)}` }), 400, 'Checksum mismatch', 'a wrong checksum');
    assertV1Error(await get(`/v1/images/${id}/json`), 400, 'Image is being uploaded, retry later', 'json after a wrong checksum');
    assert.equal((await put(`/v1/images/${id}/checksum`, Buffer.alloc(0), { 'x-docker-checksum-payload': image.checksum })).status, 200);
    assert.ok((await get(`/v1/images/${id}/json`)).body.equals(image.json));
    assertV1Error(await put(`/v1/images/${id}/checksum`, Buffer.alloc(0), { 'x-docker-checksum-payload': image.checksum }), 409, 'Cannot set this image checksum', 'checksum twice');
    assertV1Error(await put(`/v1/images/${id}/json`, image.json), 409, 'Image already exists', 'json twice');
    assertV1Error(await put(`/v1/images/${id}/layer`, image.layer), 409, 'Image already exists', 'layer twice');
  });

  it('refuses bad image json with docker-registry\'s errors', async () => {
    const id = 'e'.repeat(64);
    const cases: Array<[string, string]> = [
      ['not json', 'Invalid JSON'],
      ['{}', 'Invalid JSON'],
      ['[]', 'Invalid JSON'],
      ['{"parent": "x"}', "Missing key `id' in JSON"],
      [`{"id": "${'d'.repeat(64)}"}`, 'JSON data contains invalid id'],
      [`{"id": "${id}", "parent": "${'c'.repeat(64)}"}`, 'Image depends on a non existing parent'],
    ];
    for (const [body, message] of cases) assertV1Error(await put(`/v1/images/${id}/json`, Buffer.from(body)), 400, message, body);
    assert.equal((await get(`/v1/images/${id}/json`)).status, 404, 'nothing was stored');
  });

  it('refuses bad image ids, tags and repository names', async () => {
    for (const bad of ['xyz', 'A'.repeat(64), 'a'.repeat(63), '..']) {
      for (const resource of ['json', 'layer', 'ancestry']) assertV1Error(await get(`/v1/images/${bad}/${resource}`), 404, 'Invalid image ID', `GET ${bad}/${resource}`);
      assertV1Error(await put(`/v1/images/${bad}/json`, Buffer.from('{}')), 404, 'Invalid image ID', `PUT ${bad}/json`);
    }
    const quoted = Buffer.from(JSON.stringify(top.id));
    for (const tag of ['.hidden', '-x', 'a'.repeat(129)]) {
      assertV1Error(await put(`/v1/repositories/team/app/tags/${tag}`, quoted), 400, 'Invalid tag name (must match ^[\\w][\\w.-]{0,127}$)', `PUT tag ${tag}`);
      assertV1Error(await get(`/v1/repositories/team/app/tags/${tag}`), 404, 'Tag not found', `GET tag ${tag}`);
    }
    assertV1Error(await put('/v1/repositories/team/app/tags/v2', Buffer.from('not json')), 400, 'Invalid data', 'a tag body that is not JSON');
    assertV1Error(await put('/v1/repositories/team/app/tags/v2', Buffer.from('{"id": 1}')), 400, 'Invalid data', 'a tag body that is not a string');
    assertV1Error(await put('/v1/repositories/team/app/tags/v2', Buffer.from(JSON.stringify('b'.repeat(64)))), 404, 'Image not found', 'a tag of an unknown image');
    assertV1Error(await get('/v1/repositories/team/app/tags/nope'), 404, 'Tag not found', 'an unknown tag');
    assertV1Error(await get('/v1/repositories/team/nothing/tags'), 404, 'Repository not found', 'an unknown repository');
    assertV1Error(await get('/v1/repositories/Team/app/tags'), 400, 'Invalid namespace name (Team), only [a-z0-9-_] are allowed, size between 2 and 255', 'an upper-case namespace');
    assertV1Error(await get('/v1/repositories/team/../tags'), 400, 'Invalid repository name (..), only [a-z0-9-_.] are allowed', 'a dot-dot repository');
  });

  it('refuses bad bodies and unknown endpoints in the v1 shape', async () => {
    // Declared too large: refused before a byte of the body is read (sent here is none).
    const oversized = await headersOnly(registry.port, `PUT /v1/images/${'9'.repeat(64)}/json HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: ${8 * 1024 * 1024 + 1}\r\n\r\n`);
    assert.match(oversized, /^HTTP\/1\.1 413 /);
    assert.ok(oversized.endsWith('{"error": "Request body too large"}'), oversized);
    assertV1Error(await put('/v1/repositories/team/app/', Buffer.from('nope')), 400, 'Error Decoding JSON', 'an image list that is not JSON');
    assertV1Error(await put('/v1/repositories/team/app/', Buffer.from('{"id": "x"}')), 400, 'Invalid data', 'an image list that is not a list');
    assertV1Error(await put(`/v1/images/${'9'.repeat(64)}/json`, Buffer.from('{}'), { 'content-type': ';;' }), 400, 'Bad request', 'a malformed content type');
    assertV1Error(await get('/v1/nothing'), 404, 'Not found', 'an unknown endpoint');
    assertV1Error(await get(`/v1/images/${base.id}/files`), 404, 'Not found', 'an endpoint not served');
    assertV1Error(await v1Request(url(`/v1/images/${base.id}/json`), { method: 'POST', body: Buffer.from('{}') }), 405, 'Method not allowed', 'POST on an image');
    assertV1Error(await v1Request(url('/v1/search'), { method: 'DELETE' }), 405, 'Method not allowed', 'DELETE on search');
  });

  it('records properties: public by default, private once set', async () => {
    assert.deepEqual(json(await get('/v1/repositories/team/app/properties')), { access: 'public' });
    assert.equal((await put('/v1/repositories/team/app/properties', Buffer.from('{"access": "private"}'))).status, 200);
    assert.deepEqual(json(await get('/v1/repositories/team/app/properties')), { access: 'private' });
    assert.equal((await put('/v1/repositories/team/app/properties', Buffer.from('{"access": "public"}'))).status, 200);
    assert.deepEqual(json(await get('/v1/repositories/team/app/properties')), { access: 'public' });
    assertV1Error(await put('/v1/repositories/team/app/properties', Buffer.from('{"access": "secret"}')), 400, 'Invalid data', 'an unknown access');
    assertV1Error(await put('/v1/repositories/team/app/properties', Buffer.from('[]')), 400, 'Invalid data', 'properties that are not an object');
  });

  it('serves the standalone index: users, tokens only when asked, auth', async () => {
    const users = await get('/v1/users/');
    assert.equal(users.status, 200);
    assert.equal(users.body.toString(), '"OK"');
    assert.equal((await v1Request(url('/v1/users'), { method: 'POST', body: Buffer.from('{"username": "u"}') })).status, 201);
    assertV1Error(await v1Request(url('/v1/users'), { method: 'POST', body: Buffer.from('{') }), 400, 'Error Decoding JSON', 'a user that is not JSON');
    assert.equal((await put('/v1/users/alice/', Buffer.from('{}'))).status, 204);
    assert.equal((await put('/v1/repositories/team/app/auth', Buffer.from('{}'))).body.toString(), '"OK"');
    const untokened = await get('/v1/repositories/team/app/images');
    assert.equal(untokened.status, 200);
    assert.equal(untokened.headers['x-docker-endpoints'], registry.host);
    assert.equal(untokened.headers['x-docker-token'], undefined, 'no token unless asked');
    const first = await get('/v1/repositories/team/app/images', { 'x-docker-token': 'true' });
    const second = await get('/v1/repositories/team/app/images', { 'x-docker-token': 'true' });
    assert.notEqual(first.headers['x-docker-token'], second.headers['x-docker-token'], 'a fresh random token each time');
    const deleted = await v1Request(url('/v1/repositories/team/app/images'), { method: 'DELETE', headers: { 'x-docker-token': 'true' } });
    assert.equal(deleted.status, 204);
    assert.match(String(deleted.headers['x-docker-token']), /access=delete$/);
    assertV1Error(await get('/v1/repositories/team/none/images'), 404, 'images not found', 'the image list of an unknown repository');
  });

  it('searches local repositories', async () => {
    await client.push('library/busybox', 'latest', chain);
    const all = json(await get('/v1/search')) as { query: string; num_results: number; results: Array<{ name: string }> };
    assert.equal(all.query, '');
    assert.deepEqual(all.results.map((result) => result.name), ['library/busybox', 'team/app']);
    assert.equal(all.num_results, 2);
    assert.deepEqual(json(await get('/v1/search?q=APP')), { query: 'APP', num_results: 1, results: [{ name: 'team/app', description: '' }] });
    assert.deepEqual(json(await get('/v1/search?q=nothing')), { query: 'nothing', num_results: 0, results: [] });
  });

  it('deletes a tag, then the repository, keeping its images', async () => {
    await client.push('team/gone', 'v1', chain.slice(0, 1));
    assert.equal((await put('/v1/repositories/team/gone/tags/v2', Buffer.from(JSON.stringify(base.id)))).status, 200);
    assert.equal((await v1Request(url('/v1/repositories/team/gone/tags/v2'), { method: 'DELETE' })).status, 200);
    assertV1Error(await get('/v1/repositories/team/gone/tags/v2'), 404, 'Tag not found', 'a deleted tag');
    assertV1Error(await v1Request(url('/v1/repositories/team/gone/tags/v2'), { method: 'DELETE' }), 404, 'Tag not found', 'a tag deleted twice');
    const removed = await v1Request(url('/v1/repositories/team/gone/'), { method: 'DELETE' });
    assert.equal(removed.status, 200);
    assert.equal(removed.body.toString(), 'true');
    assertV1Error(await get('/v1/repositories/team/gone/tags'), 404, 'Repository not found', 'tags of a deleted repository');
    assertV1Error(await v1Request(url('/v1/repositories/team/gone/tags'), { method: 'DELETE' }), 404, 'Repository not found', 'a repository deleted twice');
    assert.ok((await get(`/v1/images/${base.id}/json`)).body.equals(base.json), 'images stay');
    const names = (json(await get('/v1/search')) as { results: Array<{ name: string }> }).results.map((result) => result.name);
    assert.ok(!names.includes('team/gone'), 'no longer found by search');
  });

  it('logs each v1 request with its cache outcome', async () => {
    await registry.settle();
    const logged = registry.accessEntries().length;
    const counted = await registry.metricValue('regmirror_http_requests_total', { kind: 'v1-layer', cache: 'hit' });
    for (const suffix of [`/v1/images/${base.id}/layer`, `/v1/images/${top.id}/layer`]) assert.equal((await get(suffix)).status, 200);
    await registry.settle();
    const entries = registry.accessEntries().slice(logged).filter((entry) => entry.path.startsWith('/v1/'));
    assert.deepEqual(
      entries.map((entry) => [entry.method, entry.path, entry.status, entry.cache]),
      [
        ['GET', `/v1/images/${base.id}/layer`, 200, 'hit'],
        ['GET', `/v1/images/${top.id}/layer`, 200, 'hit'],
      ],
    );
    assert.deepEqual(entries.map((entry) => entry.bytes), [base.layer.length, top.layer.length]);
    assert.equal(await registry.metricValue('regmirror_http_requests_total', { kind: 'v1-layer', cache: 'hit' }), counted + 2);
  });
});
