// Upstream credentials (DESIGN.md invariants 5 and 6): regmirror pulls from a distribution 2.8.2 that
// wants Basic auth (htpasswd) and from one behind a token server (Bearer), with credentials from a
// config file (inline, passwordFile, passwordEnv), while its clients send none. Tokens are cached per
// scope and refetched once expired. Neither the configured secrets nor issued tokens ever reach a
// client or a log line; a client's own Authorization is never forwarded upstream, nor the mirror's
// to a CDN the upstream redirects to; wrong credentials give the client a 403 DENIED in OCI shape.

import assert from 'node:assert/strict';
import { createHash, randomUUID } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import { createServer, request, type IncomingHttpHeaders, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { after, before, describe, it, type TestContext } from 'node:test';
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
const TOKEN_TTL_S = 3_600;
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

/** Neither the configured password nor its Basic header in what the mirror printed, what clients got, or its metrics. */
async function assertSecretsKept(mirror: Regmirror, secrets: Record<string, string>): Promise<void> {
  await mirror.settle();
  assertNoSecrets({ 'regmirror output': mirror.lines(), 'responses to clients': received, metrics: [await mirror.metrics()] }, secrets);
}

const BASIC_SECRETS = { password: PASSWORD, 'base64 user:password': BASIC.slice('Basic '.length), 'user:password': `${USER}:${PASSWORD}` };

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
    await upstream.settle();
    const seenBefore = mirrorRequests(upstream).length;
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
    const upstreamSeen = mirrorRequests(upstream).slice(seenBefore);
    assert.ok(upstreamSeen.some((entry) => entry.status === 200 && entry.path.includes('/manifests/')), 'the mirror fetched upstream, authenticated');
    // After the first challenge the mirror sends credentials up front: one 401 (the first request), then none.
    assert.equal(upstreamSeen.filter((entry) => entry.status === 401).length, 1, `401s: ${JSON.stringify(upstreamSeen)}`);
    assert.equal(upstreamSeen[0]?.status, 401, 'the challenge came first');
    await assertSecretsKept(mirror, BASIC_SECRETS);
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
    await assertSecretsKept(mirror, BASIC_SECRETS);
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
    await assertSecretsKept(mirror, { ...BASIC_SECRETS, 'wrong password': 'Wrong-password-c0ffee' });
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
});

describe('upstream Bearer tokens (distribution with auth.token)', () => {
  let work: string;
  let tokens: TokenServer;
  let upstream: Distribution;
  let v1: BuiltLayout;
  let v2: BuiltLayout;
  let upstreamV1Manifest: Buffer;
  const scope = 'repository:team/app:pull';

  before(async () => {
    work = await makeTempDir('upstream-bearer-');
    // Tokens live an hour unless a test says otherwise: none lapses mid-pull, however slow this machine is.
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
    upstreamV1Manifest = await inspectRaw(`docker://127.0.0.1:${upstream.port}/team/app:v1`, { creds });
  });

  after(async () => {
    await upstream?.destroy();
    await tokens?.stop();
    if (work !== undefined) await removeDir(work);
  });

  /**
   * A mirror of the test's own, configured with USER and the given password; what the token server and the
   * upstream saw from it (skopeo's and other tests' requests came earlier and are left out).
   */
  async function startBearerMirror(t: TestContext, password = PASSWORD) {
    await upstream.settle();
    const tokensBefore = tokens.requests().length;
    const upstreamBefore = mirrorRequests(upstream).length;
    const config = await writeConfig(path.join(work, `bearer-${randomUUID()}.yaml`), {
      url: upstream.url,
      credentials: { username: USER, passwordEnv: 'REGMIRROR_TEST_TOKEN_PASSWORD' },
    });
    const mirror = await startRegmirror({ configFile: config, env: { REGMIRROR_TEST_TOKEN_PASSWORD: password } });
    t.after(() => mirror.destroy());
    return {
      mirror,
      tokenRequests: () => tokens.requests().slice(tokensBefore),
      upstreamSeen: async () => {
        await upstream.settle();
        return mirrorRequests(upstream).slice(upstreamBefore);
      },
    };
  }

  /** Neither the password nor any token issued so far (whole, or its signature) in the mirror's output, responses or metrics. */
  async function assertTokensKept(mirror: Regmirror): Promise<void> {
    const secrets: Record<string, string> = { password: PASSWORD, 'base64 user:password': BASIC.slice('Basic '.length) };
    tokens.issuedTokens().forEach((token, index) => {
      secrets[`token ${index}`] = token;
      // The signature alone is as good as the token for a grep and survives truncation.
      secrets[`token ${index} signature`] = token.slice(token.lastIndexOf('.') + 1);
    });
    assert.ok(tokens.issuedTokens().length > 0, 'tokens were issued');
    await assertSecretsKept(mirror, secrets);
  }

  it('pulls a multi-layer image with one token for its scope, however many upstream requests', async (t) => {
    const { mirror, tokenRequests, upstreamSeen } = await startBearerMirror(t);
    await copyToOci(`docker://${mirror.host}/team/app:v1`, path.join(work, `out-${randomUUID()}`), 'v1');
    const mirrored = await inspectRaw(`docker://${mirror.host}/team/app:v1`);
    assert.ok(upstreamV1Manifest.equals(mirrored), 'manifest bytes through the mirror equal the upstream');

    const seen = await upstreamSeen();
    // manifest + config + 5 layers, plus the one 401 that taught the mirror the realm.
    assert.ok(seen.length >= 7, `upstream requests: ${seen.length}`);
    assert.equal(seen.filter((entry) => entry.status === 401).length, 1, 'one challenge, then tokens up front');
    assert.equal(seen[0]?.status, 401, 'the challenge came first');
    assert.ok(seen.slice(1).every((entry) => entry.status === 200), JSON.stringify(seen));
    // One scope, one token: it lives an hour, so this holds however long the pull took.
    const asked = tokenRequests();
    assert.equal(asked.length, 1, `token requests: ${JSON.stringify(asked.map((r) => r.scope))}`);
    for (const record of asked) {
      assert.equal(record.scope, scope);
      assert.equal(record.service, tokens.service);
      assert.equal(record.user, USER, 'the configured credentials went to the token realm');
      assert.equal(record.status, 200);
    }
    assert.equal(await mirror.metricValue('regmirror_upstream_requests_total', { kind: 'token' }), 1);
    await assertTokensKept(mirror);
  });

  it('fetches a new token once the old one expired, before the upstream has to refuse it', async (t) => {
    const { mirror, tokenRequests, upstreamSeen } = await startBearerMirror(t);
    t.after(() => tokens.setTokenTtl(TOKEN_TTL_S));
    tokens.setTokenTtl(2);
    const manifest = await rawRequest(mirror.url, 'GET', '/v2/team/app/manifests/v2', { accept: 'application/vnd.oci.image.manifest.v1+json' });
    const shortLivedAt = Date.now();
    assert.equal(manifest.status, 200);
    assert.equal(tokenRequests().length, 1, 'one short-lived token');
    // The next token lives an hour: exactly one more request, however long the rest takes.
    tokens.setTokenTtl(TOKEN_TTL_S);
    await sleep(Math.max(0, shortLivedAt + 2_500 - Date.now())); // past the first token's 2 s
    const seenBeforeExpiry = (await upstreamSeen()).length;

    await copyToOci(`docker://${mirror.host}/team/app:v2`, path.join(work, `out-${randomUUID()}`), 'v2');
    const image = v2.images[0];
    assert.ok(image !== undefined);
    assert.ok((await inspectRaw(`docker://${mirror.host}/team/app:v2`)).equals(image.manifestBytes), 'v2 manifest bytes as pushed');
    for (const digest of image.layerDigests) {
      const blob = await rawRequest(mirror.url, 'GET', `/v2/team/app/blobs/${digest}`);
      assert.equal(blob.status, 200);
      assert.equal(sha256(blob.body), digest);
    }
    const fresh = tokenRequests().slice(1);
    assert.equal(fresh.length, 1, 'one new token after expiry');
    assert.ok(fresh.every((record) => record.scope === scope && record.status === 200 && record.user === USER));
    const afterExpiry = (await upstreamSeen()).slice(seenBeforeExpiry);
    assert.ok(afterExpiry.length >= 2, 'the pull went upstream after the expiry');
    assert.deepEqual(afterExpiry.filter((entry) => entry.status !== 200), [], 'the expired token was never sent: no 401');
    await assertTokensKept(mirror);
  });

  it('never passes a client Authorization header to the token server', async (t) => {
    const { mirror, tokenRequests } = await startBearerMirror(t);
    for (const authorization of [CLIENT_BASIC, CLIENT_BEARER]) {
      const response = await rawRequest(mirror.url, 'GET', '/v2/team/app/tags/list', { authorization });
      assert.equal(response.status, 200);
      const other = await rawRequest(mirror.url, 'GET', '/v2/team/other/manifests/v1', { authorization });
      assertWireError(other, 404, 'MANIFEST_UNKNOWN');
    }
    const asked = tokenRequests();
    assert.ok(asked.length >= 2, 'the token server was asked, for both scopes');
    assert.ok(asked.some((record) => record.scope === 'repository:team/other:pull'));
    assert.ok(asked.every((record) => record.authorization === BASIC), 'only the configured credentials');
    for (const record of tokens.requests()) {
      assert.notEqual(record.authorization, CLIENT_BASIC);
      assert.notEqual(record.authorization, CLIENT_BEARER);
      assert.notEqual(record.user, CLIENT_USER);
    }
    await assertTokensKept(mirror);
  });

  it('answers 403 DENIED when the token server refuses the configured credentials', async (t) => {
    const { mirror, tokenRequests } = await startBearerMirror(t, 'Wrong-password-c0ffee');
    const digest = v1.images[0]?.layerDigests[0] ?? '';
    const hidden = [`127.0.0.1:${upstream.port}`, tokens.url];
    assertDenied(await rawRequest(mirror.url, 'GET', '/v2/team/app/manifests/v1'), hidden);
    assertDenied(await rawRequest(mirror.url, 'HEAD', '/v2/team/app/manifests/v1'), hidden, 'HEAD');
    assertDenied(await rawRequest(mirror.url, 'GET', `/v2/team/app/blobs/${digest}`), hidden);
    assert.ok(tokenRequests().length > 0 && tokenRequests().every((record) => record.status === 401), 'the token server refused it');
    assert.ok(mirror.accessEntries().every((entry) => entry.status < 500), 'no 5xx answered');
    assert.ok(!mirror.lines().some((line) => line.includes('unexpected error')), 'no internal error logged');
    await assertSecretsKept(mirror, { 'wrong password': 'Wrong-password-c0ffee' });
  });
});

describe('a token realm on another host name over plain http', () => {
  let work: string;
  let tokens: TokenServer;
  let upstream: Distribution;

  before(async () => {
    work = await makeTempDir('upstream-realm-');
    tokens = await startTokenServer({ dir: work, users: { [USER]: PASSWORD } });
    // The same token server, named as localhost: another host name than the upstream's 127.0.0.1.
    const realm = tokens.realm.replace('//127.0.0.1:', '//localhost:');
    upstream = await startDistribution({ auth: { token: { realm, service: tokens.service, issuer: tokens.issuer, rootCertBundle: tokens.certPath } } });
  });

  after(async () => {
    await upstream?.destroy();
    await tokens?.stop();
    if (work !== undefined) await removeDir(work);
  });

  it('is refused with 502: the configured credentials are never sent there', async (t) => {
    const challenge = await rawRequest(upstream.url, 'GET', '/v2/team/app/manifests/v1');
    assert.equal(challenge.status, 401);
    const realm = /realm="([^"]+)"/.exec(String(challenge.headers['www-authenticate']))?.[1] ?? '';
    assert.match(realm, /^http:\/\/localhost:\d+\/token$/, 'the upstream names its realm on localhost');
    // The realm is reachable as named: a refusal below is the mirror's rule, not a dead address.
    const reachable = await fetch(`${realm}?service=${tokens.service}&scope=${encodeURIComponent('repository:probe/app:pull')}`);
    await reachable.arrayBuffer();
    assert.equal(tokens.requests().filter((record) => record.scope === 'repository:probe/app:pull').length, 1, 'the realm answers on localhost');
    const asked = tokens.requests().length;

    const config = await writeConfig(path.join(work, 'realm.yaml'), { url: upstream.url, credentials: { username: USER, password: PASSWORD } });
    const mirror = await startRegmirror({ configFile: config });
    t.after(() => mirror.destroy());
    for (const target of ['/v2/team/app/manifests/v1', `/v2/team/app/blobs/sha256:${'a'.repeat(64)}`]) {
      const refused = await rawRequest(mirror.url, 'GET', target);
      assertWireError(refused, 502, 'UPSTREAM_UNAVAILABLE');
      assert.match(refused.body.toString(), /token realm/, 'the client is told why');
    }
    assert.equal(tokens.requests().length, asked, 'the mirror never asked the realm');
    await assertSecretsKept(mirror, BASIC_SECRETS);
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
    // Cold blobs: a HEAD, a ranged GET (served from its fill), whole GETs (one via the CDN redirect).
    const headers = { authorization: CLIENT_BASIC };
    const head = await rawRequest(mirror.url, 'HEAD', `/v2/fake/app/blobs/${layerDigest}`, headers);
    assert.equal(head.status, 200);
    assert.equal(head.headers['content-length'], String(layer.length));
    // This upstream ignores Range: its 200 becomes the blob's fill, and the client gets its 206 from that.
    const ranged = await rawRequest(mirror.url, 'GET', `/v2/fake/app/blobs/${layerDigest}`, { ...headers, range: 'bytes=0-99' });
    assert.equal(ranged.status, 206, `ranged status ${ranged.status}`);
    assert.equal(ranged.headers['content-range'], `bytes 0-99/${layer.length}`);
    assert.ok(ranged.body.equals(layer.subarray(0, 100)), 'the first 100 bytes of the layer');
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
