import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { SignJWT } from 'jose';
import { ExternalTokens } from './external-tokens.js';
import { TokenIssuer } from './tokens.js';

const NOW = 1_800_000_000_000;
const ACCESS = [{ type: 'repository', name: 'team/app', actions: ['pull'] }];

describe('tokens of an external issuer', () => {
  let dir: string;
  let issuer: TokenIssuer;
  const login = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const publicPem = login.publicKey.export({ type: 'spki', format: 'pem' }).toString();

  const sign = (claims: { iss?: string; aud?: string; exp?: number }, key = login.privateKey, alg = 'RS256'): Promise<string> =>
    new SignJWT({ access: ACCESS })
      .setProtectedHeader({ alg })
      .setIssuer(claims.iss ?? 'https://login.example')
      .setAudience(claims.aud ?? 'regmirror')
      .setSubject('carol')
      .setExpirationTime(claims.exp ?? Math.floor(NOW / 1000) + 300)
      .sign(key);

  before(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'regmirror-external-'));
    const keyFile = path.join(dir, 'login.pem');
    await writeFile(keyFile, publicPem);
    const external = await ExternalTokens.open({ issuer: 'https://login.example', audience: 'regmirror', publicKeys: [keyFile], jwks: undefined });
    issuer = new TokenIssuer(generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey, { issuer: 'regmirror', service: 'regmirror', lifetimeMs: 300_000, now: () => NOW, external });
  });

  after(() => rm(dir, { recursive: true, force: true }));

  it('accepts a token the external issuer signed, with its subject and access', async () => {
    assert.deepEqual(await issuer.verify(await sign({})), { subject: 'carol', access: ACCESS, expiresAt: Math.floor(NOW / 1000) * 1000 + 300_000 });
  });

  it('refuses another issuer, another audience, an expired token, another key, and the public key used as an HMAC secret', async () => {
    const other = generateKeyPairSync('rsa', { modulusLength: 2048 });
    const cases: Array<[string, Promise<string>]> = [
      ['another issuer', sign({ iss: 'https://evil.example' })],
      ['another audience', sign({ aud: 'elsewhere' })],
      ['expired', sign({ exp: Math.floor(NOW / 1000) - 10 })],
      ['another key', sign({}, other.privateKey)],
      ['HS256 with the public key as secret', sign({}, new TextEncoder().encode(publicPem) as unknown as typeof login.privateKey, 'HS256')],
    ];
    for (const [label, token] of cases) assert.equal(await issuer.verify(await token), undefined, label);
  });

  it('reads a JWKS file, and refuses to start without keys', async () => {
    const jwks = path.join(dir, 'jwks.json');
    await writeFile(jwks, JSON.stringify({ keys: [{ ...login.publicKey.export({ format: 'jwk' }), kid: 'one' }] }));
    const fromJwks = await ExternalTokens.open({ issuer: 'https://login.example', audience: 'regmirror', publicKeys: [], jwks });
    assert.equal((await fromJwks.verify(await sign({}), NOW))?.subject, 'carol');
    await assert.rejects(ExternalTokens.open({ issuer: 'https://login.example', audience: 'regmirror', publicKeys: [], jwks: undefined }), /publicKeys or auth.token.jwks/);
  });
});
