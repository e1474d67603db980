// The v1 API behind the auth gate (when `auth` is configured): what each v1 request needs, checked on every request
// with the gate's logins, tokens and rules; the index's logins (GET /v1/users/) and its X-Docker-Token, which is a
// token of the gate's issuer. Refusals in docker-registry's shape: 401 with a Basic challenge, 403, 429.
// Loaded only with auth, as the gate is (auth-setup.ts).

import type { FastifyRequest } from 'fastify';
import type { Action } from '../auth/access-rules.js';
import type { VerifiedToken } from '../auth/tokens.js';
import type { V1RepositoryName } from '../store/layout.js';
import { V1Error } from '../v1/errors.js';
import { isImageId, parseImageJson, parseJson, parseRepositoryName, repositoryPath, type V1ImageResource, type V1Route } from '../v1/grammar.js';
import type { SourceContext, V1Mirror } from '../v1/mirror.js';
import type { AuthDialect, AuthGate, Caller, LoginNeeded, RepositoryScope } from './auth-gate.js';

/** What a v1 request needs of its caller. */
export type V1Access =
  /** Nothing: _ping, methods the route answers 405 anyway, index routes of a registry that is not standalone (404). */
  | { kind: 'open' }
  /** GET /v1/users/: Basic credentials, checked (docker login). */
  | { kind: 'login' }
  /** Account creation and change: users live in the htpasswd file, not here. */
  | { kind: 'no-accounts'; status: 401 | 403 }
  /** Search: anyone; it lists what the caller may pull. */
  | { kind: 'listing' }
  | { kind: 'repository'; name: V1RepositoryName; action: Action }
  | { kind: 'image-read'; id: string }
  | { kind: 'image-write'; id: string; resource: V1ImageResource };

/** What a v1 request needs, by its route and method (see docs/security.md#the-v1-api). */
export function v1Access(route: V1Route, method: string, standalone: boolean): V1Access {
  const byMethod = (name: V1RepositoryName, actions: Partial<Record<string, Action>>): V1Access => {
    const action = actions[method];
    return action === undefined ? { kind: 'open' } : { kind: 'repository', name, action };
  };
  switch (route.kind) {
    case 'ping':
      return { kind: 'open' };
    case 'search':
      return method === 'GET' ? { kind: 'listing' } : { kind: 'open' };
    case 'users':
      if (!standalone) return { kind: 'open' };
      return method === 'GET' ? { kind: 'login' } : method === 'POST' ? { kind: 'no-accounts', status: 401 } : { kind: 'open' };
    case 'user':
      return standalone && method === 'PUT' ? { kind: 'no-accounts', status: 403 } : { kind: 'open' };
    case 'image':
      if (method === 'PUT') return { kind: 'image-write', id: route.id, resource: route.resource };
      return method === 'GET' && route.resource !== 'checksum' ? { kind: 'image-read', id: route.id } : { kind: 'open' };
    case 'tags':
      return byMethod(route.name, { GET: 'pull', DELETE: 'delete' });
    case 'tag':
      return byMethod(route.name, { GET: 'pull', PUT: 'push', DELETE: 'delete' });
    case 'tag-json':
    case 'repository-json':
      return byMethod(route.name, { GET: 'pull' });
    case 'properties':
      return byMethod(route.name, { GET: 'pull', PUT: 'push' });
    case 'repository':
      // DELETE is the registry's; PUT (a push's start) the index's.
      return byMethod(route.name, standalone ? { PUT: 'push', DELETE: 'delete' } : { DELETE: 'delete' });
    case 'index-images':
      return standalone ? byMethod(route.name, { GET: 'pull', PUT: 'push', DELETE: 'delete' }) : { kind: 'open' };
    case 'auth':
      // docker-registry's index checked a token for the repository here.
      return standalone ? byMethod(route.name, { PUT: 'pull' }) : { kind: 'open' };
  }
}

/** A v1 request let in: its caller, and for an image write the repository whose push it is (the token's). */
export interface V1Admission {
  caller: Caller;
  pushFor?: V1RepositoryName;
}

const CHALLENGE = { 'www-authenticate': 'Basic realm="regmirror"' };

const LOGIN_MESSAGES: Record<LoginNeeded, string> = {
  'no-credentials': 'Requires authorization',
  'failed-login': 'Invalid user name or password',
  'invalid-token': 'Invalid token',
  'password-needed': 'Log in with a user name and password',
};

/** The gate's refusals in docker-registry's shape; tokens as docker 1.x sends them back: `Token signature=…,repository=…`. */
export const V1_DIALECT: AuthDialect = {
  tokenOf: (scheme, value) => (scheme === 'token' ? tokenSignature(value) : undefined),
  unauthorized: (_request, why) => new V1Error('UNAUTHORIZED', { message: LOGIN_MESSAGES[why], headers: CHALLENGE }),
  denied: (scope) => new V1Error('DENIED', { message: `Access denied: no ${scope.action} on ${scope.name}` }),
  tooManyLogins: (retryAfterSeconds) => new V1Error('TOO_MANY_LOGINS', { headers: { 'retry-after': String(retryAfterSeconds) } }),
};

/**
 * The signed token in a v1 Authorization value: its `signature=` field ('' when there is none). docker 1.x sends the
 * index's X-Docker-Token after `Token `, and that value starts with `Token ` itself: either way is read.
 */
export function tokenSignature(value: string): string {
  return /(?:^|[\s,])signature=([^,\s"]*)/.exec(value)?.[1] ?? '';
}

export class V1AuthGuard {
  constructor(
    private readonly gate: AuthGate,
    private readonly mirror: V1Mirror,
  ) {}

  /** Lets a request in, or throws its refusal (401, 403, 404 for an image the caller may not read, 429). */
  async admit(route: V1Route, request: FastifyRequest, standalone: boolean, context: SourceContext): Promise<V1Admission | undefined> {
    const access = v1Access(route, request.method, standalone);
    if (access.kind === 'open') return undefined;
    if (access.kind === 'no-accounts') {
      // 401 sends docker 1.x's `docker login` on to GET /v1/users/ with its credentials, as for any protected index.
      const message = 'Accounts are not created or changed here: users are managed by the administrator (htpasswd); log in with GET /v1/users/';
      throw access.status === 401 ? new V1Error('UNAUTHORIZED', { message, headers: CHALLENGE }) : new V1Error('DENIED', { message });
    }
    const caller = await this.gate.identify(request, V1_DIALECT);
    switch (access.kind) {
      case 'login':
        if (caller.token !== undefined) throw V1_DIALECT.unauthorized(request, 'password-needed', undefined);
        if (!caller.authenticated) throw V1_DIALECT.unauthorized(request, 'no-credentials', undefined);
        return { caller };
      case 'listing':
        return { caller };
      case 'repository':
        this.gate.authorize(request, caller, await this.scope(access.name, access.action), V1_DIALECT);
        return { caller };
      case 'image-read':
        if (await this.mayRead(caller, access.id, context)) return { caller };
        // As for an image that is not here: an id of another's image is not confirmed.
        throw caller.identity.kind === 'anonymous' ? V1_DIALECT.unauthorized(request, 'no-credentials', undefined) : new V1Error('IMAGE_NOT_FOUND');
      case 'image-write': {
        const pushFor = await this.pushRepository(request, caller);
        await this.requireOwnPush(pushFor, access.id);
        return { caller, pushFor };
      }
    }
  }

  /**
   * Whether the caller may read an image: it holds pull on a repository that holds the image (see
   * V1Mirror.holdsImage). A token names its repositories; without one, any repository here holding it counts.
   */
  async mayRead(caller: Caller, id: string, context: SourceContext): Promise<boolean> {
    const token = caller.token;
    if (token !== undefined) {
      for (const name of tokenRepositories(token, 'pull')) {
        if (this.gate.allows(caller, await this.scope(name, 'pull')) && (await this.mirror.holdsImage(name, id, { ...context, repository: repositoryPath(name) }))) return true;
      }
      // A push token reads what its user may pull anywhere here: docker asks for each image of the chain it pushes,
      // and a base image already here (under another repository) is then not pushed again.
      if (tokenRepositories(token, 'push').length === 0) return false;
    }
    for (const holder of await this.mirror.imageHolders(id)) {
      const name = repositoryNameOf(holder);
      if (name !== undefined && this.gate.granted(caller.identity, holder, await this.mirror.isPrivate(name)).has('pull')) return true;
    }
    return false;
  }

  /** A pushed image's parent is one its push holds or its pusher may read: else the image's ancestry would hand out another's. */
  async requireParent(admission: V1Admission, id: string, body: Buffer, context: SourceContext): Promise<void> {
    // An image json that does not parse is refused as it would be without auth.
    const { parent } = parseImageJson(body, id);
    if (parent !== undefined && !(await this.mayUse(admission, admission.pushFor, parent, context))) throw new V1Error('PARENT_UNKNOWN');
  }

  /** A tag points only at an image its repository holds or its pusher may read (the same as an image that is not here). */
  async requireTaggable(admission: V1Admission, name: V1RepositoryName, body: Buffer, context: SourceContext): Promise<void> {
    const parsed = parseJson(body);
    const id = parsed.ok ? parsed.value : undefined;
    if (typeof id === 'string' && isImageId(id) && !(await this.mayUse(admission, name, id, context))) throw new V1Error('IMAGE_NOT_FOUND');
  }

  /** Whether search shows the caller a repository: one it may pull. */
  async mayList(admission: V1Admission, listed: string): Promise<boolean> {
    const name = repositoryNameOf(listed);
    return name !== undefined && this.gate.granted(admission.caller.identity, repositoryPath(name), await this.mirror.isPrivate(name)).has('pull');
  }

  /**
   * The index's X-Docker-Token (and WWW-Authenticate) for a repository: docker-registry's shape, whose signature is a
   * token of the gate's issuer for the caller, holding what it may do of `access` there (a push reads too), for the
   * configured token lifetime. The repository and access beside the signature are for the client's eyes only.
   */
  async token(admission: V1Admission, name: V1RepositoryName, access: 'read' | 'write' | 'delete'): Promise<string> {
    const wanted: Action[] = access === 'read' ? ['pull'] : access === 'write' ? ['push', 'pull'] : ['delete', 'pull'];
    const actions: Action[] = [];
    for (const action of wanted) if (this.gate.allows(admission.caller, await this.scope(name, action))) actions.push(action);
    const path = repositoryPath(name);
    const issued = await this.gate.issueToken(admission.caller, [{ type: 'repository', name: path, actions }]);
    return `Token signature=${issued.token},repository="${path}",access=${access}`;
  }

  private async mayUse(admission: V1Admission, repository: V1RepositoryName | undefined, id: string, context: SourceContext): Promise<boolean> {
    if (repository !== undefined && (await this.mirror.holdsImage(repository, id, context))) return true;
    return this.mayRead(admission.caller, id, context);
  }

  /** The repository an image write belongs to: the one the caller's token holds push on (the index gave it for a push). */
  private async pushRepository(request: FastifyRequest, caller: Caller): Promise<V1RepositoryName> {
    const [name] = caller.token === undefined ? [] : tokenRepositories(caller.token, 'push');
    if (name !== undefined) {
      this.gate.authorize(request, caller, await this.scope(name, 'push'), V1_DIALECT);
      return name;
    }
    if (caller.identity.kind === 'anonymous') throw V1_DIALECT.unauthorized(request, 'no-credentials', undefined);
    throw new V1Error('DENIED', { message: 'Access denied: an image is pushed with the token the index gives for its repository (PUT /v1/repositories/<repo>/ with X-Docker-Token: true)' });
  }

  /** An image being pushed takes its layer and checksum only from its own push: that of the repository it was pushed for. */
  private async requireOwnPush(repository: V1RepositoryName, id: string): Promise<void> {
    const owner = await this.mirror.pushedFor(id);
    if (owner === undefined || owner === repositoryPath(repository)) return;
    if ((await this.mirror.imageState(id)) === 'in-progress') throw new V1Error('DENIED', { message: 'Access denied: this image is being pushed to another repository' });
  }

  private async scope(name: V1RepositoryName, action: Action): Promise<RepositoryScope> {
    const path = repositoryPath(name);
    return { name: path, catalogName: path, private: await this.mirror.isPrivate(name), action };
  }
}

/** The v1 repositories a token holds an action on. */
function tokenRepositories(token: VerifiedToken, action: Action): V1RepositoryName[] {
  const names: V1RepositoryName[] = [];
  for (const access of token.access) {
    const name = access.type === 'repository' && access.actions.includes(action) ? repositoryNameOf(access.name) : undefined;
    if (name !== undefined) names.push(name);
  }
  return names;
}

function repositoryNameOf(text: string): V1RepositoryName | undefined {
  try {
    return parseRepositoryName(text);
  } catch {
    return undefined;
  }
}
