// The docker token flow with regmirror as its own issuer: short-lived ES256 JWTs whose `access` claim holds
// exactly the granted actions per repository (as distribution's token auth reads them). The signing key is
// generated once into the data directory (or given as a PEM file); verified tokens are remembered until they
// expire, so a client that sends its token on every request pays one signature check.

import { createPrivateKey, createPublicKey, generateKeyPairSync, randomUUID, type KeyObject } from 'node:crypto';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { jwtVerify, SignJWT } from 'jose';
import type { Action } from './access-rules.js';

/** The file, in the data directory, of the key generated when none is configured. */
export const GENERATED_KEY_FILE = path.join('auth', 'token-key.pem');
const ALGORITHM = 'ES256';
const REMEMBER_MAX = 10_000;

export interface TokenAccess {
  type: 'repository' | 'registry';
  /** The repository as the client names it in its requests. */
  name: string;
  actions: Action[];
}

export interface VerifiedToken {
  /** '' for an anonymous caller. */
  subject: string;
  access: TokenAccess[];
  expiresAt: number;
}

export interface IssuedToken {
  token: string;
  expiresInSeconds: number;
  issuedAt: Date;
}

/** Reads the configured key (PEM, an EC P-256 private key), or the one generated before, or generates and keeps one (mode 0600). */
export async function loadSigningKey(configured: string | undefined, dataDir: string): Promise<KeyObject> {
  if (configured !== undefined) return p256Key(createPrivateKey(await readFile(configured, 'utf8')), configured);
  const file = path.join(dataDir, GENERATED_KEY_FILE);
  try {
    return p256Key(createPrivateKey(await readFile(file, 'utf8')), file);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
  }
  const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  await mkdir(path.dirname(file), { recursive: true, mode: 0o700 });
  await writeFile(file, privateKey.export({ type: 'pkcs8', format: 'pem' }), { mode: 0o600, flag: 'wx' });
  return privateKey;
}

function p256Key(key: KeyObject, file: string): KeyObject {
  if (key.asymmetricKeyType !== 'ec' || key.asymmetricKeyDetails?.namedCurve !== 'prime256v1') throw new Error(`${file}: the token key must be an EC P-256 private key (ES256)`);
  return key;
}

export class TokenIssuer {
  private readonly publicKey: KeyObject;
  private readonly verified = new Map<string, VerifiedToken>();

  constructor(
    private readonly privateKey: KeyObject,
    private readonly options: {
      issuer: string;
      service: string;
      lifetimeMs: number;
      now?: () => number;
      /** Tokens of another issuer, accepted as well (auth.token.issuer). */
      external?: { verify(token: string, now: number): Promise<VerifiedToken | undefined> } | undefined;
    },
  ) {
    this.publicKey = createPublicKey(privateKey);
  }

  async issue(subject: string, access: TokenAccess[]): Promise<IssuedToken> {
    const issuedAt = new Date(this.now());
    const lifetimeSeconds = Math.max(1, Math.floor(this.options.lifetimeMs / 1000));
    const token = await new SignJWT({ access })
      .setProtectedHeader({ alg: ALGORITHM, typ: 'JWT' })
      .setIssuer(this.options.issuer)
      .setAudience(this.options.service)
      .setSubject(subject)
      .setIssuedAt(Math.floor(issuedAt.getTime() / 1000))
      .setNotBefore(Math.floor(issuedAt.getTime() / 1000) - 1)
      .setExpirationTime(Math.floor(issuedAt.getTime() / 1000) + lifetimeSeconds)
      .setJti(randomUUID())
      .sign(this.privateKey);
    return { token, expiresInSeconds: lifetimeSeconds, issuedAt };
  }

  /** The token's subject and access, or undefined when it is not one of ours, expired, or malformed. */
  async verify(token: string): Promise<VerifiedToken | undefined> {
    const known = this.verified.get(token);
    if (known !== undefined) {
      if (known.expiresAt > this.now()) return known;
      this.verified.delete(token);
      return undefined;
    }
    try {
      // Only ES256, our issuer and audience: `alg: none`, another key or a changed claim fail here.
      const { payload } = await jwtVerify(token, this.publicKey, {
        algorithms: [ALGORITHM],
        issuer: this.options.issuer,
        audience: this.options.service,
        currentDate: new Date(this.now()),
      });
      const access = readAccess(payload.access);
      if (access === undefined || typeof payload.exp !== 'number') return undefined;
      return this.remember(token, { subject: payload.sub ?? '', access, expiresAt: payload.exp * 1000 });
    } catch {
      const external = await this.options.external?.verify(token, this.now());
      return external === undefined ? undefined : this.remember(token, external);
    }
  }

  private remember(token: string, verified: VerifiedToken): VerifiedToken {
    if (this.verified.size >= REMEMBER_MAX) this.verified.clear();
    this.verified.set(token, verified);
    return verified;
  }

  private now(): number {
    return (this.options.now ?? Date.now)();
  }
}

/** distribution's `access` claim: [{type, name, actions}]; undefined when it is not that shape. */
export function readAccess(claim: unknown): TokenAccess[] | undefined {
  if (!Array.isArray(claim)) return undefined;
  const access: TokenAccess[] = [];
  for (const entry of claim as unknown[]) {
    if (typeof entry !== 'object' || entry === null) return undefined;
    const { type, name, actions } = entry as Record<string, unknown>;
    if ((type !== 'repository' && type !== 'registry') || typeof name !== 'string' || !Array.isArray(actions)) return undefined;
    access.push({ type, name, actions: actions.filter((action): action is Action => action === 'pull' || action === 'push' || action === 'delete' || action === 'admin') });
  }
  return access;
}
