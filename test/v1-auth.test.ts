// The v1 API with auth on, against the built regmirror: Docker 1.x logins (GET /v1/users/) checked against an
// htpasswd file made by apache2-utils, X-Docker-Token tokens signed by the mirror and checked on every request,
// per-repository rules for every v1 route, images served only to callers that may pull a repository holding them,
// private repositories, filtered search, failed logins rate-limited, and pushes and pulls as docker 1.x makes them.

import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { writeHtpasswd } from './support/htpasswd.js';
import { startRegmirror, type Regmirror } from './support/regmirror.js';
import { makeTempDir, removeDir } from './support/temp.js';
import { makeV1Chain, V1Client, v1Request, type V1Image, type V1Response } from './support/v1-client.js';

const KiB = 1024;
const PASSWORDS = { alice: 'alice-v1-secret-3e9d', bob: 'bob-v1-secret-5a1f', carol: 'carol-v1-secret-70b4', dave: 'dave-v1-secret-c2e8' };
type User = keyof typeof PASSWORDS;

function basic(user: User, password: string = PASSWORDS[user]): string {
  return `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}`;
}

function json(response: V1Response): unknown {
  return JSON.parse(response.body.toString('utf8')) as unknown;
}

/** A refusal in docker-registry's shape: the status and `{"error": "..."}`, never the content. */
function assertRefused(response: V1Response, status: number, what: string): void {
  assert.equal(response.status, status, `${what}: ${response.body.toString('utf8').slice(0, 300)}`);
  const body = json(response) as { error?: unknown };
  assert.equal(typeof body.error, 'string', `${what}: {"error": "..."}`);
  assert.equal(response.headers['content-type'], 'application/json', what);
  if (status === 401) assert.equal(response.headers['www-authenticate'], 'Basic realm="regmirror"', `${what}: the challenge`);
}

/** `Authorization: Token …` from an index answer's X-Docker-Token, as docker 1.x sends it back. */
function tokenAuthorization(response: V1Response): string {
  const token = String(response.headers['x-docker-token'] ?? '');
  assert.match(token, /^Token signature=[A-Za-z0-9._-]+,repository="[a-z0-9_/.-]+",access=(read|write|delete)$/);
  return `Token ${token.replace(/^Token /, '')}`;
}

/** The expiry (ms since epoch) of the JWT a v1 token's signature is. */
function expiryOf(authorization: string): number {
  const signature = /signature=([^,]+)/.exec(authorization)?.[1] ?? '';
  const payload = JSON.parse(Buffer.from(signature.split('.')[1] ?? '', 'base64url').toString('utf8')) as { exp: number };
  return payload.exp * 1000;
}

function accessRules(): string[] {
  return [
    'access:',
    '  - users: [alice]',
    '    repositories: ["team/*", "library/*"]',
    '    actions: [pull, push, delete]',
    '  - users: [bob]',
    '    repositories: ["team/*"]',
    '    actions: [pull]',
    '  - users: [carol]',
    '    repositories: ["carol/*"]',
    '    actions: [pull, push]',
    '  - users: [anonymous]',
    '    repositories: ["library/*"]',
    '    actions: [pull]',
  ];
}

/** A regmirror with the users above, their rules, and more `auth:` lines and top-level YAML lines. */
async function startWithAuth(work: string, name: string, yaml: { auth?: string[]; more?: string[] }): Promise<Regmirror> {
  const htpasswd = path.join(work, 'htpasswd');
  await writeHtpasswd(htpasswd, PASSWORDS);
  const config = path.join(work, `${name}.yaml`);
  await writeFile(config, ['auth:', `  htpasswd: ${htpasswd}`, ...(yaml.auth ?? []), ...accessRules(), ...(yaml.more ?? []), ''].join('\n'));
  return startRegmirror({ configFile: config });
}

describe('the v1 API with auth', { timeout: 300_000 }, () => {
  let work: string;
  let registry: Regmirror;
  const app = makeV1Chain('auth-app', [
    { size: 120 * KiB, seed: 8101 },
    { size: 0, seed: 8102 },
    { size: 60 * KiB + 5, seed: 8103 },
  ]);
  const base = makeV1Chain('auth-base', [{ size: 40 * KiB, seed: 8201 }]);
  const hidden = makeV1Chain('auth-hidden', [{ size: 30 * KiB, seed: 8301 }]);
  const [appBase, , appTop] = app as [V1Image, V1Image, V1Image];
  const url = (suffix: string): string => `${registry.url}${suffix}`;
  const get = (suffix: string, headers: Record<string, string> = {}): Promise<V1Response> => v1Request(url(suffix), { headers });
  const put = (suffix: string, body: Buffer, headers: Record<string, string> = {}): Promise<V1Response> =>
    v1Request(url(suffix), { method: 'PUT', body, headers: { 'content-type': 'application/json', ...headers } });
  const del = (suffix: string, headers: Record<string, string> = {}): Promise<V1Response> => v1Request(url(suffix), { method: 'DELETE', headers });
  /** The index's answer to a pull's first request, with its token. */
  const pullToken = async (repository: string, authorization?: string): Promise<string> => {
    const index = await get(`/v1/repositories/${repository}/images`, { 'x-docker-token': 'true', ...(authorization === undefined ? {} : { authorization }) });
    assert.equal(index.status, 200, index.body.toString('utf8'));
    return tokenAuthorization(index);
  };
  const pushToken = async (repository: string, user: User): Promise<string> => {
    const opened = await put(`/v1/repositories/${repository}/`, Buffer.from('[]'), { authorization: basic(user), 'x-docker-token': 'true' });
    assert.equal(opened.status, 200, opened.body.toString('utf8'));
    return tokenAuthorization(opened);
  };

  before(async () => {
    work = await makeTempDir('v1-auth-');
    registry = await startWithAuth(work, 'main', { auth: ['  failedLogins: {limit: 5, window: 1m}'] });
    const alice = new V1Client(registry.url, { authorization: basic('alice') });
    await alice.push('team/app', 'latest', app);
    await alice.push('library/base', 'latest', base);
    await alice.push('library/hidden', 'latest', hidden);
    const made = await put('/v1/repositories/library/hidden/properties', Buffer.from('{"access": "private"}'), { authorization: basic('alice') });
    assert.equal(made.status, 200, made.body.toString('utf8'));
  });

  after(async () => {
    await registry?.destroy();
    await removeDir(work);
  });

  it('serves _ping to anyone', async () => {
    const ping = await get('/v1/_ping');
    assert.equal(ping.status, 200);
    assert.equal(ping.headers['x-docker-registry-standalone'], 'True');
  });

  it('checks docker logins against htpasswd; accounts are not made here', async () => {
    const ok = await get('/v1/users/', { authorization: basic('alice') });
    assert.equal(ok.status, 200);
    assert.equal(ok.body.toString('utf8'), '"OK"');
    assertRefused(await get('/v1/users/', { authorization: basic('alice', 'wrong') }), 401, 'a wrong password');
    assertRefused(await get('/v1/users/', { authorization: `Basic ${Buffer.from('mallory:whatever').toString('base64')}` }), 401, 'an unknown user');
    assertRefused(await get('/v1/users/'), 401, 'no credentials');
    assertRefused(await get('/v1/users', { authorization: await pullToken('library/base') }), 401, 'a token is not a login');
    // docker 1.3's login POSTs the account first and, on a 401, logs in with GET /v1/users/.
    const created = await v1Request(url('/v1/users/'), { method: 'POST', body: Buffer.from('{"username": "mallory", "password": "x", "email": "m@x"}'), headers: { 'content-type': 'application/json' } });
    assertRefused(created, 401, 'account creation');
    assert.match((json(created) as { error: string }).error, /htpasswd/);
    assertRefused(await put('/v1/users/alice/', Buffer.from('{"password": "taken"}'), { authorization: basic('alice') }), 403, 'an account change');
    assert.equal((await get('/v1/users/', { authorization: basic('alice') })).status, 200, 'the password did not change');
  });

  it('pushes and pulls with credentials as docker 1.x does, byte for byte', async () => {
    const pulled = await new V1Client(registry.url, { authorization: basic('bob') }).pull('team/app', 'latest');
    assert.deepEqual(pulled.tags, { latest: appTop.id });
    assert.deepEqual(pulled.ancestry, [...app].reverse().map((image) => image.id));
    for (const [index, image] of app.entries()) {
      assert.ok(pulled.images[index]?.json.equals(image.json), `json ${index}`);
      assert.ok(pulled.images[index]?.layer.equals(image.layer), `layer ${index}`);
    }
    assert.match(String(pulled.indexHeaders['x-docker-token']), /^Token signature=[^,]+,repository="team\/app",access=read$/);
    assert.equal(pulled.indexHeaders['www-authenticate'], pulled.indexHeaders['x-docker-token']);
    await assert.rejects(new V1Client(registry.url).pull('team/app', 'latest'), /GET images: expected 200, got 401/);
    await assert.rejects(new V1Client(registry.url, { authorization: basic('carol') }).pull('team/app', 'latest'), /GET images: expected 200, got 403/);
  });

  it('lets anyone pull what an anonymous rule grants, with an anonymous token', async () => {
    const pulled = await new V1Client(registry.url).pull('library/base', 'latest');
    assert.ok(pulled.images[0]?.layer.equals(base[0]?.layer ?? Buffer.alloc(1)));
    const token = await pullToken('library/base');
    assert.equal((await get('/v1/repositories/library/base/tags', { authorization: token })).status, 200);
    // One-component names are library/NAME, as clients use them.
    assert.deepEqual(json(await get('/v1/repositories/base/tags', { authorization: token })), { latest: base[0]?.id });
    assertRefused(await get('/v1/repositories/team/app/tags'), 401, 'no rule grants team/app to anonymous callers');
    assertRefused(await get(`/v1/images/${appTop.id}/json`), 401, 'nor its images');
  });

  it('accepts a token only for its repository, and an image only under a repository holding it', async () => {
    const aliceBase = await pullToken('library/base', basic('alice'));
    assertRefused(await get('/v1/repositories/team/app/tags', { authorization: aliceBase }), 403, "a token for library/base on team/app's tags");
    assertRefused(await get(`/v1/images/${appTop.id}/json`, { authorization: aliceBase }), 404, "team/app's image under library/base's token");
    assertRefused(await get(`/v1/images/${appBase.id}/layer`, { authorization: aliceBase }), 404, "team/app's layer under library/base's token");
    const anonymousBase = await pullToken('library/base');
    assertRefused(await get(`/v1/images/${appTop.id}/layer`, { authorization: anonymousBase }), 401, "team/app's layer under an anonymous token");
    const aliceApp = await pullToken('team/app', basic('alice'));
    const layer = await get(`/v1/images/${appBase.id}/layer`, { authorization: aliceApp });
    assert.equal(layer.status, 200);
    assert.ok(layer.body.equals(appBase.layer));
    // Basic credentials straight on a registry route: any repository holding the image that the user may pull.
    assert.equal((await get(`/v1/images/${appTop.id}/ancestry`, { authorization: basic('bob') })).status, 200);
    assertRefused(await get(`/v1/images/${appTop.id}/ancestry`, { authorization: basic('carol') }), 404, 'carol may pull no holder');
  });

  it('refuses a tampered, forged or malformed token with a clean 401, never a 500', async () => {
    const token = await pullToken('library/base', basic('alice'));
    const signature = /signature=([^,]+)/.exec(token)?.[1] ?? '';
    const [header = '', payload = '', sig = ''] = signature.split('.');
    const claims = JSON.parse(Buffer.from(payload, 'base64url').toString('utf8')) as Record<string, unknown>;
    const widened = Buffer.from(JSON.stringify({ ...claims, access: [{ type: 'repository', name: 'team/app', actions: ['pull'] }] })).toString('base64url');
    const none = Buffer.from('{"alg":"none","typ":"JWT"}').toString('base64url');
    const cases: Array<[string, string]> = [
      ['a scope changed', `Token signature=${header}.${widened}.${sig},repository="team/app",access=read`],
      ['alg none', `Token signature=${none}.${widened}.,repository="team/app",access=read`],
      ['a made-up signature', 'Token signature=ABCDEFGHIJKLMNOP,repository="team/app",access=read'],
      ['no signature', 'Token repository="team/app",access=read'],
      ['an empty Token', 'Token'],
      ['an empty signature', 'Token signature=,repository="team/app",access=read'],
      ['garbage', 'Token ;;;"{}=,,=\\'],
      ['another scheme', `Bearer ${signature}`],
      ['a bad Basic', 'Basic !!!not-base64!!!'],
      ['a huge token', `Token signature=${'A'.repeat(12_000)}`],
    ];
    for (const [what, authorization] of cases) assertRefused(await get('/v1/repositories/team/app/tags', { authorization }), 401, what);
    assertRefused(await get(`/v1/images/${appTop.id}/layer`, { authorization: cases[0]?.[1] ?? '' }), 401, 'a changed scope on an image');
    // docker 1.x puts the index's whole X-Docker-Token after `Token `: that works too.
    assert.equal((await get('/v1/repositories/library/base/tags', { authorization: `Token ${token}` })).status, 200);
  });

  it('needs push for writes and delete for deletes', async () => {
    const bobs = await pullToken('team/app', basic('bob'));
    assertRefused(await put('/v1/repositories/team/app/', Buffer.from('[]'), { authorization: basic('bob'), 'x-docker-token': 'true' }), 403, "bob's push");
    assertRefused(await put('/v1/repositories/team/app/tags/bob', Buffer.from(JSON.stringify(appTop.id)), { authorization: bobs }), 403, "bob's tag");
    assertRefused(await put('/v1/repositories/team/app/tags/bob', Buffer.from(JSON.stringify(appTop.id)), { authorization: basic('bob') }), 403, "bob's tag with Basic");
    assertRefused(await del('/v1/repositories/team/app/tags/latest', { authorization: basic('bob') }), 403, "bob's tag delete");
    assertRefused(await del('/v1/repositories/team/app/', { authorization: basic('bob') }), 403, "bob's repository delete");
    assertRefused(await put('/v1/repositories/team/app/properties', Buffer.from('{"access": "private"}'), { authorization: basic('bob') }), 403, "bob's properties");
    const image = makeV1Chain('bob-image', [{ size: 1 * KiB, seed: 8401 }])[0] as V1Image;
    assertRefused(await put(`/v1/images/${image.id}/json`, image.json, { authorization: bobs }), 403, "bob's image json with a read token");
    assertRefused(await put(`/v1/images/${image.id}/json`, image.json, { authorization: basic('alice') }), 403, 'an image json without a push token');
    assertRefused(await put(`/v1/images/${image.id}/json`, image.json), 401, 'an anonymous image json');
    assertRefused(await put('/v1/repositories/library/base/tags/x', Buffer.from(JSON.stringify(base[0]?.id))), 401, 'an anonymous tag');
    assert.deepEqual(json(await get('/v1/repositories/team/app/tags', { authorization: bobs })), { latest: appTop.id }, 'nothing changed');
    const alices = await pushToken('team/app', 'alice');
    assert.equal((await put('/v1/repositories/team/app/tags/extra', Buffer.from(JSON.stringify(appTop.id)), { authorization: alices })).status, 200);
    assertRefused(await del('/v1/repositories/team/app/tags/extra', { authorization: alices }), 403, 'a push token does not delete');
    assert.equal((await del('/v1/repositories/team/app/tags/extra', { authorization: basic('alice') })).status, 200);
  });

  it('keeps an image of one repository out of a push to another', async () => {
    // carol may push carol/*, and knows team/app's image ids, but may not pull team/app.
    const carols = await pushToken('carol/tool', 'carol');
    assertRefused(await get(`/v1/images/${appTop.id}/json`, { authorization: carols }), 404, 'the existence check of a push');
    assertRefused(await put('/v1/repositories/carol/tool/tags/stolen', Buffer.from(JSON.stringify(appTop.id)), { authorization: carols }), 404, 'a tag on it');
    const child = makeV1Chain('carol-child', [{ size: 1 * KiB, seed: 8501 }])[0] as V1Image;
    const onTop = Buffer.from(JSON.stringify({ ...(JSON.parse(child.json.toString('utf8')) as object), parent: appTop.id }));
    assertRefused(await put(`/v1/images/${child.id}/json`, onTop, { authorization: carols }), 400, 'an image on top of it');
    // An image alice is pushing to team/app: carol's push cannot write its layer or checksum.
    const wip = makeV1Chain('alice-wip', [{ size: 2 * KiB, seed: 8502 }])[0] as V1Image;
    const alices = await pushToken('team/wip', 'alice');
    assert.equal((await put(`/v1/images/${wip.id}/json`, wip.json, { authorization: alices })).status, 200);
    assertRefused(await v1Request(url(`/v1/images/${wip.id}/layer`), { method: 'PUT', body: Buffer.from('not yours'), headers: { authorization: carols } }), 403, "carol's layer");
    assertRefused(await put(`/v1/images/${wip.id}/json`, wip.json, { authorization: carols }), 403, "carol's json over it");
    assert.equal((await v1Request(url(`/v1/images/${wip.id}/layer`), { method: 'PUT', body: wip.layer, headers: { authorization: alices } })).status, 200);
    assert.equal((await put(`/v1/images/${wip.id}/checksum`, Buffer.alloc(0), { authorization: alices, 'x-docker-checksum-payload': wip.checksum })).status, 200);
  });

  it('pushes an image on a base another repository holds, without pushing the base again', async () => {
    const derived = makeV1Chain('derived', [{ size: 3 * KiB, seed: 8601 }])[0] as V1Image;
    const parent = base[0] as V1Image;
    const onBaseJson = Buffer.from(JSON.stringify({ ...(JSON.parse(derived.json.toString('utf8')) as object), parent: parent.id }));
    const checksum = `sha256:${createHash('sha256').update(onBaseJson).update('\n').update(derived.layer).digest('hex')}`;
    const onBase: V1Image = { ...derived, parent: parent.id, json: onBaseJson, checksum };
    await registry.settle();
    const before = registry.accessEntries().length;
    await new V1Client(registry.url, { authorization: basic('alice') }).push('team/derived', 'latest', [parent, onBase]);
    await registry.settle();
    const requests = registry.accessEntries().slice(before);
    assert.ok(!requests.some((entry) => entry.method === 'PUT' && entry.path.includes(parent.id)), 'the base is not pushed again');
    assert.ok(requests.some((entry) => entry.method === 'GET' && entry.path === `/v1/images/${parent.id}/json` && entry.status === 200), 'its existence check was answered');
    // bob may pull team/*: the base now comes to him through team/derived's tag.
    const pulled = await new V1Client(registry.url, { authorization: basic('bob') }).pull('team/derived', 'latest');
    assert.deepEqual(pulled.ancestry, [onBase.id, parent.id]);
    assert.ok(pulled.images[0]?.layer.equals(parent.layer));
  });

  it('serves a private repository only to callers a rule names, whatever anonymous rules say', async () => {
    assert.deepEqual(json(await get('/v1/repositories/library/hidden/properties', { authorization: basic('alice') })), { access: 'private' });
    assertRefused(await get('/v1/repositories/library/hidden/images', { 'x-docker-token': 'true' }), 401, 'its image list');
    assertRefused(await get('/v1/repositories/library/hidden/tags'), 401, 'its tags');
    assertRefused(await get(`/v1/images/${hidden[0]?.id ?? ''}/layer`, { authorization: await pullToken('library/base') }), 401, 'its layer');
    await assert.rejects(new V1Client(registry.url).pull('library/hidden', 'latest'), /401/);
    const pulled = await new V1Client(registry.url, { authorization: basic('alice') }).pull('library/hidden', 'latest');
    assert.ok(pulled.images[0]?.layer.equals(hidden[0]?.layer ?? Buffer.alloc(1)));
  });

  it('lists in search only what the caller may pull', async () => {
    const names = async (authorization?: string): Promise<string[]> => {
      const answer = json(await get('/v1/search?q=', authorization === undefined ? {} : { authorization })) as { num_results: number; results: Array<{ name: string }> };
      assert.equal(answer.num_results, answer.results.length);
      return answer.results.map((result) => result.name);
    };
    assert.deepEqual(await names(), ['library/base']);
    assert.deepEqual(await names(basic('bob')), ['team/app', 'team/derived', 'team/wip']);
    assert.deepEqual(await names(basic('alice')), ['library/base', 'library/hidden', 'team/app', 'team/derived', 'team/wip']);
    assertRefused(await get('/v1/search?q=', { authorization: basic('bob', 'wrong') }), 401, 'a wrong password on search');
  });

  it('rate-limits failed logins per client and user, with Retry-After, and never logs a secret', async () => {
    let last: V1Response | undefined;
    for (let attempt = 0; attempt < 6; attempt++) last = await get('/v1/users/', { authorization: basic('dave', `wrong-${attempt}`) });
    assert.ok(last !== undefined);
    assertRefused(last, 429, 'the sixth failure');
    assert.ok(Number(last.headers['retry-after']) > 0);
    assertRefused(await get('/v1/users/', { authorization: basic('dave') }), 429, 'even the right password, until the window passes');
    assertRefused(await get('/v1/repositories/library/base/tags', { authorization: basic('dave') }), 429, 'on every route');
    assert.equal((await get('/v1/users/', { authorization: basic('bob') })).status, 200, 'another user is not locked out');
    const token = await pullToken('team/app', basic('alice'));
    await registry.settle();
    const output = registry.lines().join('\n');
    for (const secret of [...Object.values(PASSWORDS), /signature=([^,]+)/.exec(token)?.[1] ?? 'no token', Buffer.from(`alice:${PASSWORDS.alice}`).toString('base64')]) {
      assert.ok(!output.includes(secret), 'a secret reached the log');
    }
    assert.ok(output.includes('failed login'), 'failed logins are logged (without the secret)');
  });
});

describe('v1 tokens expire', { timeout: 120_000 }, () => {
  let work: string;
  let registry: Regmirror;

  before(async () => {
    work = await makeTempDir('v1-auth-expiry-');
    registry = await startWithAuth(work, 'expiry', { auth: ['  token: {lifetime: 3s}'] });
    const pushed = makeV1Chain('expiry', [{ size: 2 * KiB, seed: 8701 }]);
    await new V1Client(registry.url, { authorization: basic('alice') }).push('library/short', 'latest', pushed);
  });

  after(async () => {
    await registry?.destroy();
    await removeDir(work);
  });

  it('refuses a token past its lifetime (auth.token.lifetime)', async () => {
    const index = await v1Request(`${registry.url}/v1/repositories/library/short/images`, { headers: { authorization: basic('alice'), 'x-docker-token': 'true' } });
    const token = tokenAuthorization(index);
    const expiresAt = expiryOf(token);
    assert.ok(expiresAt - Date.now() <= 3_000, 'the configured lifetime');
    assert.equal((await v1Request(`${registry.url}/v1/repositories/library/short/tags`, { headers: { authorization: token } })).status, 200);
    await new Promise((resolve) => setTimeout(resolve, Math.max(0, expiresAt - Date.now()) + 1_100));
    assertRefused(await v1Request(`${registry.url}/v1/repositories/library/short/tags`, { headers: { authorization: token } }), 401, 'an expired token');
  });
});

describe('a v1 mirror with auth', { timeout: 120_000 }, () => {
  let work: string;
  let source: Regmirror;
  let mirror: Regmirror;
  const published = makeV1Chain('mirror-published', [
    { size: 20 * KiB, seed: 8801 },
    { size: 30 * KiB, seed: 8802 },
  ]);
  const internal = makeV1Chain('mirror-internal', [{ size: 25 * KiB, seed: 8803 }]);
  const get = (suffix: string, headers: Record<string, string> = {}): Promise<V1Response> => v1Request(`${mirror.url}${suffix}`, { headers });
  const pullToken = async (repository: string, authorization?: string): Promise<string> =>
    tokenAuthorization(await get(`/v1/repositories/${repository}/images`, { 'x-docker-token': 'true', ...(authorization === undefined ? {} : { authorization }) }));

  before(async () => {
    work = await makeTempDir('v1-auth-mirror-');
    // The source has no logins of its own: what the mirror serves of it, the mirror's rules decide.
    source = await startRegmirror();
    const pusher = new V1Client(source.url);
    await pusher.push('library/published', 'latest', published);
    await pusher.push('team/internal', 'latest', internal);
    mirror = await startWithAuth(work, 'mirror', { more: ['v1:', '  mirroring:', `    source: ${source.url}`] });
  });

  after(async () => {
    await mirror?.destroy();
    await source?.destroy();
    await removeDir(work);
  });

  it('serves a source repository as the rules grant it, its images through the source tags that reach them', async () => {
    const pulled = await new V1Client(mirror.url).pull('library/published', 'latest');
    for (const [index, image] of published.entries()) assert.ok(pulled.images[index]?.layer.equals(image.layer), `layer ${index}`);
    await assert.rejects(new V1Client(mirror.url).pull('team/internal', 'latest'), /401/);
    const bobs = await new V1Client(mirror.url, { authorization: basic('bob') }).pull('team/internal', 'latest');
    assert.ok(bobs.images[0]?.layer.equals(internal[0]?.layer ?? Buffer.alloc(1)));
    const internalId = internal[0]?.id ?? '';
    assertRefused(await get(`/v1/images/${internalId}/layer`, { authorization: await pullToken('library/published') }), 401, 'under an anonymous token of another repository');
    assertRefused(await get(`/v1/images/${internalId}/json`, { authorization: await pullToken('library/published', basic('alice')) }), 404, "under alice's token of another repository");
    const alices = await pullToken('team/internal', basic('alice'));
    assert.equal((await get(`/v1/images/${internalId}/ancestry`, { authorization: alices })).status, 200);
  });

  it('lists in search what the caller may pull, of the source too', async () => {
    const names = async (authorization?: string): Promise<string[]> =>
      ((json(await get('/v1/search?q=', authorization === undefined ? {} : { authorization })) as { results: Array<{ name: string }> }).results.map((result) => result.name));
    assert.deepEqual(await names(), ['library/published']);
    assert.deepEqual(await names(basic('bob')), ['team/internal']);
  });

  it('asks for the right before it says the mirror is read-only', async () => {
    assertRefused(await v1Request(`${mirror.url}/v1/repositories/team/internal/tags/x`, { method: 'PUT', body: Buffer.from('"x"') }), 401, 'an anonymous write');
    const refused = await v1Request(`${mirror.url}/v1/repositories/team/internal/tags/x`, { method: 'PUT', body: Buffer.from(JSON.stringify(internal[0]?.id)), headers: { authorization: basic('alice') } });
    assert.equal(refused.status, 405, refused.body.toString('utf8'));
  });
});
