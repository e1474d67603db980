// A token server for distribution's `auth.token`: checks Basic credentials and answers with an
// RS256 JWT (x5c header = its openssl-made self-signed certificate) granting the scopes asked for.
import { execFile } from 'node:child_process';
import { createPrivateKey, randomUUID, sign, X509Certificate, type KeyObject } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { promisify } from 'node:util';

const execFileAsync = promisify(execFile);

export interface TokenRequestRecord {
  method: string;
  authorization?: string;
  /** All requested scopes joined by a space (clients may repeat `scope=`). */
  scope?: string;
  service?: string;
  /** The user the request authenticated as, if it did. */
  user?: string;
  status: number;
}

export interface TokenServer {
  url: string;
  /** url + '/token' */
  realm: string;
  service: string;
  issuer: string;
  /** PEM certificate whose key signs the tokens: distribution's auth.token.rootcertbundle. */
  certPath: string;
  requests(): TokenRequestRecord[];
  /** Every token issued so far, in order (tests grep for them where they must never appear). */
  issuedTokens(): string[];
  /** The lifetime (expires_in and the JWT's exp) of tokens issued from now on. */
  setTokenTtl(seconds: number): void;
  stop(): Promise<void>;
}

export interface TokenServerOptions {
  /** Where the key and certificate are written. */
  dir: string;
  users: Record<string, string>;
  /** Default 300. */
  tokenTtlSeconds?: number;
  service?: string;
  issuer?: string;
  /** Grant `pull` (only) to requests without credentials, like Docker Hub; default false (401). */
  allowAnonymousPull?: boolean;
}

interface Grant {
  type: string;
  name: string;
  actions: string[];
}

function base64url(data: Buffer | string): string {
  return Buffer.from(data).toString('base64url');
}

/** `repository:team/app:pull,push` → grant; the name may itself contain colons. */
function parseScope(scope: string): Grant | undefined {
  const first = scope.indexOf(':');
  const last = scope.lastIndexOf(':');
  if (first === -1 || last === first) return undefined;
  return {
    type: scope.slice(0, first),
    name: scope.slice(first + 1, last),
    actions: scope.slice(last + 1).split(',').filter((action) => action !== ''),
  };
}

function basicUser(authorization: string | undefined, users: Record<string, string>): string | undefined {
  const match = /^Basic\s+(\S+)$/i.exec(authorization ?? '');
  if (match?.[1] === undefined) return undefined;
  const decoded = Buffer.from(match[1], 'base64').toString('utf8');
  const colon = decoded.indexOf(':');
  if (colon === -1) return undefined;
  const user = decoded.slice(0, colon);
  return Object.hasOwn(users, user) && users[user] === decoded.slice(colon + 1) ? user : undefined;
}

async function makeKeyAndCert(dir: string): Promise<{ key: KeyObject; certDerBase64: string; certPath: string }> {
  const keyPath = join(dir, 'token-signing.key');
  const certPath = join(dir, 'token-signing.crt');
  await execFileAsync(
    'openssl',
    ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', keyPath, '-out', certPath, '-days', '3650', '-subj', '/CN=regmirror-test-token-issuer', '-sha256'],
    { timeout: 60_000, killSignal: 'SIGKILL' },
  );
  const key = createPrivateKey(await readFile(keyPath));
  const certDerBase64 = new X509Certificate(await readFile(certPath)).raw.toString('base64');
  return { key, certDerBase64, certPath };
}

export async function startTokenServer(opts: TokenServerOptions): Promise<TokenServer> {
  const service = opts.service ?? 'regmirror-test-registry';
  const issuer = opts.issuer ?? 'regmirror-test-issuer';
  let ttl = opts.tokenTtlSeconds ?? 300;
  const { key, certDerBase64, certPath } = await makeKeyAndCert(opts.dir);
  const records: TokenRequestRecord[] = [];
  const issued: string[] = [];

  const issueToken = (subject: string, grants: Grant[]): { token: string; issuedAt: Date } => {
    const now = Math.floor(Date.now() / 1000);
    const header = { typ: 'JWT', alg: 'RS256', x5c: [certDerBase64] };
    const claims = { iss: issuer, sub: subject, aud: service, exp: now + ttl, nbf: now - 10, iat: now, jti: randomUUID(), access: grants };
    const signingInput = `${base64url(JSON.stringify(header))}.${base64url(JSON.stringify(claims))}`;
    const signature = sign('sha256', Buffer.from(signingInput), key);
    return { token: `${signingInput}.${base64url(signature)}`, issuedAt: new Date(now * 1000) };
  };

  const answer = (res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void => {
    const bytes = Buffer.from(JSON.stringify(body));
    res.writeHead(status, { 'content-type': 'application/json', 'content-length': String(bytes.length), ...headers });
    res.end(bytes);
  };

  /** GET ?service=&scope= with Basic auth (docker token protocol), or POST form grant_type=password (OAuth2, containerd). */
  const handle = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const url = new URL(req.url ?? '/', 'http://127.0.0.1');
    let params = url.searchParams;
    let user: string | undefined;
    let anonymous = false;
    if (req.method === 'POST') {
      const chunks: Buffer[] = [];
      for await (const chunk of req) chunks.push(chunk as Buffer);
      params = new URLSearchParams(Buffer.concat(chunks).toString('utf8'));
      const username = params.get('username') ?? '';
      if (params.get('grant_type') === 'password' && Object.hasOwn(opts.users, username) && opts.users[username] === params.get('password')) {
        user = username;
      }
    } else {
      user = basicUser(req.headers.authorization, opts.users);
      anonymous = req.headers.authorization === undefined;
    }
    const scopes = params.getAll('scope').flatMap((scope) => scope.split(' ')).filter((scope) => scope !== '');
    const record: TokenRequestRecord = { method: req.method ?? '', status: 0 };
    if (req.headers.authorization !== undefined) record.authorization = req.headers.authorization;
    if (scopes.length > 0) record.scope = scopes.join(' ');
    const requestedService = params.get('service');
    if (requestedService !== null) record.service = requestedService;
    if (user !== undefined) record.user = user;
    records.push(record);

    if (url.pathname !== '/token' || (req.method !== 'GET' && req.method !== 'POST')) {
      record.status = 404;
      answer(res, 404, { error: 'not found' });
      return;
    }
    const anonymousPull = user === undefined && anonymous && opts.allowAnonymousPull === true;
    if (user === undefined && !anonymousPull) {
      record.status = 401;
      answer(res, 401, { errors: [{ code: 'UNAUTHORIZED', message: 'authentication required' }] }, { 'www-authenticate': 'Basic realm="regmirror-test-token"' });
      return;
    }
    const grants = scopes.flatMap((scope) => {
      const grant = parseScope(scope);
      if (grant === undefined) return [];
      return [anonymousPull ? { ...grant, actions: grant.actions.filter((action) => action === 'pull') } : grant];
    });
    const { token, issuedAt } = issueToken(user ?? '', grants);
    issued.push(token);
    record.status = 200;
    answer(res, 200, { token, access_token: token, expires_in: ttl, issued_at: issuedAt.toISOString() });
  };

  const server = createServer((req, res) => {
    handle(req, res).catch((err: unknown) => {
      if (!res.headersSent) answer(res, 500, { error: err instanceof Error ? err.message : String(err) });
      else res.destroy();
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const { port } = server.address() as AddressInfo;
  const url = `http://127.0.0.1:${port}`;

  return {
    url,
    realm: `${url}/token`,
    service,
    issuer,
    certPath,
    requests: () => records.map((record) => ({ ...record })),
    issuedTokens: () => [...issued],
    setTokenTtl: (seconds) => {
      ttl = seconds;
    },
    stop: () =>
      new Promise<void>((resolve, reject) => {
        server.close((err) => (err ? reject(err) : resolve()));
        server.closeAllConnections();
      }),
  };
}
