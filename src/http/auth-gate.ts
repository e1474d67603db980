// The auth gate (when `auth` is configured): who the caller is (Basic credentials checked against htpasswd, or a
// token this mirror issued), whether the rules (or the token) grant the action on the repository, and the token
// realm that docker's login flow asks (GET /auth/token). Each API speaks the gate's refusals in its own dialect:
// the v2 API's (here) as OCI errors — 401 with the Bearer challenge when the caller could authenticate, 403 DENIED
// when it did and has no right, 429 when it failed to log in too often —, the v1 API's in v1-auth.ts.
// Credentials are never logged, nor passed on to an upstream.

import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { Action, AccessRules, Identity } from '../auth/access-rules.js';
import type { HtpasswdFile } from '../auth/htpasswd.js';
import type { IssuedToken, TokenAccess, TokenIssuer, VerifiedToken } from '../auth/tokens.js';
import { RegistryError } from '../registry/errors.js';
import { sendRegistryError } from './wire-errors.js';

export interface AuthGateOptions {
  /** undefined: no logins here (tokens come from an external issuer); Basic credentials are then refused. */
  htpasswd: HtpasswdFile | undefined;
  rules: AccessRules;
  issuer: TokenIssuer;
  /** The `service` of the challenge and of issued tokens' audience. */
  service: string;
  /** The token endpoint's URL; undefined: this mirror's own /auth/token at the Host the client used. */
  realm: string | undefined;
  /** Failed logins allowed per client address and user name within the window, before 429. */
  failedLogins: { limit: number; windowMs: number };
  /**
   * A repository as a token request or the catalog names it (no query or Host to route by) → the name the rules
   * match and whether its upstream is private; undefined when it routes nowhere.
   */
  resolve: (name: string) => { catalogName: string; privateUpstream: boolean } | undefined;
  log: { warn(fields: object, message: string): void };
}

/** Who made a request: an identity, and the token it showed, if any (then the token's access is what it may do). */
export interface Caller {
  identity: Identity;
  token: VerifiedToken | undefined;
  /** Whether it showed credentials at all (a Basic login or a token, anonymous ones included). */
  authenticated: boolean;
}

export interface RepositoryScope {
  /** The repository as the client named it (what a token's access names). */
  name: string;
  /** The same as the rules see it (the catalog's name of where the request routes). */
  catalogName: string;
  /**
   * Its content is private (a private upstream's, or a v1 repository made private): anonymous callers get nothing,
   * whatever the rules for anonymous say.
   */
  private: boolean;
  action: Action;
}

/** Why a caller may still log in: it showed nothing, wrong credentials, a token not good here, or the wrong kind. */
export type LoginNeeded = 'no-credentials' | 'failed-login' | 'invalid-token' | 'password-needed';

/**
 * How one API speaks the gate: the token scheme it takes, and its refusals (the v2 API's are the gate's own; the
 * v1 API's are docker-registry's, in v1-auth.ts).
 */
export interface AuthDialect {
  /** The token an Authorization header of this scheme (lowercased) carries, or undefined when it is not this API's token scheme. */
  tokenOf(scheme: string, value: string): string | undefined;
  /** The caller may log in (a 401 with a challenge). */
  unauthorized(request: FastifyRequest, why: LoginNeeded, scope: RepositoryScope | undefined): Error;
  /** The caller logged in and has no right (a 403). */
  denied(scope: RepositoryScope): Error;
  tooManyLogins(retryAfterSeconds: number): Error;
}

const ANONYMOUS: Caller = { identity: { kind: 'anonymous' }, token: undefined, authenticated: false };
const MAX_SCOPES = 32;

export class AuthGate {
  /** Failed logins: `address user` → times of the failures within the window. */
  private readonly failures = new Map<string, number[]>();

  constructor(private readonly options: AuthGateOptions) {}

  /**
   * Reads the caller from the Authorization header: Basic credentials, or a token in the dialect's scheme. Wrong
   * credentials, an invalid token or another scheme are a 401; too many failed logins a 429.
   */
  async identify(request: FastifyRequest, dialect: AuthDialect = this.v2): Promise<Caller> {
    const header = request.headers.authorization;
    if (header === undefined || header === '') return ANONYMOUS;
    const space = header.search(/\s/);
    const scheme = (space === -1 ? header : header.slice(0, space)).toLowerCase();
    const value = space === -1 ? '' : header.slice(space).trim();
    if (scheme === 'basic') return this.login(request, value, dialect);
    const presented = dialect.tokenOf(scheme, value);
    if (presented === undefined) throw dialect.unauthorized(request, 'no-credentials', undefined);
    const token = presented === '' ? undefined : await this.options.issuer.verify(presented);
    if (token === undefined) throw dialect.unauthorized(request, 'invalid-token', undefined);
    const identity: Identity = token.subject === '' ? { kind: 'anonymous' } : { kind: 'user', name: token.subject };
    return { identity, token, authenticated: true };
  }

  /** Refuses a caller without the action on the repository: 401 when it could still log in, 403 when it did. */
  authorize(request: FastifyRequest, caller: Caller, scope: RepositoryScope, dialect: AuthDialect = this.v2): void {
    if (this.allows(caller, scope)) return;
    if (caller.identity.kind === 'anonymous') throw dialect.unauthorized(request, 'no-credentials', scope);
    throw dialect.denied(scope);
  }

  /** /v2/ itself: any caller that showed credentials (docker learns the realm from this 401). */
  requireAuthenticated(request: FastifyRequest, caller: Caller): void {
    if (!caller.authenticated) throw this.challenge(request, undefined);
  }

  /** /metrics and /_regmirror/* on the registry's listener: a user the rules make an admin. */
  requireAdmin(request: FastifyRequest, caller: Caller): void {
    if (caller.token === undefined && this.options.rules.isAdmin(caller.identity)) return;
    if (caller.identity.kind === 'anonymous' && caller.token === undefined) throw this.challenge(request, undefined, undefined, 'Basic');
    throw new RegistryError('DENIED', { message: 'the admin action is needed' });
  }

  /**
   * Whether the caller may: the rules must grant it, and a token must hold it too. (The rules are asked even for a
   * token: it names the repository as the client did, and the same name may route elsewhere with another `ns`.)
   */
  allows(caller: Caller, scope: RepositoryScope): boolean {
    const tokenHolds = caller.token === undefined || caller.token.access.some((access) => access.type === 'repository' && access.name === scope.name && access.actions.includes(scope.action));
    return tokenHolds && this.granted(caller.identity, scope.catalogName, scope.private).has(scope.action);
  }

  /**
   * What the rules grant an identity on a repository (by the rules' name): nothing of private content to an
   * anonymous caller. A token the caller holds is not asked (see allows).
   */
  granted(identity: Identity, catalogName: string, isPrivate: boolean): Set<Action> {
    return isPrivate && identity.kind === 'anonymous' ? new Set() : this.options.rules.granted(identity, catalogName);
  }

  /** Whether the catalog shows the caller a repository (by the catalog's name): those it may pull. */
  mayList(caller: Caller, catalogName: string): boolean {
    const resolved = this.options.resolve(catalogName);
    return resolved !== undefined && this.granted(caller.identity, catalogName, resolved.privateUpstream).has('pull');
  }

  /** A token of this issuer for the caller (its user, or anonymous) holding exactly `access`. */
  issueToken(caller: Caller, access: TokenAccess[]): Promise<IssuedToken> {
    return this.options.issuer.issue(caller.identity.kind === 'user' ? caller.identity.name : '', access);
  }

  /** GET /auth/token: a token holding what the rules grant of what was asked (nothing asked: a token for /v2/). */
  registerTokenRoute(app: FastifyInstance): void {
    // Logins live with the external issuer: its realm issues the tokens.
    if (this.options.htpasswd === undefined) return;
    app.get('/auth/token', async (request: FastifyRequest<{ Querystring: Record<string, string | string[] | undefined> }>, reply: FastifyReply) => {
      try {
        const caller = await this.identify(request);
        if (caller.token !== undefined) throw this.v2.unauthorized(request, 'password-needed', undefined);
        const service = request.query.service;
        if (service !== undefined && service !== this.options.service) throw new RegistryError('DENIED', { message: `this realm issues tokens for ${this.options.service}` });
        const access = this.grant(caller.identity, scopesOf(request.query.scope));
        const issued = await this.issueToken(caller, access);
        return reply.header('cache-control', 'no-store').send({
          token: issued.token,
          access_token: issued.token,
          expires_in: issued.expiresInSeconds,
          issued_at: issued.issuedAt.toISOString(),
        });
      } catch (error) {
        if (error instanceof RegistryError) return sendRegistryError(reply, error, request.method);
        throw error;
      }
    });
  }

  private grant(identity: Identity, scopes: string[]): TokenAccess[] {
    const access: TokenAccess[] = [];
    for (const scope of scopes.slice(0, MAX_SCOPES)) {
      // repository:NAME:ACTIONS — a name may hold colons only in a registry's port, so the actions follow the last one.
      const last = scope.lastIndexOf(':');
      const first = scope.indexOf(':');
      if (first <= 0 || last <= first) continue;
      const type = scope.slice(0, first);
      const name = scope.slice(first + 1, last);
      const asked = scope.slice(last + 1).split(',');
      // The catalog lists only what the caller may pull: asking for it is granted to anyone.
      if (type === 'registry' && name === 'catalog') {
        access.push({ type: 'registry', name: 'catalog', actions: ['pull'] });
        continue;
      }
      if (type !== 'repository') continue;
      const resolved = this.options.resolve(name);
      if (resolved === undefined) continue;
      const granted = this.granted(identity, resolved.catalogName, resolved.privateUpstream);
      const actions = asked.filter((action): action is Action => (action === 'pull' || action === 'push' || action === 'delete') && granted.has(action));
      // docker asks push,pull for a push: a token with what was granted, the rest refused when it is used.
      access.push({ type: 'repository', name, actions });
    }
    return access;
  }

  /** Checks Basic credentials, counting failures per client address and user name. */
  private async login(request: FastifyRequest, encoded: string, dialect: AuthDialect): Promise<Caller> {
    const decoded = Buffer.from(encoded, 'base64').toString('utf8');
    const colon = decoded.indexOf(':');
    const name = colon < 0 ? decoded : decoded.slice(0, colon);
    const password = colon < 0 ? '' : decoded.slice(colon + 1);
    const key = `${request.ip} ${name}`;
    const now = Date.now();
    const { limit, windowMs } = this.options.failedLogins;
    const recent = (this.failures.get(key) ?? []).filter((at) => at > now - windowMs);
    if (recent.length >= limit) {
      const retryAfter = Math.max(1, Math.ceil(((recent[0] ?? now) + windowMs - now) / 1000));
      throw dialect.tooManyLogins(retryAfter);
    }
    const htpasswd = this.options.htpasswd;
    if (name !== '' && htpasswd !== undefined && (await htpasswd.verify(name, password))) {
      this.failures.delete(key);
      return { identity: { kind: 'user', name }, token: undefined, authenticated: true };
    }
    recent.push(now);
    this.failures.set(key, recent);
    if (this.failures.size > 100_000) this.failures.clear();
    // The name is logged to find who is locked out; the password never.
    this.options.log.warn({ user: name.slice(0, 100), remote: request.ip, failures: recent.length }, 'failed login');
    throw dialect.unauthorized(request, 'failed-login', undefined);
  }

  /** The v2 API's refusals: OCI errors, and the Bearer challenge that leads docker to the token realm. */
  private readonly v2: AuthDialect = {
    tokenOf: (scheme, value) => (scheme === 'bearer' ? value : undefined),
    unauthorized: (request, why, scope) => {
      if (why === 'password-needed') return new RegistryError('UNAUTHORIZED', { message: 'log in with a password, not a token' });
      return this.challenge(request, scope, why === 'invalid-token' ? 'invalid_token' : undefined);
    },
    denied: (scope) => new RegistryError('DENIED', { detail: { name: scope.name, action: scope.action } }),
    tooManyLogins: (retryAfterSeconds) => new RegistryError('TOOMANYREQUESTS', { message: 'too many failed logins; retry later', headers: { 'retry-after': String(retryAfterSeconds) } }),
  };

  private challenge(request: FastifyRequest, scope: RepositoryScope | undefined, error?: string, scheme: 'Bearer' | 'Basic' = 'Bearer'): RegistryError {
    const realm = this.options.realm ?? `${request.protocol}://${request.headers.host ?? 'localhost'}/auth/token`;
    const parts =
      scheme === 'Basic'
        ? ['Basic realm="regmirror"']
        : [
            `Bearer realm="${realm}"`,
            `service="${this.options.service}"`,
            ...(scope === undefined ? [] : [`scope="repository:${scope.name}:${scope.action}"`]),
            ...(error === undefined ? [] : [`error="${error}"`]),
          ];
    return new RegistryError('UNAUTHORIZED', { headers: { 'www-authenticate': parts.join(',') }, detail: scope === undefined ? undefined : [{ Type: 'repository', Name: scope.name, Action: scope.action }] });
  }
}

function scopesOf(value: string | string[] | undefined): string[] {
  const values = value === undefined ? [] : Array.isArray(value) ? value : [value];
  return values.flatMap((entry) => entry.split(' ')).filter((entry) => entry !== '');
}
