// Builds the auth gate from the settings (htpasswd, the token key, an external issuer, the rules), and the v1 API's
// guard over it. Its own module, loaded by app.ts only when `auth` is configured, so an instance without auth does not
// load jose and bcryptjs.

import type { Logger } from 'pino';
import { AccessRules } from '../auth/access-rules.js';
import { ExternalTokens } from '../auth/external-tokens.js';
import { HtpasswdFile } from '../auth/htpasswd.js';
import { loadSigningKey, TokenIssuer } from '../auth/tokens.js';
import { ConfigError } from '../config/config-error.js';
import type { Settings } from '../config/load.js';
import type { RepositoryPolicy } from '../mirror/repository-policy.js';
import type { V1Mirror } from '../v1/mirror.js';
import { AuthGate } from './auth-gate.js';
import { V1AuthGuard } from './v1-auth.js';

export async function createAuthGate(auth: NonNullable<Settings['auth']>, dataDir: string, policy: RepositoryPolicy, log: Logger): Promise<AuthGate> {
  const file = auth.htpasswd;
  const htpasswd =
    file === undefined
      ? undefined
      : await HtpasswdFile.open(file, log).catch((error: unknown) => {
          throw new ConfigError(`invalid configuration: auth.htpasswd: cannot read ${file}: ${(error as Error).message}`, { cause: error });
        });
  const issuerSettings = auth.externalIssuer;
  const external =
    issuerSettings === undefined
      ? undefined
      : await ExternalTokens.open({ ...issuerSettings, audience: auth.service }).catch((error: unknown) => {
          throw new ConfigError(`invalid configuration: auth.token: ${(error as Error).message}`, { cause: error });
        });
  const key = await loadSigningKey(auth.tokenKey, dataDir).catch((error: unknown) => {
    throw new ConfigError(`invalid configuration: auth.token.key: ${(error as Error).message}`, { cause: error });
  });
  return new AuthGate({
    htpasswd,
    rules: new AccessRules(auth.access),
    issuer: new TokenIssuer(key, { issuer: 'regmirror', service: auth.service, lifetimeMs: auth.tokenLifetimeMs, external }),
    service: auth.service,
    realm: auth.realm,
    failedLogins: auth.failedLogins,
    resolve: (name) => {
      try {
        const resolved = policy.resolve(name, {});
        return { catalogName: resolved.catalogName, privateUpstream: resolved.private };
      } catch {
        return undefined;
      }
    },
    log,
  });
}

/** The v1 API's checks over the gate (v1-auth.ts), made here so that app.ts loads neither without auth. */
export function createV1Guard(gate: AuthGate, mirror: V1Mirror): V1AuthGuard {
  return new V1AuthGuard(gate, mirror);
}
