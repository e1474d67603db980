// The auth gate of the v2 API (when `auth` is configured): who the caller is (Basic credentials checked against
// htpasswd, or a Bearer token this mirror issued), whether the rules (or the token) grant the action on the
// repository, and the token realm that docker's login flow asks (GET /auth/token). Refusals are OCI errors: 401
// with the Bearer challenge when the caller could authenticate, 403 DENIED when it did and has no right, 429 when
// it failed to log in too often. Credentials are never logged, nor passed on to an upstream.

import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { Action, AccessRules, Identity } from '../auth/access-rules.js';
import type { HtpasswdFile } from '../auth/htpasswd.js';
import type { TokenAccess, TokenIssuer, VerifiedToken } from '../auth/tokens.js';
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
  /** Its upstream is private: anonymous callers get nothing, whatever the rules for anonymous say. */
  privateUpstream: boolean;
  action: Action;
}

const ANONYMOUS: Caller = { identity: { kind: 'anonymous' }, token: undefined, authenticated: false };
const MAX_SCOPES = 32;

export class AuthGate {
  /** Failed logins: `address user` → times of the failures within the window. */
  private readonly failures = new Map<string, number[]>();

  constructor(private readonly options: AuthGateOptions) {}

  /** Reads the caller from the Authorization header; wrong credentials or an invalid token are a 401 (or 429). */
  async identify(request: FastifyRequest): Promise<Caller> {
    const header = request.headers.authorization;
    if (header === undefined || header === '') return ANONYMOUS;
    const [scheme = '', value = ''] = header.split(/\s+/, 2);
    if (scheme.toLowerCase() === 'basic') return this.login(request, value);
    if (scheme.toLowerCase() === 'bearer') {
      const token = await this.options.issuer.verify(value);
      if (token === undefined) throw this.unauthorized(request, undefined, 'invalid_token');
      const identity: Identity = token.subject === '' ? { kind: 'anonymous' } : { kind: 'user', name: token.subject };
      return { identity, token, authenticated: true };
    }
    throw this.unauthorized(request, undefined);
  }

  /** Refuses a caller without the action on the repository: 401 when it could still log in, 403 when it did. */
  authorize(request: FastifyRequest, caller: Caller, scope: RepositoryScope): void {
    if (this.allows(caller, scope)) return;
    if (caller.identity.kind === 'anonymous') throw this.unauthorized(request, scope);
    throw new RegistryError('DENIED', { detail: { name: scope.name, action: scope.action } });
  }

  /** /v2/ itself: any caller that showed credentials (docker learns the realm from this 401). */
  requireAuthenticated(request: FastifyRequest, caller: Caller): void {
    if (!caller.authenticated) throw this.unauthorized(request, undefined);
  }

  /** /metrics and /_regmirror/* on the registry's listener: a user the rules make an admin. */
  requireAdmin(request: FastifyRequest, caller: Caller): void {
    if (caller.token === undefined && this.options.rules.isAdmin(caller.identity)) return;
    if (caller.identity.kind === 'anonymous' && caller.token === undefined) throw this.unauthorized(request, undefined, undefined, 'Basic');
    throw new RegistryError('DENIED', { message: 'the admin action is needed' });
  }

  /**
   * Whether the caller may: the rules must grant it, and a token must hold it too. (The rules are asked even for a
   * token: it names the repository as the client did, and the same name may route elsewhere with another `ns`.)
   */
  allows(caller: Caller, scope: RepositoryScope): boolean {
    const tokenHolds = caller.token === undefined || caller.token.access.some((access) => access.type === 'repository' && access.name === scope.name && access.actions.includes(scope.action));
    if (!tokenHolds || (scope.privateUpstream && caller.identity.kind === 'anonymous')) return false;
    return this.options.rules.granted(caller.identity, scope.catalogName).has(scope.action);
  }

  /** Whether the catalog shows the caller a repository (by the catalog's name): those it may pull. */
  mayList(caller: Caller, catalogName: string): boolean {
    const resolved = this.options.resolve(catalogName);
    if (resolved === undefined || (resolved.privateUpstream && caller.identity.kind === 'anonymous')) return false;
    return this.options.rules.granted(caller.identity, catalogName).has('pull');
  }

  /** GET /auth/token: a token holding what the rules grant of what was asked (nothing asked: a token for /v2/). */
  registerTokenRoute(app: FastifyInstance): void {
    // Logins live with the external issuer: its realm issues the tokens.
    if (this.options.htpasswd === undefined) return;
    app.get('/auth/token', async (request: FastifyRequest<{ Querystring: Record<string, string | string[] | undefined> }>, reply: FastifyReply) => {
      try {
        const caller = await this.identify(request);
        if (caller.token !== undefined) throw new RegistryError('UNAUTHORIZED', { message: 'log in with a password, not a token' });
        const service = request.query.service;
        if (service !== undefined && service !== this.options.service) throw new RegistryError('DENIED', { message: `this realm issues tokens for ${this.options.service}` });
        const access = this.grant(caller.identity, scopesOf(request.query.scope));
        const issued = await this.options.issuer.issue(caller.identity.kind === 'user' ? caller.identity.name : '', access);
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
      const granted = resolved.privateUpstream && identity.kind === 'anonymous' ? new Set<Action>() : this.options.rules.granted(identity, resolved.catalogName);
      const actions = asked.filter((action): action is Action => (action === 'pull' || action === 'push' || action === 'delete') && granted.has(action));
      // docker asks push,pull for a push: a token with what was granted, the rest refused when it is used.
      access.push({ type: 'repository', name, actions });
    }
    return access;
  }

  /** Checks Basic credentials, counting failures per client address and user name. */
  private async login(request: FastifyRequest, encoded: string): Promise<Caller> {
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
      throw new RegistryError('TOOMANYREQUESTS', { message: 'too many failed logins; retry later', headers: { 'retry-after': String(retryAfter) } });
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
    throw this.unauthorized(request, undefined, undefined);
  }

  private unauthorized(request: FastifyRequest, scope: RepositoryScope | undefined, error?: string, scheme: 'Bearer' | 'Basic' = 'Bearer'): RegistryError {
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
