// Tokens from an external issuer (auth.token.issuer), for sites whose logins live elsewhere: checked against
// its public keys (PEM files, or a JWKS file) with the same claims regmirror's own tokens carry — issuer,
// audience (auth.service), expiry, and distribution's `access` claim. Asymmetric algorithms only: a shared
// secret (HS*) or `none` is refused, so a public key can never be used as an HMAC secret.

import { createPublicKey } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { createLocalJWKSet, jwtVerify, type JSONWebKeySet, type JWK } from 'jose';
import { readAccess, type VerifiedToken } from './tokens.js';

const ALGORITHMS = ['ES256', 'ES384', 'ES512', 'RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'EdDSA'];

export interface ExternalIssuerOptions {
  issuer: string;
  audience: string;
  publicKeys: readonly string[];
  jwks: string | undefined;
}

export class ExternalTokens {
  private constructor(
    private readonly keys: ReturnType<typeof createLocalJWKSet>,
    private readonly options: ExternalIssuerOptions,
  ) {}

  /** Reads the keys; a file that cannot be read or parsed stops the start. */
  static async open(options: ExternalIssuerOptions): Promise<ExternalTokens> {
    const keys: JWK[] = [];
    for (const file of options.publicKeys) {
      const key = createPublicKey(await readFile(file, 'utf8'));
      keys.push(key.export({ format: 'jwk' }));
    }
    if (options.jwks !== undefined) {
      const set = JSON.parse(await readFile(options.jwks, 'utf8')) as JSONWebKeySet;
      if (!Array.isArray(set.keys)) throw new Error(`${options.jwks}: not a JWKS (no "keys" array)`);
      keys.push(...set.keys);
    }
    if (keys.length === 0) throw new Error('auth.token.issuer needs auth.token.publicKeys or auth.token.jwks');
    return new ExternalTokens(createLocalJWKSet({ keys }), options);
  }

  async verify(token: string, now: number): Promise<VerifiedToken | undefined> {
    try {
      const { payload } = await jwtVerify(token, this.keys, { algorithms: ALGORITHMS, issuer: this.options.issuer, audience: this.options.audience, currentDate: new Date(now) });
      const access = readAccess(payload.access ?? []);
      if (access === undefined || typeof payload.exp !== 'number') return undefined;
      return { subject: payload.sub ?? '', access, expiresAt: payload.exp * 1000 };
    } catch {
      return undefined;
    }
  }
}
