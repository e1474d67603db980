// An upstream that is broken or hostile, each way issue 9 found one (the holes are numbered as there): it may not
// point the mirror at the inside of its network (9), wedge its authentication (3), close it for years (4), hold a
// manifest for ever (5), grow it with a huge token (6), smuggle bytes onto a client's connection (7), leak its
// addresses (11), or make a client's loop burn its rate limit (14). Each scenario runs a real regmirror against a
// scripted upstream on loopback and proves what reached whom by counting requests.

import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import { connect } from 'node:net';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { rawGet, waitUntil } from './support/fault-upstream.js';
import { deterministicBytes, sha256Digest } from './support/images.js';
import { freePort } from './support/ports.js';
import { startRegmirror, type Regmirror } from './support/regmirror.js';
import { sendError, startScriptedUpstream, type ScriptedUpstream } from './support/scripted-upstream.js';
import { makeTempDir, removeDir } from './support/temp.js';

const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';
const blob = deterministicBytes(64 * 1024, 901);
const digest = sha256Digest(blob);
const manifest = Buffer.from(
  JSON.stringify({
    schemaVersion: 2,
    mediaType: OCI_MANIFEST,
    config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest, size: blob.length },
    layers: [],
  }),
);
const manifestDigest = sha256Digest(manifest);

let configDir: string;
const started: Array<{ destroy?: () => Promise<void>; stop?: () => Promise<void> }> = [];

before(async () => {
  configDir = await makeTempDir('regmirror-hostile-');
});

after(async () => {
  for (const thing of started.reverse()) await (thing.destroy ?? thing.stop)?.();
  await removeDir(configDir);
});

async function mirrorWith(yaml: string): Promise<Regmirror> {
  const configFile = path.join(configDir, `config-${started.length}.yaml`);
  await writeFile(configFile, yaml);
  const mirror = await startRegmirror({ configFile });
  started.push(mirror);
  return mirror;
}

async function upstreamWith(handler: Parameters<typeof startScriptedUpstream>[0]): Promise<ScriptedUpstream> {
  const upstream = await startScriptedUpstream(handler);
  started.push(upstream);
  return upstream;
}

function sendManifest(response: import('node:http').ServerResponse, method: string | undefined): void {
  response.writeHead(200, { 'content-type': OCI_MANIFEST, 'content-length': String(manifest.length), 'docker-content-digest': manifestDigest });
  response.end(method === 'HEAD' ? undefined : manifest);
}

function errorsOf(body: Buffer): Array<{ code: string; message: string }> {
  const parsed = JSON.parse(body.toString('utf8')) as { errors: Array<{ code: string; message: string }> };
  assert.ok(Array.isArray(parsed.errors) && parsed.errors.length > 0, `an OCI error body: ${body.toString('utf8')}`);
  return parsed.errors;
}

describe('hole 9: redirects and token realms into the network', { timeout: 60_000 }, () => {
  it('refuses a blob redirect to an internal host that is not the upstream, and follows it when trusted', async () => {
    const internal = await upstreamWith((_request, response) => {
      response.writeHead(200, { 'content-length': String(blob.length) });
      response.end(blob);
    });
    const upstream = await upstreamWith((request, response) => {
      if (request.url?.includes('/blobs/')) {
        // localhost is loopback, and not the host the upstream was configured with (127.0.0.1).
        response.writeHead(307, { location: `http://localhost:${internal.port}/secret`, 'content-length': '0' });
        response.end();
        return;
      }
      sendError(response, 404, 'NAME_UNKNOWN');
    });
    const refusing = await mirrorWith(`upstreams:\n  - registry: hostile.test\n    url: ${upstream.url}\n`);
    const refused = await rawGet(`${refusing.url}/v2/team/app/blobs/${digest}`);
    assert.equal(refused.status, 502);
    const [error] = errorsOf(refused.body);
    assert.equal(error?.code, 'UPSTREAM_UNAVAILABLE');
    assert.match(error?.message ?? '', /internal network/);
    assert.doesNotMatch(refused.body.toString(), new RegExp(`localhost|127\\.0\\.0\\.1|${internal.port}`), 'the address is not named');
    assert.equal(internal.requests.length, 0, 'nothing was asked of the internal host');

    const trusting = await mirrorWith(`upstreams:\n  - registry: hostile.test\n    url: ${upstream.url}\n    trustedHosts: [localhost]\n`);
    const followed = await rawGet(`${trusting.url}/v2/team/app/blobs/${digest}`);
    assert.equal(followed.status, 200);
    assert.ok(followed.complete && followed.body.equals(blob), 'the trusted host served the blob');
    assert.equal(internal.count('GET', /^\/secret$/), 1);
  });

  it('never asks (nor sends credentials to) a token realm on an internal host other than the upstream', async () => {
    const tokens = await upstreamWith((_request, response) => {
      const body = JSON.stringify({ token: 'internal-token', expires_in: 300 });
      response.writeHead(200, { 'content-type': 'application/json', 'content-length': String(body.length) });
      response.end(body);
    });
    const upstream = await upstreamWith((request, response) => {
      if (request.headers.authorization !== 'Bearer internal-token') {
        sendError(response, 401, 'UNAUTHORIZED', { 'www-authenticate': `Bearer realm="https://localhost:${tokens.port}/token",service="hostile"` });
        return;
      }
      sendManifest(response, request.method);
    });
    const refusing = await mirrorWith(`upstreams:\n  - registry: hostile.test\n    url: ${upstream.url}\n`);
    const refused = await rawGet(`${refusing.url}/v2/team/app/manifests/v1`);
    assert.equal(refused.status, 502);
    assert.match(errorsOf(refused.body)[0]?.message ?? '', /internal network/);
    assert.equal(tokens.requests.length, 0, 'the realm was never asked');
    assert.equal(upstream.requests.filter((request) => request.headers.authorization !== undefined).length, 0, 'no token reached the upstream');
  });
});

describe('hole 3: an unusable challenge is not kept', { timeout: 60_000 }, () => {
  it('answers the repository that sent it 502, and every other repository keeps working', async () => {
    const upstream = await upstreamWith((request, response) => {
      if (request.url?.startsWith('/v2/bad/')) {
        // With credentials configured, a plain-http realm on another host is refused (they would travel in clear text).
        sendError(response, 401, 'UNAUTHORIZED', { 'www-authenticate': 'Bearer realm="http://collector.invalid/token",service="x"' });
        return;
      }
      sendManifest(response, request.method);
    });
    const mirror = await mirrorWith(
      `upstreams:\n  - registry: hostile.test\n    url: ${upstream.url}\n    credentials: { username: bot, password: secret }\n`,
    );
    const bad = await rawGet(`${mirror.url}/v2/bad/app/manifests/v1`);
    assert.equal(bad.status, 502);
    assert.match(errorsOf(bad.body)[0]?.message ?? '', /plain-http token realm/);
    const good = await rawGet(`${mirror.url}/v2/good/app/manifests/v1`);
    assert.equal(good.status, 200, 'another repository of the same upstream still works');
    assert.equal(upstream.count('GET', /^\/v2\/good\/app\/manifests\/v1$/), 1, 'and it was asked of the upstream');
    const again = await rawGet(`${mirror.url}/v2/bad/app/manifests/v1`);
    assert.equal(again.status, 502);
    assert.equal(upstream.count('GET', /^\/v2\/bad\/app\/manifests\/v1$/), 2, 'the refused challenge was not kept: the upstream is asked afresh');
  });
});

describe('hole 4: Retry-After is capped at circuit.backoffMax', { timeout: 60_000 }, () => {
  it('tells the client at most backoffMax, and asks the upstream again once backoffMax has passed', async () => {
    let answered429 = false;
    const upstream = await upstreamWith((request, response) => {
      if (!answered429) {
        answered429 = true;
        sendError(response, 429, 'TOOMANYREQUESTS', { 'retry-after': '99999999' });
        return;
      }
      response.writeHead(200, { 'content-length': String(blob.length) });
      response.end(request.method === 'HEAD' ? undefined : blob);
    });
    const mirror = await mirrorWith(`upstreams:\n  - registry: hostile.test\n    url: ${upstream.url}\ncircuit:\n  backoffMax: 2s\n`);
    const limited = await rawGet(`${mirror.url}/v2/team/app/blobs/${digest}`);
    assert.equal(limited.status, 429);
    assert.ok(Number(limited.headers['retry-after']) <= 2, `Retry-After ${String(limited.headers['retry-after'])} is at most backoffMax`);
    // Bounded: without the cap the circuit would stay open for three years.
    await waitUntil('a probe goes through once backoffMax has passed', async () => (await rawGet(`${mirror.url}/v2/team/app/blobs/${digest}`)).status === 200, 15_000);
    assert.equal(upstream.count('GET', /\/blobs\//), 2, 'the 429, then one probe');
  });
});

describe('hole 5: a whole manifest, tag list or token has a deadline', { timeout: 60_000 }, () => {
  it('answers 504 to every client of a dripped manifest, with one upstream GET, and serves a cached tag stale', async () => {
    let mode: 'drip' | 'ok' | 'hang' = 'drip';
    const timers = new Set<NodeJS.Timeout>();
    const upstream = await upstreamWith((request, response) => {
      if (mode === 'ok') {
        sendManifest(response, request.method);
        return;
      }
      if (mode === 'hang') return;
      // One byte every 500 ms: never idle long enough for the body-idle timeout, never done either.
      response.writeHead(200, { 'content-type': OCI_MANIFEST, 'content-length': String(manifest.length) });
      let sent = 0;
      const timer = setInterval(() => {
        if (sent < manifest.length - 1) response.write(manifest.subarray(sent, ++sent));
      }, 500);
      timers.add(timer);
      response.once('close', () => clearInterval(timer));
    });
    const mirror = await mirrorWith(
      `upstreams:\n  - registry: hostile.test\n    url: ${upstream.url}\n    tagFreshness: 1s\ntimeouts:\n  manifest: 2s\n`,
    );
    const tagUrl = `${mirror.url}/v2/team/app/manifests/v1`;
    const answers = await Promise.all([rawGet(tagUrl), rawGet(tagUrl)]);
    for (const answer of answers) {
      assert.equal(answer.status, 504);
      assert.equal(errorsOf(answer.body)[0]?.code, 'UPSTREAM_TIMEOUT');
    }
    assert.equal(upstream.count('GET', /\/manifests\/v1$/), 1, 'both clients were answered by one upstream GET');
    for (const timer of timers) clearInterval(timer);

    mode = 'ok';
    assert.equal((await rawGet(tagUrl)).status, 200);
    await new Promise((resolve) => setTimeout(resolve, 1_200));
    // Revalidation (a HEAD) now never answers: past the deadline, the cached tag is served stale.
    mode = 'hang';
    const stale = await rawGet(tagUrl);
    assert.equal(stale.status, 200);
    assert.ok(stale.body.equals(manifest));
    await mirror.settle();
    assert.equal(mirror.accessEntries().filter((entry) => entry.path === '/v2/team/app/manifests/v1').at(-1)?.cache, 'stale');
  });
});

describe('hole 6: token answers are capped', { timeout: 60_000 }, () => {
  it('refuses a token answer larger than 1 MiB with a 502', async () => {
    const upstream = await upstreamWith((request, response) => {
      if (request.url?.startsWith('/token')) {
        // Chunked, so only counting what arrives can stop it.
        response.writeHead(200, { 'content-type': 'application/json' });
        response.write('{"token": "');
        const chunk = Buffer.alloc(64 * 1024, 'a');
        let left = 48;
        const more = (): void => {
          while (left > 0) {
            left -= 1;
            if (!response.write(chunk)) {
              response.once('drain', more);
              return;
            }
          }
          response.end('"}');
        };
        more();
        return;
      }
      sendError(response, 401, 'UNAUTHORIZED', { 'www-authenticate': `Bearer realm="${upstream.url}/token",service="hostile"` });
    });
    const mirror = await mirrorWith(`upstreams:\n  - registry: hostile.test\n    url: ${upstream.url}\n`);
    const answer = await rawGet(`${mirror.url}/v2/team/app/manifests/v1`);
    assert.equal(answer.status, 502);
    assert.match(errorsOf(answer.body)[0]?.message ?? '', /larger than 1048576 bytes/);
  });
});

describe('hole 7: no byte the mirror has not verified reaches a client as a complete answer', { timeout: 60_000 }, () => {
  const smuggled = Buffer.from('0123456789HTTP/1.1 200 OK\r\nContent-Length: 9\r\nX-Smuggled: yes\r\n\r\nsmuggled!padpadpadpadpadpadpadpadpad');

  /** A raw keep-alive exchange: everything the mirror sends on the connection until it closes it or stays quiet. */
  async function rawExchange(port: number, request: string): Promise<string> {
    return new Promise((resolve) => {
      const socket = connect({ host: '127.0.0.1', port });
      const chunks: Buffer[] = [];
      let quiet: NodeJS.Timeout | undefined;
      const finish = (): void => {
        clearTimeout(quiet);
        socket.destroy();
        resolve(Buffer.concat(chunks).toString('latin1'));
      };
      socket.on('data', (chunk: Buffer) => {
        chunks.push(chunk);
        clearTimeout(quiet);
        quiet = setTimeout(finish, 2_000);
      });
      socket.once('close', finish);
      // A cut connection may arrive as a reset: what was read before it is the answer.
      socket.once('error', finish);
      socket.write(request);
      quiet = setTimeout(finish, 10_000);
    });
  }

  it('never asks the upstream for a Range: a cold range comes from the verified fill, and the connection stays in step', async () => {
    let rangesAsked = 0;
    let wholeGets = 0;
    const upstream = await upstreamWith((request, response) => {
      if (request.url?.includes('/blobs/')) {
        if (request.headers.range !== undefined) {
          // What a hostile upstream would answer to a Range: a 206 that smuggles a second response.
          rangesAsked += 1;
          response.writeHead(206, { 'content-range': 'bytes 0-9/100', 'content-length': String(smuggled.length) });
          response.end(smuggled);
          return;
        }
        wholeGets += 1;
        response.writeHead(200, { 'content-length': String(blob.length), 'docker-content-digest': digest });
        response.end(blob);
        return;
      }
      sendError(response, 404, 'BLOB_UNKNOWN');
    });
    const mirror = await mirrorWith(`upstreams:\n  - registry: hostile.test\n    url: ${upstream.url}\n`);
    const request = `GET /v2/team/app/blobs/${digest} HTTP/1.1\r\nHost: mirror\r\nRange: bytes=0-9\r\nConnection: keep-alive\r\n\r\nGET /v2/ HTTP/1.1\r\nHost: mirror\r\n\r\n`;

    const exchange = await rawExchange(mirror.port, request);
    assert.match(exchange, /^HTTP\/1\.1 206 /);
    assert.doesNotMatch(exchange, /X-Smuggled|smuggled!/);
    const first = exchange.slice(exchange.indexOf('\r\n\r\n') + 4);
    assert.equal(first.slice(0, 10), blob.subarray(0, 10).toString('latin1'), 'the first 10 bytes of the blob');
    assert.match(first.slice(10), /^HTTP\/1\.1 200 /, 'the next response on the connection is the answer to the next request');
    assert.equal(rangesAsked, 0, 'no Range reached the upstream');
    assert.equal(wholeGets, 1, 'one whole GET: the fill');
  });

  it('answers 502, not 500, when the fill a range waits for fails before its first byte (found by the faults suite)', async () => {
    const upstream = await upstreamWith((request, response) => {
      if (request.url?.includes('/blobs/')) {
        response.writeHead(200, { 'content-length': String(blob.length) });
        response.flushHeaders();
        setTimeout(() => request.socket.resetAndDestroy(), 50);
        return;
      }
      sendError(response, 404, 'BLOB_UNKNOWN');
    });
    const mirror = await mirrorWith(`upstreams:\n  - registry: hostile.test\n    url: ${upstream.url}\n`);
    const answer = await fetch(`http://127.0.0.1:${mirror.port}/v2/team/app/blobs/${digest}`, { headers: { range: 'bytes=0-9' } });
    const body = Buffer.from(await answer.arrayBuffer());
    assert.equal(answer.status, 502);
    assert.equal(errorsOf(body)[0]?.code, 'UPSTREAM_UNAVAILABLE');
    assert.equal(upstream.count('GET', /\/blobs\//), 1);
    assert.ok(!mirror.lines().some((line) => line.includes('unexpected error')), 'not logged as a bug of the mirror');
  });
});

describe('hole 11: upstream details do not escape', { timeout: 60_000 }, () => {
  it('rewrites the Link of a tag list, refuses one that is not JSON, names upstreams by registry, keeps admin apart', async () => {
    let tagList = Buffer.from(JSON.stringify({ name: 'team/app', tags: ['a', 'b'] }));
    const upstream = await upstreamWith((request, response) => {
      if (request.url?.startsWith('/v2/team/app/tags/list')) {
        response.writeHead(200, {
          'content-type': 'application/json',
          'content-length': String(tagList.length),
          link: '<http://10.9.8.7:5000/v2/team/app/tags/list?last=b&n=2>; rel="next"',
        });
        response.end(tagList);
        return;
      }
      sendError(response, 404, 'NAME_UNKNOWN');
    });
    const adminPort = await freePort();
    const mirror = await mirrorWith(`upstreams:\n  - registry: hostile.test\n    url: ${upstream.url}\nadmin:\n  listen: 127.0.0.1:${adminPort}\n`);
    // The mirror pages the list itself: the upstream's Link is followed on the upstream (by its n and last only,
    // never to the host it names), and the link the client gets is the mirror's own.
    const listed = await rawGet(`${mirror.url}/v2/team/app/tags/list?n=1`);
    assert.equal(listed.status, 200);
    assert.deepEqual(JSON.parse(listed.body.toString()), { name: 'team/app', tags: ['a'] });
    assert.equal(listed.headers.link, '</v2/team/app/tags/list?n=1&last=a>; rel="next"');
    assert.equal(upstream.count('GET', /\/tags\/list\?n=2&last=b$/), 1, 'the upstream\'s next page asked of the upstream itself');
    const whole = await rawGet(`${mirror.url}/v2/team/app/tags/list?n=2`);
    assert.equal(whole.headers.link, undefined, 'a repeated page ends the list');

    tagList = Buffer.from('{"name": "team/app", "tags": [');
    const broken = await rawGet(`${mirror.url}/v2/team/app/tags/list?n=3`);
    assert.equal(broken.status, 502);
    assert.equal(errorsOf(broken.body)[0]?.code, 'UPSTREAM_UNAVAILABLE');
    assert.ok(!mirror.lines().some((line) => line.includes('"unexpected error"')), 'no stack, no 500');

    assert.equal((await rawGet(`${mirror.url}/metrics`)).status, 404, 'metrics are not on the registry listener');
    assert.equal((await rawGet(`${mirror.url}/_regmirror/status`)).status, 404);
    const metrics = await rawGet(`http://127.0.0.1:${adminPort}/metrics`);
    assert.equal(metrics.status, 200);
    assert.match(metrics.body.toString(), /regmirror_http_requests_total/);
    const status = await rawGet(`http://127.0.0.1:${adminPort}/_regmirror/status`);
    assert.equal(status.status, 200);
    assert.match(status.body.toString(), /"registry":"hostile.test"/);
    assert.doesNotMatch(status.body.toString(), new RegExp(`${upstream.port}|"url"`), 'no upstream URL in the status');
  });
});

describe('hole 14: an upstream 404 is remembered', { timeout: 60_000 }, () => {
  it('asks the upstream once for a missing tag or blob however often a client asks', async () => {
    const upstream = await upstreamWith((request, response) => {
      sendError(response, 404, request.url?.includes('/blobs/') ? 'BLOB_UNKNOWN' : 'MANIFEST_UNKNOWN');
    });
    const mirror = await mirrorWith(`upstreams:\n  - registry: hostile.test\n    url: ${upstream.url}\n`);
    for (let attempt = 0; attempt < 20; attempt++) {
      const tag = await rawGet(`${mirror.url}/v2/team/app/manifests/missing`);
      assert.equal(tag.status, 404);
      assert.equal(errorsOf(tag.body)[0]?.code, 'MANIFEST_UNKNOWN');
      const missingBlob = await rawGet(`${mirror.url}/v2/team/app/blobs/${digest}`);
      assert.equal(missingBlob.status, 404);
    }
    assert.equal(upstream.count('GET', /\/manifests\/missing$/), 1);
    assert.equal(upstream.count('GET', /\/blobs\//), 1);
  });
});
