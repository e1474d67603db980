import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { GENERATED_KEY_FILE, loadSigningKey, TokenIssuer } from './tokens.js';

const ACCESS = [{ type: 'repository' as const, name: 'team/app', actions: ['pull' as const] }];

function base64url(value: object): string {
  return Buffer.from(JSON.stringify(value)).toString('base64url');
}

describe('TokenIssuer', () => {
  let dir: string;
  let issuer: TokenIssuer;
  let clock = 1_800_000_000_000;

  before(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'regmirror-tokens-'));
    issuer = new TokenIssuer(await loadSigningKey(undefined, dir), { issuer: 'regmirror', service: 'svc', lifetimeMs: 300_000, now: () => clock });
  });

  after(() => rm(dir, { recursive: true, force: true }));

  it('generates its key once, private to the owner, and reads it back', async () => {
    const file = path.join(dir, GENERATED_KEY_FILE);
    assert.equal((await stat(file)).mode & 0o777, 0o600);
    const again = new TokenIssuer(await loadSigningKey(undefined, dir), { issuer: 'regmirror', service: 'svc', lifetimeMs: 300_000, now: () => clock });
    const issued = await issuer.issue('alice', ACCESS);
    assert.deepEqual((await again.verify(issued.token))?.access, ACCESS, 'the same key after a restart');
  });

  it('verifies what it issued: subject, access, expiry', async () => {
    const issued = await issuer.issue('alice', ACCESS);
    assert.equal(issued.expiresInSeconds, 300);
    const verified = await issuer.verify(issued.token);
    assert.deepEqual(verified, { subject: 'alice', access: ACCESS, expiresAt: clock + 300_000 });
  });

  it('refuses an expired token, alg none, another key, a tampered claim, another audience, garbage', async () => {
    const issued = await issuer.issue('alice', ACCESS);
    const [header = '', payload = '', signature = ''] = issued.token.split('.');
    const claims = JSON.parse(Buffer.from(payload, 'base64url').toString()) as Record<string, unknown>;
    const tampered = `${header}.${base64url({ ...claims, access: [{ type: 'repository', name: 'team/app', actions: ['pull', 'push'] }] })}.${signature}`;
    const none = `${base64url({ alg: 'none', typ: 'JWT' })}.${payload}.`;
    const otherKey = new TokenIssuer(generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey, { issuer: 'regmirror', service: 'svc', lifetimeMs: 300_000, now: () => clock });
    const foreign = (await otherKey.issue('alice', ACCESS)).token;
    const otherAudience = (await new TokenIssuer(await loadSigningKey(undefined, dir), { issuer: 'regmirror', service: 'elsewhere', lifetimeMs: 300_000, now: () => clock }).issue('alice', ACCESS)).token;
    for (const [label, token] of [
      ['tampered', tampered],
      ['alg none', none],
      ['another key', foreign],
      ['another audience', otherAudience],
      ['garbage', 'not.a.token'],
    ] as const) {
      assert.equal(await issuer.verify(token), undefined, label);
    }
    clock += 301_000;
    assert.equal(await issuer.verify(issued.token), undefined, 'expired, though verified before');
  });

  it('takes a configured P-256 key and refuses another kind', async () => {
    const p256 = path.join(dir, 'p256.pem');
    await writeFile(p256, generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ type: 'pkcs8', format: 'pem' }));
    assert.equal((await loadSigningKey(p256, dir)).asymmetricKeyType, 'ec');
    const rsa = path.join(dir, 'rsa.pem');
    await writeFile(rsa, generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ type: 'pkcs8', format: 'pem' }));
    await assert.rejects(loadSigningKey(rsa, dir), /EC P-256/);
    assert.ok((await readFile(p256, 'utf8')).includes('PRIVATE KEY'));
  });
});
