// Upstream credentials (DESIGN.md invariants 5 and 6): regmirror pulls from a distribution 2.8.2 that
// wants Basic auth (htpasswd) and from one behind a token server (Bearer), with credentials from a
// config file (inline, passwordFile, passwordEnv), while its clients send none. Tokens are cached per
// scope and refetched once expired. Neither the configured secrets nor issued tokens ever reach a
// client or a log line; a client's own Authorization is never forwarded upstream, nor the mirror's
// to a CDN the upstream redirects to; wrong credentials give the client a 403 DENIED in OCI shape.

import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import { createServer, request, type IncomingHttpHeaders, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { startDistribution, type Distribution } from './support/distribution.js';
import { writeHtpasswd } from './support/htpasswd.js';
import { buildImageLayout, deterministicBytes, pushLayout, type BuiltLayout } from './support/images.js';
import { startRegmirror, type Regmirror } from './support/regmirror.js';
import { copyToOci, inspectRaw } from './support/skopeo.js';
import { makeTempDir, removeDir } from './support/temp.js';
import { startTokenServer, type TokenServer } from './support/token-server.js';

const USER = 'mirror-robot';
const PASSWORD = 'Upstream-S3cret-pw-7f3a9c';
const BASIC = `Basic ${Buffer.from(`${USER}:${PASSWORD}`).toString('base64')}`;
/** What a client of the mirror might send on its own: must never travel upstream. */
const CLIENT_USER = 'client-person';
const CLIENT_PASSWORD = 'Client-Only-pw-42d1e8';
const CLIENT_BASIC = `Basic ${Buffer.from(`${CLIENT_USER}:${CLIENT_PASSWORD}`).toString('base64')}`;
const CLIENT_BEARER = 'Bearer client-own-token-5b7c0e';
const TOKEN_TTL_S = 4;
const REQUEST_TIMEOUT_MS = 30_000;

interface RawResponse {
  status: number;
  headers: IncomingHttpHeaders;
  body: Buffer;
}

/** Everything the tests received from regmirror, headers and bodies, to grep for secrets at the end. */
const received: string[] = [];

/** One request with node:http (the path sent exactly as given); records the response in `received`. */
function rawRequest(baseUrl: string, method: string, target: string, headers: Record<string, string> = {}): Promise<RawResponse> {
  const { hostname, port } = new URL(baseUrl);
  return new Promise<RawResponse>((resolve, reject) => {
    const req = request({ host: hostname, port, method, path: target, headers, agent: false, timeout: REQUEST_TIMEOUT_MS }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (chunk: Buffer) => chunks.push(chunk));
      res.once('error', reject);
      res.once('end', () => {
        const body = Buffer.concat(chunks);
        received.push(`${method} ${target} ${res.statusCode ?? 0} ${JSON.stringify(res.headers)}\n${body.toString('latin1')}`);
        resolve({ status: res.statusCode ?? 0, headers: res.headers, body });
      });
    });
    req.once('timeout', () => req.destroy(new Error(`${method} ${target}: no answer within ${REQUEST_TIMEOUT_MS} ms`)));
    req.once('error', reject);
    req.end();
  });
}

/** Fails naming where a secret showed up (never printing the secret itself). */
function assertNoSecrets(places: Record<string, string[]>, secrets: Record<string, string>): void {
  for (const [place, texts] of Object.entries(places)) {
    for (const [secretName, secret] of Object.entries(secrets)) {
      assert.ok(secret.length >= 8, `secret ${secretName} is too short to grep for`);
      const index = texts.findIndex((text) => text.includes(secret));
      assert.equal(index, -1, `${secretName} leaked into ${place} (entry ${index})`);
    }
  }
}

/** A v2 error the way a client should get it: status, JSON content type, OCI error body, no stack. */
function assertWireError(response: RawResponse, status: number, code: string, method = 'GET'): void {
  const text = response.body.toString('utf8');
  assert.equal(response.status, status, `expected ${status} ${code}, got ${response.status}: ${text}`);
  assert.match(String(response.headers['content-type']), /^application\/json/);
  if (method === 'HEAD') {
    assert.equal(response.body.length, 0, 'HEAD has no body');
    return;
  }
  const body = JSON.parse(text) as { errors?: Array<{ code?: unknown; message?: unknown }> };
  assert.ok(Array.isArray(body.errors) && body.errors.length > 0, `OCI error body: ${text}`);
  assert.equal(body.errors[0]?.code, code);
  assert.equal(typeof body.errors[0]?.message, 'string');
  assert.doesNotMatch(text, /\bat \S+ \(|\.[jt]s:\d+:\d+|"stack"/, 'no stack trace in the body');
}

/** A refusal by the upstream, relayed: no challenge of the upstream's (its realm is not the client's business), no internal address. */
function assertDenied(response: RawResponse, hiddenAddresses: string[], method = 'GET'): void {
  assertWireError(response, 403, 'DENIED', method);
  assert.equal(response.headers['www-authenticate'], undefined, 'the upstream challenge is not relayed');
  const everything = `${JSON.stringify(response.headers)}\n${response.body.toString('utf8')}`;
  for (const address of hiddenAddresses) assert.ok(!everything.includes(address), `the response names ${address}`);
}

function sha256(bytes: Buffer): string {
  return `sha256:${createHash('sha256').update(bytes).digest('hex')}`;
}

async function writeConfig(file: string, upstream: Record<string, unknown>): Promise<string> {
  // JSON is YAML.
  await writeFile(file, JSON.stringify({ upstreams: [upstream], log: { level: 'info' } }));
  return file;
}

/** Requests the mirror sent to a distribution, from its access log (regmirror's own user agent). */
function mirrorRequests(upstream: Distribution): Array<{ method: string; path: string; status: number }> {
  return upstream.accessEntries().filter((entry) => entry.userAgent.startsWith('regmirror'));
}

describe('upstream Basic auth (distribution with htpasswd)', () => {
  let work: string;
  let upstream: Distribution;
  let layout: BuiltLayout;
  const mirrors: Regmirror[] = [];

  before(async () => {
    work = await makeTempDir('upstream-basic-');
    const htpasswd = path.join(work, 'htpasswd');
    await writeHtpasswd(htpasswd, { [USER]: PASSWORD });
    upstream = await startDistribution({ auth: { htpasswd: { path: htpasswd } } });
    layout = await buildImageLayout(path.join(work, 'image'), 'v1', [{ layers: [{ size: 40_000, seed: 201 }, { size: 3_000, seed: 202 }] }]);
    await pushLayout(layout, `127.0.0.1:${upstream.port}/team/app:v1`, { creds: `${USER}:${PASSWORD}` });
  });

  after(async () => {
    for (const mirror of mirrors) await mirror.destroy();
    await upstream?.destroy();
    if (work !== undefined) await removeDir(work);
  });

  it('really requires credentials upstream', async () => {
    const anonymous = await rawRequest(upstream.url, 'GET', '/v2/team/app/manifests/v1');
    assert.equal(anonymous.status, 401);
  });

  it('pulls through with a passwordFile while the client sends no credentials', async () => {
    const passwordFile = path.join(work, 'password');
    await writeFile(passwordFile, `${PASSWORD}\n`, { mode: 0o600 });
    const config = await writeConfig(path.join(work, 'basic-file.yaml'), { url: upstream.url, credentials: { username: USER, passwordFile } });
    const mirror = await startRegmirror({ configFile: config });
    mirrors.push(mirror);

    const out = path.join(work, 'out-file');
    await copyToOci(`docker://${mirror.host}/team/app:v1`, out, 'v1');
    const image = layout.images[0];
    assert.ok(image !== undefined);
    const pulledManifest = await readFile(path.join(out, 'blobs', 'sha256', image.manifestDigest.slice(7)));
    assert.ok(pulledManifest.equals(image.manifestBytes), 'the pulled manifest is the pushed one');
    for (const digest of image.layerDigests) {
      const pulled = await readFile(path.join(out, 'blobs', 'sha256', digest.slice(7)));
      assert.equal(sha256(pulled), digest);
    }
    const direct = await inspectRaw(`docker://127.0.0.1:${upstream.port}/team/app:v1`, { creds: `${USER}:${PASSWORD}` });
    const mirrored = await inspectRaw(`docker://${mirror.host}/team/app:v1`);
    assert.ok(direct.equals(mirrored), 'manifest bytes through the mirror equal the upstream');

    // Raw requests (recorded for the leak check): manifest, blob, tag list.
    const manifest = await rawRequest(mirror.url, 'GET', '/v2/team/app/manifests/v1', { accept: 'application/vnd.oci.image.manifest.v1+json' });
    assert.equal(manifest.status, 200);
    assert.ok(manifest.body.equals(image.manifestBytes));
    const layerDigest = image.layerDigests[1] ?? '';
    const blob = await rawRequest(mirror.url, 'GET', `/v2/team/app/blobs/${layerDigest}`);
    assert.equal(blob.status, 200);
    assert.equal(sha256(blob.body), layerDigest);
    const tags = await rawRequest(mirror.url, 'GET', '/v2/team/app/tags/list');
    assert.equal(tags.status, 200);
    assert.deepEqual((JSON.parse(tags.body.toString()) as { tags: string[] }).tags, ['v1']);

    await upstream.settle();
    const upstreamSeen = mirrorRequests(upstream);
    assert.ok(upstreamSeen.some((entry) => entry.status === 200 && entry.path.includes('/manifests/')), 'the mirror fetched upstream, authenticated');
    // After the first challenge the mirror sends credentials up front: one 401 at most (the first request).
    assert.ok(upstreamSeen.filter((entry) => entry.status === 401).length <= 1, `401s: ${JSON.stringify(upstreamSeen)}`);
  });

  it('pulls through with passwordEnv', async () => {
    const config = await writeConfig(path.join(work, 'basic-env.yaml'), {
      url: upstream.url,
      credentials: { username: USER, passwordEnv: 'REGMIRROR_TEST_UPSTREAM_PASSWORD' },
    });
    const mirror = await startRegmirror({ configFile: config, env: { REGMIRROR_TEST_UPSTREAM_PASSWORD: PASSWORD } });
    mirrors.push(mirror);
    const direct = await inspectRaw(`docker://127.0.0.1:${upstream.port}/team/app:v1`, { creds: `${USER}:${PASSWORD}` });
    const mirrored = await inspectRaw(`docker://${mirror.host}/team/app:v1`);
    assert.ok(direct.equals(mirrored), 'manifest bytes through the mirror equal the upstream');
    const configDigest = layout.images[0]?.configDigest ?? '';
    const blob = await rawRequest(mirror.url, 'GET', `/v2/team/app/blobs/${configDigest}`);
    assert.equal(blob.status, 200);
    assert.equal(sha256(blob.body), configDigest);
  });

  it('answers 403 DENIED in OCI shape when the configured password is wrong', async () => {
    const config = await writeConfig(path.join(work, 'basic-wrong.yaml'), {
      url: upstream.url,
      credentials: { username: USER, password: 'Wrong-password-c0ffee' },
    });
    const mirror = await startRegmirror({ configFile: config });
    mirrors.push(mirror);
    const image = layout.images[0];
    assert.ok(image !== undefined);
    const hidden = [`127.0.0.1:${upstream.port}`];
    assertDenied(await rawRequest(mirror.url, 'GET', '/v2/team/app/manifests/v1'), hidden);
    assertDenied(await rawRequest(mirror.url, 'HEAD', '/v2/team/app/manifests/v1'), hidden, 'HEAD');
    assertDenied(await rawRequest(mirror.url, 'GET', `/v2/team/app/manifests/${image.manifestDigest}`), hidden);
    assertDenied(await rawRequest(mirror.url, 'GET', `/v2/team/app/blobs/${image.layerDigests[0] ?? ''}`), hidden);
    assertDenied(await rawRequest(mirror.url, 'HEAD', `/v2/team/app/blobs/${image.layerDigests[0] ?? ''}`), hidden, 'HEAD');
    assertDenied(await rawRequest(mirror.url, 'GET', '/v2/team/app/tags/list'), hidden);
    await assert.rejects(copyToOci(`docker://${mirror.host}/team/app:v1`, path.join(work, 'out-wrong'), 'v1', { timeoutMs: 60_000 }));
    // The client's mistake is not the mirror's failure: no 5xx, no internal error logged.
    assert.ok(mirror.accessEntries().every((entry) => entry.status < 500), 'no 5xx answered');
    assert.ok(!mirror.lines().some((line) => line.includes('unexpected error')), 'no internal error logged');
    assert.equal(await mirror.metricValue('regmirror_fills_total', { outcome: 'committed' }), 0, 'nothing was cached');
  });

  it('answers 403 DENIED when no credentials are configured for a protected upstream', async () => {
    const mirror = await startRegmirror({ upstreams: [upstream.url] });
    mirrors.push(mirror);
    assertDenied(await rawRequest(mirror.url, 'GET', '/v2/team/app/manifests/v1'), [`127.0.0.1:${upstream.port}`]);
  });

  it('refuses credentials written into the upstream URL without printing them', async () => {
    const withUserinfo = new URL(upstream.url);
    withUserinfo.username = USER;
    withUserinfo.password = PASSWORD;
    const config = await writeConfig(path.join(work, 'userinfo.yaml'), { url: withUserinfo.toString() });
    let failure: unknown;
    try {
      mirrors.push(await startRegmirror({ configFile: config }));
    } catch (error) {
      failure = error;
    }
    assert.ok(failure instanceof Error, 'regmirror must not start with credentials in an upstream URL');
    // The helper's message carries everything the process printed.
    assert.match(failure.message, /credentials/);
    assert.ok(!failure.message.includes(PASSWORD), 'the password was printed');
  });

  it('leaks neither the password nor the Basic header to clients, logs or metrics', async () => {
    const metrics: string[] = [];
    for (const mirror of mirrors) metrics.push(await mirror.metrics());
    assert.ok(received.length > 5 && mirrors.length === 4);
    assertNoSecrets(
      { 'regmirror output': mirrors.flatMap((mirror) => mirror.lines()), 'responses to clients': received, metrics },
      { password: PASSWORD, 'base64 user:password': BASIC.slice('Basic '.length), 'user:password': `${USER}:${PASSWORD}` },
    );
  });
});

describe('upstream Bearer tokens (distribution with auth.token)', () => {
  let work: string;
  let tokens: TokenServer;
  let upstream: Distribution;
  let mirror: Regmirror;
  let wrongMirror: Regmirror | undefined;
  let v1: BuiltLayout;
  let v2: BuiltLayout;
  /** Token-server records before the mirror started (skopeo's pushes and inspect). */
  let pushTokenRequests = 0;
  let upstreamV1Manifest: Buffer;
  const scope = 'repository:team/app:pull';

  before(async () => {
    work = await makeTempDir('upstream-bearer-');
    tokens = await startTokenServer({ dir: work, users: { [USER]: PASSWORD }, tokenTtlSeconds: TOKEN_TTL_S });
    upstream = await startDistribution({
      auth: { token: { realm: tokens.realm, service: tokens.service, issuer: tokens.issuer, rootCertBundle: tokens.certPath } },
    });
    const layers = [1, 2, 3, 4, 5].map((n) => ({ size: 20_000 + n * 1_000, seed: 300 + n }));
    v1 = await buildImageLayout(path.join(work, 'v1'), 'v1', [{ layers }]);
    v2 = await buildImageLayout(path.join(work, 'v2'), 'v2', [{ layers: [{ size: 25_000, seed: 311 }, { size: 26_000, seed: 312 }] }]);
    const creds = `${USER}:${PASSWORD}`;
    await pushLayout(v1, `127.0.0.1:${upstream.port}/team/app:v1`, { creds });
    await pushLayout(v2, `127.0.0.1:${upstream.port}/team/app:v2`, { creds });
    // skopeo asks the token server too: read the upstream's bytes before counting the mirror's token requests.
    upstreamV1Manifest = await inspectRaw(`docker://127.0.0.1:${upstream.port}/team/app:v1`, { creds });
    pushTokenRequests = tokens.requests().length;
    const config = await writeConfig(path.join(work, 'bearer.yaml'), {
      url: upstream.url,
      credentials: { username: USER, passwordEnv: 'REGMIRROR_TEST_TOKEN_PASSWORD' },
    });
    mirror = await startRegmirror({ configFile: config, env: { REGMIRROR_TEST_TOKEN_PASSWORD: PASSWORD } });
  });

  after(async () => {
    await mirror?.destroy();
    await wrongMirror?.destroy();
    await upstream?.destroy();
    await tokens?.stop();
    if (work !== undefined) await removeDir(work);
  });

  const mirrorTokenRequests = (): ReturnType<TokenServer['requests']> => tokens.requests().slice(pushTokenRequests);

  it('pulls a multi-layer image with one token for its scope, however many upstream requests', async () => {
    const started = Date.now();
    await copyToOci(`docker://${mirror.host}/team/app:v1`, path.join(work, 'out'), 'v1');
    const pullMs = Date.now() - started;
    const mirrored = await inspectRaw(`docker://${mirror.host}/team/app:v1`);
    assert.ok(upstreamV1Manifest.equals(mirrored), 'manifest bytes through the mirror equal the upstream');

    await upstream.settle();
    const upstreamSeen = mirrorRequests(upstream);
    const tokenRequests = mirrorTokenRequests();
    // manifest + config + 5 layers, plus the one 401 that taught the mirror the realm.
    assert.ok(upstreamSeen.length >= 7, `upstream requests: ${upstreamSeen.length}`);
    assert.equal(upstreamSeen.filter((entry) => entry.status === 401).length, 1, 'one challenge, then tokens up front');
    assert.ok(upstreamSeen.filter((entry) => entry.status !== 401).every((entry) => entry.status === 200), JSON.stringify(upstreamSeen));
    assert.ok(
      tokenRequests.length >= 1 && tokenRequests.length * 3 <= upstreamSeen.length,
      `${tokenRequests.length} token requests for ${upstreamSeen.length} upstream requests (pull took ${pullMs} ms)`,
    );
    // One scope, one token (the pull is far shorter than the token's lifetime).
    assert.equal(tokenRequests.length, 1, `token requests: ${JSON.stringify(tokenRequests.map((r) => r.scope))}, pull took ${pullMs} ms`);
    for (const record of tokenRequests) {
      assert.equal(record.scope, scope);
      assert.equal(record.service, tokens.service);
      assert.equal(record.user, USER, 'the configured credentials went to the token realm');
      assert.equal(record.status, 200);
    }
    assert.equal(await mirror.metricValue('regmirror_upstream_requests_total', { kind: 'token' }), tokenRequests.length);
  });

  it('fetches a new token once the old one expired, and the pull succeeds', async () => {
    const earlier = mirrorTokenRequests().length;
    await sleep(TOKEN_TTL_S * 1000 + 500);
    await copyToOci(`docker://${mirror.host}/team/app:v2`, path.join(work, 'out'), 'v2');
    const pulled = await inspectRaw(`docker://${mirror.host}/team/app:v2`);
    assert.ok(pulled.equals(v2.images[0]?.manifestBytes ?? Buffer.alloc(0)), 'v2 manifest bytes as pushed');
    const image = v2.images[0];
    assert.ok(image !== undefined);
    for (const digest of image.layerDigests) {
      const blob = await rawRequest(mirror.url, 'GET', `/v2/team/app/blobs/${digest}`);
      assert.equal(blob.status, 200);
      assert.equal(sha256(blob.body), digest);
    }
    const fresh = mirrorTokenRequests().slice(earlier);
    assert.ok(fresh.length >= 1, 'a new token was requested after expiry');
    assert.ok(fresh.length <= 2, `token requests after expiry: ${fresh.length}`);
    assert.ok(fresh.every((record) => record.scope === scope && record.status === 200 && record.user === USER));
    await upstream.settle();
    const statuses = mirrorRequests(upstream).map((entry) => entry.status);
    assert.ok(statuses.every((status) => status === 200 || status === 401), JSON.stringify(statuses));
  });

  it('never passes a client Authorization header to the token server', async () => {
    const earlier = mirrorTokenRequests().length;
    // Tag lists always go upstream; the new scope needs a new token.
    for (const authorization of [CLIENT_BASIC, CLIENT_BEARER]) {
      const response = await rawRequest(mirror.url, 'GET', '/v2/team/app/tags/list', { authorization });
      assert.equal(response.status, 200);
      const other = await rawRequest(mirror.url, 'GET', '/v2/team/other/manifests/v1', { authorization });
      assertWireError(other, 404, 'MANIFEST_UNKNOWN');
    }
    const records = tokens.requests();
    assert.ok(records.length > earlier, 'the token server was asked again (a new scope)');
    for (const record of records) {
      assert.notEqual(record.authorization, CLIENT_BASIC);
      assert.notEqual(record.authorization, CLIENT_BEARER);
      assert.notEqual(record.user, CLIENT_USER);
    }
    assert.ok(records.slice(pushTokenRequests).every((record) => record.authorization === BASIC), 'only the configured credentials');
  });

  it('answers 403 DENIED when the token server refuses the configured credentials', async () => {
    const config = await writeConfig(path.join(work, 'bearer-wrong.yaml'), {
      url: upstream.url,
      credentials: { username: USER, password: 'Wrong-password-c0ffee' },
    });
    wrongMirror = await startRegmirror({ configFile: config });
    const digest = v1.images[0]?.layerDigests[0] ?? '';
    const hidden = [`127.0.0.1:${upstream.port}`, tokens.url];
    assertDenied(await rawRequest(wrongMirror.url, 'GET', '/v2/team/app/manifests/v1'), hidden);
    assertDenied(await rawRequest(wrongMirror.url, 'HEAD', '/v2/team/app/manifests/v1'), hidden, 'HEAD');
    assertDenied(await rawRequest(wrongMirror.url, 'GET', `/v2/team/app/blobs/${digest}`), hidden);
    assert.ok(wrongMirror.accessEntries().every((entry) => entry.status < 500), 'no 5xx answered');
    assert.ok(!wrongMirror.lines().some((line) => line.includes('unexpected error')), 'no internal error logged');
  });

  it('leaks neither the password nor any issued token to clients, logs or metrics', async () => {
    const issued = tokens.issuedTokens();
    assert.ok(issued.length >= pushTokenRequests, 'tokens were issued');
    const secrets: Record<string, string> = {
      password: PASSWORD,
      'base64 user:password': BASIC.slice('Basic '.length),
    };
    issued.forEach((token, index) => {
      secrets[`token ${index}`] = token;
      // The signature alone is as good as the token for a grep and survives truncation.
      secrets[`token ${index} signature`] = token.slice(token.lastIndexOf('.') + 1);
    });
    const metrics = [await mirror.metrics()];
    if (wrongMirror !== undefined) metrics.push(await wrongMirror.metrics());
    assertNoSecrets(
      { 'regmirror output': [...mirror.lines(), ...(wrongMirror?.lines() ?? [])], 'responses to clients': received, metrics },
      secrets,
    );
  });
});

interface Recorded {
  method: string;
  url: string;
  headers: IncomingHttpHeaders;
}

async function listen(server: Server): Promise<string> {
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

async function close(server: Server | undefined): Promise<void> {
  if (server === undefined || !server.listening) return;
  await new Promise<void>((resolve) => {
    server.close(() => resolve());
    server.closeAllConnections();
  });
}

describe('client credentials stay with the mirror (recording upstream and CDN)', () => {
  const upstreamSeen: Recorded[] = [];
  const cdnSeen: Recorded[] = [];
  const layer = deterministicBytes(50_000, 401);
  const layerDigest = sha256(layer);
  const configBytes = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [] } }));
  const configDigest = sha256(configBytes);
  const manifestBytes = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.manifest.v1+json',
      config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: configDigest, size: configBytes.length },
      layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: layerDigest, size: layer.length }],
    }),
  );
  const manifestDigest = sha256(manifestBytes);
  const upstreamPassword = 'Fake-Upstream-pw-93be11';
  const upstreamBasic = `Basic ${Buffer.from(`${USER}:${upstreamPassword}`).toString('base64')}`;
  let upstream: Server | undefined;
  let cdn: Server | undefined;
  let mirror: Regmirror | undefined;
  let work: string;

  before(async () => {
    work = await makeTempDir('upstream-fake-');
    cdn = createServer((req, res) => {
      cdnSeen.push({ method: req.method ?? '', url: req.url ?? '', headers: req.headers });
      if (req.url === `/cdn/${configDigest}`) {
        res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': String(configBytes.length) });
        res.end(req.method === 'HEAD' ? undefined : configBytes);
        return;
      }
      res.writeHead(404).end();
    });
    const cdnUrl = await listen(cdn);
    upstream = createServer((req, res) => {
      upstreamSeen.push({ method: req.method ?? '', url: req.url ?? '', headers: req.headers });
      const send = (status: number, headers: Record<string, string>, body?: Buffer): void => {
        res.writeHead(status, { ...headers, ...(body === undefined ? {} : { 'content-length': String(body.length) }) });
        res.end(req.method === 'HEAD' ? undefined : body);
      };
      if (req.headers.authorization !== upstreamBasic) {
        send(401, { 'www-authenticate': 'Basic realm="fake-upstream"', 'content-type': 'application/json' }, Buffer.from('{"errors":[{"code":"UNAUTHORIZED","message":"x"}]}'));
        return;
      }
      const url = req.url ?? '';
      if (url === '/v2/' || url === '/v2') return send(200, { 'content-type': 'application/json' }, Buffer.from('{}'));
      if (url === '/v2/fake/app/manifests/v1' || url === `/v2/fake/app/manifests/${manifestDigest}`) {
        return send(200, { 'content-type': 'application/vnd.oci.image.manifest.v1+json', 'docker-content-digest': manifestDigest }, manifestBytes);
      }
      if (url === `/v2/fake/app/blobs/${configDigest}`) {
        // Like a registry handing blobs to a CDN: another origin, which must not get the mirror's credentials.
        return send(307, { location: `${cdnUrl}/cdn/${configDigest}` }, Buffer.alloc(0));
      }
      if (url === `/v2/fake/app/blobs/${layerDigest}`) {
        return send(200, { 'content-type': 'application/octet-stream', 'docker-content-digest': layerDigest }, layer);
      }
      if (url.startsWith('/v2/fake/app/tags/list')) return send(200, { 'content-type': 'application/json' }, Buffer.from('{"name":"fake/app","tags":["v1"]}'));
      send(404, { 'content-type': 'application/json' }, Buffer.from('{"errors":[{"code":"NAME_UNKNOWN","message":"x"}]}'));
    });
    const upstreamUrl = await listen(upstream);
    const config = await writeConfig(path.join(work, 'fake.yaml'), { url: upstreamUrl, credentials: { username: USER, password: upstreamPassword } });
    mirror = await startRegmirror({ configFile: config });
  });

  after(async () => {
    await mirror?.destroy();
    await close(upstream);
    await close(cdn);
    if (work !== undefined) await removeDir(work);
  });

  it('forwards neither Basic nor Bearer client credentials, and keeps its own off the CDN', async () => {
    assert.ok(mirror !== undefined);
    for (const authorization of [CLIENT_BASIC, CLIENT_BEARER]) {
      // Other credential-bearing headers a client (or a proxy in front) may send must stay here too.
      const headers = { authorization, cookie: `session=${CLIENT_PASSWORD}`, 'proxy-authorization': CLIENT_BASIC };
      assert.equal((await rawRequest(mirror.url, 'GET', '/v2/', headers)).status, 200);
      const manifest = await rawRequest(mirror.url, 'GET', '/v2/fake/app/manifests/v1', headers);
      assert.equal(manifest.status, 200);
      assert.ok(manifest.body.equals(manifestBytes));
      assert.equal((await rawRequest(mirror.url, 'GET', '/v2/fake/app/tags/list', headers)).status, 200);
      assertWireError(await rawRequest(mirror.url, 'GET', '/v2/fake/missing/manifests/v1', headers), 404, 'MANIFEST_UNKNOWN');
    }
    // Cold blobs: a HEAD, a ranged GET (passed through), whole GETs (one via the CDN redirect).
    const headers = { authorization: CLIENT_BASIC };
    const head = await rawRequest(mirror.url, 'HEAD', `/v2/fake/app/blobs/${layerDigest}`, headers);
    assert.equal(head.status, 200);
    assert.equal(head.headers['content-length'], String(layer.length));
    const ranged = await rawRequest(mirror.url, 'GET', `/v2/fake/app/blobs/${layerDigest}`, { ...headers, range: 'bytes=0-99' });
    assert.ok(ranged.status === 206 || ranged.status === 200, `ranged status ${ranged.status}`);
    const whole = await rawRequest(mirror.url, 'GET', `/v2/fake/app/blobs/${layerDigest}`, headers);
    assert.equal(whole.status, 200);
    assert.ok(whole.body.equals(layer));
    const viaCdn = await rawRequest(mirror.url, 'GET', `/v2/fake/app/blobs/${configDigest}`, { authorization: CLIENT_BEARER });
    assert.equal(viaCdn.status, 200);
    assert.ok(viaCdn.body.equals(configBytes));

    // What the upstream saw: nothing, or exactly the configured credentials; never the client's.
    assert.ok(upstreamSeen.length >= 5, `upstream requests: ${upstreamSeen.length}`);
    assert.ok(upstreamSeen.some((seen) => seen.headers.authorization === upstreamBasic), 'the mirror authenticated with its own credentials');
    for (const seen of upstreamSeen) {
      assert.ok(
        seen.headers.authorization === undefined || seen.headers.authorization === upstreamBasic,
        `${seen.method} ${seen.url} carried authorization ${String(seen.headers.authorization)}`,
      );
      assert.equal(seen.headers.cookie, undefined);
      assert.equal(seen.headers['proxy-authorization'], undefined);
      const all = JSON.stringify(seen.headers);
      for (const secret of [CLIENT_PASSWORD, CLIENT_BASIC.slice(6), CLIENT_BEARER.slice(7)]) assert.ok(!all.includes(secret), `${seen.method} ${seen.url} carried a client credential`);
    }
    // The CDN (another origin) got the blob request, and no credentials at all.
    assert.ok(cdnSeen.length >= 1, 'the redirect was followed');
    for (const seen of cdnSeen) {
      assert.equal(seen.headers.authorization, undefined, `CDN ${seen.method} ${seen.url} got an Authorization header`);
      const all = JSON.stringify(seen.headers);
      for (const secret of [upstreamPassword, upstreamBasic.slice(6), CLIENT_PASSWORD, CLIENT_BASIC.slice(6)]) assert.ok(!all.includes(secret), 'CDN saw a credential');
    }
    assertNoSecrets(
      { 'regmirror output': mirror.lines(), 'responses to clients': received },
      { 'upstream password': upstreamPassword, 'base64 user:password': upstreamBasic.slice(6) },
    );
  });
});
