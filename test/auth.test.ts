// Client authentication and per-repository rules with real parts: an htpasswd file made by apache2-utils, a
// regmirror with access rules in front of distribution 2.8.2 (plain http on loopback; TLS is its own test).
// skopeo and podman log in through the docker token flow; anonymous pulls where a rule allows them; refusals
// in the OCI shape, never the content; failed logins rate-limited; credentials and tokens never logged.

import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { SignJWT } from 'jose';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { startDistribution, type Distribution } from './support/distribution.js';
import { writeHtpasswd } from './support/htpasswd.js';
import { buildImageLayout, MEDIA_TYPES, pushLayout, type BuiltLayout } from './support/images.js';
import { makePodman } from './support/podman.js';
import { runRegmirror, startRegmirror, type Regmirror } from './support/regmirror.js';
import { copyToOci, inspectRaw } from './support/skopeo.js';
import { makeTempDir, removeDir } from './support/temp.js';

const PASSWORDS = { alice: 'alice-secret-7f3a', bob: 'bob-secret-91c2', root: 'root-secret-44d0' };
const ACCEPT = [MEDIA_TYPES.ociManifest, MEDIA_TYPES.ociIndex].join(', ');
/** A login service elsewhere, whose tokens the mirror accepts too (auth.token.issuer). */
const EXTERNAL_LOGIN = generateKeyPairSync('ec', { namedCurve: 'P-384' });

function externalToken(subject: string, repository: string, key = EXTERNAL_LOGIN.privateKey): Promise<string> {
  return new SignJWT({ access: [{ type: 'repository', name: repository, actions: ['pull'] }] })
    .setProtectedHeader({ alg: 'ES384' })
    .setIssuer('https://login.test')
    .setAudience('regmirror')
    .setSubject(subject)
    .setIssuedAt()
    .setExpirationTime('5m')
    .sign(key);
}

function basic(user: keyof typeof PASSWORDS, password: string = PASSWORDS[user]): string {
  return `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}`;
}

interface OciErrors {
  errors: Array<{ code: string; message: string }>;
}

describe('client authentication and access rules', { timeout: 300_000 }, () => {
  let upstream: Distribution;
  let mirror: Regmirror;
  let work: string;
  let app: BuiltLayout;
  let publicImage: BuiltLayout;

  before(async () => {
    work = await makeTempDir('auth-');
    upstream = await startDistribution();
    app = await buildImageLayout(path.join(work, 'app'), 'v1', [{ layers: [{ size: 60_000, seed: 6101 }] }]);
    publicImage = await buildImageLayout(path.join(work, 'public'), 'v1', [{ layers: [{ size: 50_000, seed: 6102 }] }]);
    await pushLayout(app, `127.0.0.1:${upstream.port}/team/app:v1`);
    await pushLayout(publicImage, `127.0.0.1:${upstream.port}/library/public:v1`);
    // The same image as team/app under a public name: a repository that really holds its blobs.
    await pushLayout(app, `127.0.0.1:${upstream.port}/library/shared:v1`);
    const htpasswd = path.join(work, 'htpasswd');
    await writeHtpasswd(htpasswd, PASSWORDS);
    const loginKey = path.join(work, 'login.pem');
    await writeFile(loginKey, EXTERNAL_LOGIN.publicKey.export({ type: 'spki', format: 'pem' }));
    const config = path.join(work, 'regmirror.yaml');
    await writeFile(
      config,
      [
        'upstreams:',
        `  - url: ${upstream.url}`,
        // The same registry again under another name, private: anonymous rules do not reach it.
        `  - registry: private.example`,
        `    url: ${upstream.url}`,
        '    private: true',
        'auth:',
        `  htpasswd: ${htpasswd}`,
        '  failedLogins: {limit: 5, window: 1m}',
        `  token: {issuer: "https://login.test", publicKeys: [${loginKey}]}`,
        'access:',
        '  - users: [alice]',
        '    repositories: ["**"]',
        '    actions: [pull]',
        '  - users: ["*"]',
        '    repositories: ["library/*"]',
        '    actions: [pull]',
        '  - users: [anonymous]',
        '    repositories: ["library/*"]',
        '    actions: [pull]',
        '  - users: [anonymous]',
        '    repositories: ["private.example/**"]',
        '    actions: [pull]',
        '  - users: [root]',
        '    repositories: ["**"]',
        '    actions: [admin]',
        '',
      ].join('\n'),
    );
    mirror = await startRegmirror({ configFile: config });
  });

  after(async () => {
    await mirror?.destroy();
    await upstream?.destroy();
    await removeDir(work);
  });

  async function token(authorization: string | undefined, scope: string): Promise<{ status: number; token: string | undefined }> {
    const response = await fetch(`${mirror.url}/auth/token?service=regmirror&scope=${encodeURIComponent(scope)}`, { headers: authorization === undefined ? {} : { authorization } });
    const body = (await response.json()) as { token?: string };
    return { status: response.status, token: body.token };
  }

  async function get(pathname: string, authorization?: string): Promise<Response> {
    return fetch(`${mirror.url}${pathname}`, { headers: { accept: ACCEPT, ...(authorization === undefined ? {} : { authorization }) } });
  }

  async function assertRefused(response: Response, status: number, code: string): Promise<void> {
    assert.equal(response.status, status);
    const body = (await response.json()) as OciErrors;
    assert.equal(body.errors[0]?.code, code);
  }

  it('lets skopeo log in and pull what the rules grant, byte for byte', async () => {
    const direct = await inspectRaw(`docker://127.0.0.1:${upstream.port}/team/app:v1`);
    const mirrored = await inspectRaw(`docker://${mirror.host}/team/app:v1`, { creds: `alice:${PASSWORDS.alice}` });
    assert.ok(direct.equals(mirrored));
    await copyToOci(`docker://${mirror.host}/team/app:v1`, path.join(work, 'alice-app'), 'v1', { creds: `alice:${PASSWORDS.alice}` });
  });

  it('lets anyone pull what an anonymous rule grants, and no more', async () => {
    await copyToOci(`docker://${mirror.host}/library/public:v1`, path.join(work, 'anonymous-public'), 'v1');
    await assert.rejects(copyToOci(`docker://${mirror.host}/team/app:v1`, path.join(work, 'anonymous-app'), 'v1'));
    await assert.rejects(copyToOci(`docker://${mirror.host}/team/app:v1`, path.join(work, 'bob-app'), 'v1', { creds: `bob:${PASSWORDS.bob}` }));
  });

  it('lets podman log in and pull', async () => {
    const podman = await makePodman({ registries: [{ prefix: mirror.host, location: mirror.host, insecure: true, mirrors: [] }] });
    try {
      await podman.podman(['login', '--tls-verify=false', '--username', 'alice', '--password', PASSWORDS.alice, mirror.host]);
      await podman.pull(`${mirror.host}/team/app:v1`);
      const image = await podman.inspectImage(`${mirror.host}/team/app:v1`);
      assert.equal(`sha256:${image.id}`, app.images[0]?.configDigest);
      await assert.rejects(podman.podman(['login', '--tls-verify=false', '--username', 'alice', '--password', 'wrong', mirror.host]));
    } finally {
      await podman.destroy();
    }
  });

  it('challenges a caller without credentials with the token realm, in the OCI shape', async () => {
    const base = await get('/v2/');
    assert.equal(base.headers.get('www-authenticate'), `Bearer realm="http://${mirror.host}/auth/token",service="regmirror"`);
    await assertRefused(base, 401, 'UNAUTHORIZED');
    const manifest = await get('/v2/team/app/manifests/v1');
    assert.equal(manifest.headers.get('www-authenticate'), `Bearer realm="http://${mirror.host}/auth/token",service="regmirror",scope="repository:team/app:pull"`);
    await assertRefused(manifest, 401, 'UNAUTHORIZED');
    const blob = await get(`/v2/team/app/blobs/${app.images[0]?.layerDigests[0] ?? ''}`);
    await assertRefused(blob, 401, 'UNAUTHORIZED');
  });

  it('refuses a wrong password (401), a user without the right (403), and never sends the content', async () => {
    await assertRefused(await get('/v2/team/app/manifests/v1', basic('alice', 'wrong')), 401, 'UNAUTHORIZED');
    await assertRefused(await get('/v2/team/app/manifests/v1', basic('bob')), 403, 'DENIED');
    const granted = await get('/v2/team/app/manifests/v1', basic('alice'));
    assert.equal(granted.status, 200, 'Basic credentials straight on /v2/ work too');
    assert.equal((await token(basic('alice', 'wrong'), 'repository:team/app:pull')).status, 401);
  });

  it('issues tokens holding only what the rules grant, and refuses tokens for anything else', async () => {
    const bobs = await token(basic('bob'), 'repository:team/app:pull repository:library/public:pull');
    assert.equal(bobs.status, 200);
    const bobToken = `Bearer ${bobs.token ?? ''}`;
    assert.equal((await get('/v2/library/public/manifests/v1', bobToken)).status, 200);
    await assertRefused(await get('/v2/team/app/manifests/v1', bobToken), 403, 'DENIED');
    const alices = await token(basic('alice'), 'repository:library/public:pull');
    await assertRefused(await get('/v2/team/app/manifests/v1', `Bearer ${alices.token ?? ''}`), 403, 'DENIED', );
    // A token for one repository, with its claims changed to another: the signature no longer holds.
    const [header = '', payload = '', signature = ''] = (alices.token ?? '').split('.');
    const claims = JSON.parse(Buffer.from(payload, 'base64url').toString()) as Record<string, unknown>;
    const tampered = `${header}.${Buffer.from(JSON.stringify({ ...claims, access: [{ type: 'repository', name: 'team/app', actions: ['pull'] }] })).toString('base64url')}.${signature}`;
    const refused = await get('/v2/team/app/manifests/v1', `Bearer ${tampered}`);
    assert.match(refused.headers.get('www-authenticate') ?? '', /error="invalid_token"/);
    await assertRefused(refused, 401, 'UNAUTHORIZED');
    const none = `${Buffer.from('{"alg":"none","typ":"JWT"}').toString('base64url')}.${payload}.`;
    await assertRefused(await get('/v2/library/public/manifests/v1', `Bearer ${none}`), 401, 'UNAUTHORIZED');
    const otherService = await fetch(`${mirror.url}/auth/token?service=elsewhere&scope=repository:library/public:pull`, { headers: { authorization: basic('alice') } });
    assert.equal(otherService.status, 403);
  });

  it('serves a digest only under a repository that holds it, asking the upstream once for one it does not know', async () => {
    const image = app.images[0];
    assert.ok(image !== undefined);
    const layer = image.layerDigests[0] ?? '';
    await copyToOci(`docker://${mirror.host}/team/app:v1`, path.join(work, 'alice-again'), 'v1', { creds: `alice:${PASSWORDS.alice}` });
    const anonymous = await token(undefined, 'repository:library/public:pull repository:library/shared:pull');
    const bearer = `Bearer ${anonymous.token ?? ''}`;
    // Cached for team/app; library/public does not hold it (the upstream says 404): never the content.
    await assertRefused(await get(`/v2/library/public/blobs/${layer}`, bearer), 404, 'BLOB_UNKNOWN');
    await assertRefused(await get(`/v2/library/public/manifests/${image.manifestDigest}`, bearer), 404, 'MANIFEST_UNKNOWN');
    // library/shared does hold it: confirmed once with a HEAD, then served from the cache.
    await upstream.settle();
    const headsBefore = upstream.countRequests('HEAD', new RegExp(`^/v2/library/shared/blobs/${layer}$`));
    for (let attempt = 0; attempt < 2; attempt++) {
      const shared = await get(`/v2/library/shared/blobs/${layer}`, bearer);
      assert.equal(shared.status, 200);
      assert.equal(Buffer.from(await shared.arrayBuffer()).length, image.layerSizes[0]);
    }
    await upstream.settle();
    assert.equal(upstream.countRequests('HEAD', new RegExp(`^/v2/library/shared/blobs/${layer}$`)) - headsBefore, 1, 'asked once, then linked');
    assert.equal(upstream.countRequests('GET', new RegExp(`^/v2/library/shared/blobs/${layer}$`)), 0, 'the bytes came from the cache');
  });

  it('serves nothing of a private upstream to anonymous callers, whatever the rules for anonymous say', async () => {
    const anonymous = await token(undefined, 'repository:private.example/team/app:pull');
    const refused = await get('/v2/private.example/team/app/manifests/v1', `Bearer ${anonymous.token ?? ''}`);
    await assertRefused(refused, 401, 'UNAUTHORIZED');
    assert.equal((await get('/v2/private.example/team/app/manifests/v1', basic('alice'))).status, 200, 'a rule naming the caller grants it');
    const anonymousCatalog = await token(undefined, 'registry:catalog:*');
    const listed = (await (await get('/v2/_catalog', `Bearer ${anonymousCatalog.token ?? ''}`)).json()) as { repositories: string[] };
    assert.ok(!listed.repositories.some((name) => name.startsWith('private.example/')), listed.repositories.join(' '));
  });

  it('accepts tokens of the external issuer, as the rules grant their subject', async () => {
    assert.equal((await get('/v2/team/app/manifests/v1', `Bearer ${await externalToken('alice', 'team/app')}`)).status, 200);
    await assertRefused(await get('/v2/team/app/manifests/v1', `Bearer ${await externalToken('bob', 'team/app')}`), 403, 'DENIED');
    const forged = await externalToken('alice', 'team/app', generateKeyPairSync('ec', { namedCurve: 'P-384' }).privateKey);
    await assertRefused(await get('/v2/team/app/manifests/v1', `Bearer ${forged}`), 401, 'UNAUTHORIZED');
  });

  it('lists in the catalog only what the caller may pull', async () => {
    const anonymous = await token(undefined, 'registry:catalog:*');
    const listed = (await (await get('/v2/_catalog', `Bearer ${anonymous.token ?? ''}`)).json()) as { repositories: string[] };
    assert.deepEqual(listed.repositories, ['library/public', 'library/shared']);
    const alices = (await (await get('/v2/_catalog', basic('alice'))).json()) as { repositories: string[] };
    assert.deepEqual(alices.repositories, ['library/public', 'library/shared', 'private.example/team/app', 'team/app']);
  });

  it('keeps /metrics and /_regmirror/* for admins', async () => {
    const anonymous = await get('/metrics');
    assert.equal(anonymous.status, 401);
    assert.match(anonymous.headers.get('www-authenticate') ?? '', /^Basic /);
    assert.equal((await get('/_regmirror/status', basic('alice'))).status, 403);
    assert.equal((await get('/metrics', basic('root'))).status, 200);
  });

  it('rate-limits failed logins per client and user, with Retry-After', async () => {
    let last: Response | undefined;
    for (let attempt = 0; attempt < 6; attempt++) last = await get('/v2/', basic('root', `wrong-${attempt}`));
    assert.ok(last !== undefined);
    assert.equal(last.status, 429);
    assert.ok(Number(last.headers.get('retry-after')) > 0);
    await assertRefused(last, 429, 'TOOMANYREQUESTS');
    assert.equal((await get('/v2/', basic('root'))).status, 429, 'even the right password, until the window passes');
    assert.equal((await get('/v2/', basic('alice'))).status, 200, 'another user is not locked out');
  });

  it('lets regmirror prefetch log in, or pull anonymously what anonymous callers may', async () => {
    const withCreds = await runRegmirror(['prefetch', '--server', mirror.url, '--creds', `alice:${PASSWORDS.alice}`, 'team/app:v1']);
    assert.equal(withCreds.code, 0, withCreds.stderr);
    const fromEnvironment = await runRegmirror(['prefetch', '--server', mirror.url, 'team/app:v1'], { env: { REGMIRROR_PREFETCH_CREDS: `alice:${PASSWORDS.alice}` } });
    assert.equal(fromEnvironment.code, 0, fromEnvironment.stderr);
    const anonymous = await runRegmirror(['prefetch', '--server', mirror.url, 'library/public:v1', 'team/app:v1']);
    assert.equal(anonymous.code, 1);
    assert.match(anonymous.stderr, /team\/app:v1.*401/);
    assert.doesNotMatch(anonymous.stderr, /library\/public/, 'the image anonymous callers may pull was pulled');
  });

  it('never logs a password or a token', async () => {
    const issued = await token(basic('alice'), 'repository:team/app:pull');
    await get('/v2/team/app/manifests/v1', `Bearer ${issued.token ?? ''}`);
    await mirror.settle();
    const output = mirror.lines().join('\n');
    for (const secret of [...Object.values(PASSWORDS), issued.token ?? 'no token', Buffer.from(`alice:${PASSWORDS.alice}`).toString('base64')]) {
      assert.ok(!output.includes(secret), 'a secret reached the log');
    }
    assert.ok(output.includes('failed login'), 'failed logins are logged (without the secret)');
  });
});
