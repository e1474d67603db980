// Authentication to one upstream: the Bearer token challenge flow (tokens cached per scope until they
// expire, one token request in flight per scope) and Basic credentials. Credentials go only to the
// upstream and to the token realm it names, and to a realm over plain http only when the upstream itself is
// plain http on the same host name (a registry and its token service side by side): an upstream cannot send
// them to another host in clear text, nor downgrade an https upstream's to http. (Credentials configured for
// a plain-http upstream travel in clear text to it anyway: that is the operator's choice.)

import { SingleFlight } from '../flight/single-flight.js';
import { basicAuthorization, type Credentials } from '../upstream/credentials.js';

export interface Challenge {
  scheme: 'bearer' | 'basic';
  params: Record<string, string>;
}

/** Parses one WWW-Authenticate challenge: `Bearer realm="…",service="…",scope="…"`. */
export function parseChallenge(header: string | undefined): Challenge | undefined {
  if (!header) return undefined;
  const match = /^\s*(\w+)\s*(.*)$/s.exec(header);
  if (!match) return undefined;
  const scheme = match[1]?.toLowerCase();
  if (scheme !== 'bearer' && scheme !== 'basic') return undefined;
  const params: Record<string, string> = {};
  for (const param of (match[2] ?? '').matchAll(/([a-zA-Z_]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]*))/g)) {
    const name = param[1]?.toLowerCase();
    if (name) params[name] = (param[2] ?? param[3] ?? '').replace(/\\(.)/g, '$1');
  }
  return { scheme, params };
}

interface CachedToken {
  token: string;
  expiresAt: number;
}

/** A token service's answer, read by the caller with its deadline and size cap. */
export interface TokenAnswer {
  status: number;
  body: Buffer;
}

/** Asks a token realm (already checked by the caller's address policy when it connects). */
export type TokenFetch = (url: URL, headers: Record<string, string>) => Promise<TokenAnswer>;

/** Tokens are used until shortly before they expire (5 s, or a quarter of a shorter lifetime), so one in flight never lapses mid-request. */
const EXPIRY_MARGIN_MS = 5_000;
const DEFAULT_TOKEN_LIFETIME_S = 60;

export class UpstreamAuth {
  /** What the upstream asked for last time, so later requests authenticate without a 401 round trip. */
  private learned: Challenge | undefined;
  private readonly tokens = new Map<string, CachedToken>();
  private readonly tokenRequests = new SingleFlight<string, CachedToken>();

  constructor(
    private readonly credentials: Credentials | undefined,
    /** The upstream's URL: a plain-http token realm gets the credentials only from a plain-http upstream on the same host name. */
    private readonly upstream: URL,
    private readonly fetchToken: TokenFetch,
    private readonly now: () => number = Date.now,
  ) {}

  /** The Authorization header for a request in this scope, if the upstream is known to want one. */
  async authorization(scope: string): Promise<string | undefined> {
    const challenge = this.learned;
    if (challenge === undefined) return undefined;
    if (challenge.scheme === 'basic') return this.basic();
    try {
      const token = await this.token(challenge, scope);
      return `Bearer ${token.token}`;
    } catch (error) {
      // A realm that does not work is not kept: the next request meets the upstream's challenge afresh.
      if (this.learned === challenge) this.learned = undefined;
      throw error;
    }
  }

  /**
   * Learns from a 401. Returns true when a retry may succeed (a new scheme or a token not yet tried),
   * false when the upstream refused what we already sent. Throws RealmRefusedError for a challenge that cannot
   * be answered (a realm that is not an http(s) URL, or where the credentials may not go), which is not learned.
   */
  acceptChallenge(header: string | undefined, scope: string, sentAuthorization: string | undefined): boolean {
    const challenge = parseChallenge(header);
    if (challenge === undefined) return false;
    if (challenge.scheme === 'basic') {
      this.learned = challenge;
      return this.credentials !== undefined && sentAuthorization !== this.basic();
    }
    if (challenge.params.realm === undefined) return false;
    this.checkRealm(challenge.params.realm);
    this.learned = { scheme: 'bearer', params: { realm: challenge.params.realm, service: challenge.params.service ?? '' } };
    const key = this.tokenKey(this.learned, scope);
    const cached = this.tokens.get(key);
    if (cached !== undefined && sentAuthorization === `Bearer ${cached.token}`) {
      // The token we sent was refused: forget it; a fresh one is worth one more try unless the scope is denied.
      this.tokens.delete(key);
      return challenge.params.error !== 'insufficient_scope';
    }
    return true;
  }

  private basic(): string | undefined {
    return this.credentials === undefined ? undefined : basicAuthorization(this.credentials);
  }

  /** Throws RealmRefusedError for a realm regmirror will not ask. */
  private checkRealm(realm: string): void {
    let url: URL;
    try {
      url = new URL(realm);
    } catch {
      throw new RealmRefusedError('names a token realm that is not a URL');
    }
    if (url.protocol !== 'https:' && url.protocol !== 'http:') throw new RealmRefusedError('names a token realm that is not an http(s) URL');
    if (this.credentials !== undefined && url.protocol === 'http:' && (this.upstream.protocol !== 'http:' || url.hostname !== this.upstream.hostname)) {
      throw new RealmRefusedError('names a plain-http token realm on another host or behind an https upstream; the configured credentials are not sent there');
    }
  }

  private tokenKey(challenge: Challenge, scope: string): string {
    return `${challenge.params.realm ?? ''}\n${challenge.params.service ?? ''}\n${scope}`;
  }

  private async token(challenge: Challenge, scope: string): Promise<CachedToken> {
    const key = this.tokenKey(challenge, scope);
    const cached = this.tokens.get(key);
    if (cached !== undefined && cached.expiresAt > this.now()) return cached;
    return this.tokenRequests.run(key, async () => {
      const token = await this.requestToken(challenge, scope);
      this.tokens.set(key, token);
      return token;
    });
  }

  private async requestToken(challenge: Challenge, scope: string): Promise<CachedToken> {
    const url = new URL(challenge.params.realm ?? '');
    if (challenge.params.service) url.searchParams.set('service', challenge.params.service);
    url.searchParams.set('scope', scope);
    const headers: Record<string, string> = { accept: 'application/json' };
    const basic = this.basic();
    if (basic !== undefined) headers.authorization = basic;
    const response = await this.fetchToken(url, headers);
    if (response.status !== 200) throw new TokenError(`token service answered ${response.status}`, response.status);
    const body = parseTokenAnswer(response.body);
    const token = typeof body.token === 'string' ? body.token : typeof body.access_token === 'string' ? body.access_token : undefined;
    if (token === undefined || token === '') throw new TokenError('token service sent no token', 502);
    const lifetime = typeof body.expires_in === 'number' && body.expires_in > 0 ? body.expires_in : DEFAULT_TOKEN_LIFETIME_S;
    // A short-lived token (a few seconds) keeps most of its life: a fixed margin would expire it on arrival.
    const margin = Math.min(EXPIRY_MARGIN_MS, (lifetime * 1000) / 4);
    return { token, expiresAt: this.now() + lifetime * 1000 - margin };
  }
}

function parseTokenAnswer(bytes: Buffer): { token?: unknown; access_token?: unknown; expires_in?: unknown } {
  let parsed: unknown;
  try {
    parsed = JSON.parse(bytes.toString('utf8'));
  } catch {
    throw new TokenError('token service sent an answer that is not JSON', 502);
  }
  if (typeof parsed !== 'object' || parsed === null) throw new TokenError('token service sent an answer that is not a JSON object', 502);
  return parsed;
}

export class TokenError extends Error {
  override readonly name: string = 'TokenError';
  constructor(
    message: string,
    readonly status: number,
  ) {
    super(message);
  }
}

/** A token realm regmirror will not ask (the message completes "upstream X …" for the client). */
export class RealmRefusedError extends TokenError {
  override readonly name = 'RealmRefusedError';
  constructor(message: string) {
    super(message, 502);
  }
}
