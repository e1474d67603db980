// Runs distribution 2.8.2 (Debian `docker-registry`) on a free loopback port as a real upstream or
// proxy, and reads its access log so tests can count the requests that reached it.
import { randomUUID } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { request } from 'node:http';
import { join } from 'node:path';
import { startOnFreePort, waitForHttp } from './ports.js';
import { startProcess, type ManagedProcess } from './processes.js';
import { makeTempDir, removeDir } from './temp.js';

export interface DistributionOptions {
  auth?: { htpasswd: { path: string } } | { token: { realm: string; service: string; issuer: string; rootCertBundle: string } };
  /** Pull-through cache mode: `proxy.remoteurl`. */
  proxyRemoteUrl?: string;
  /** Credentials distribution itself uses towards proxyRemoteUrl. */
  proxyCredentials?: { username: string; password: string };
  /** Defaults to a free port. */
  port?: number;
  /** Storage root; defaults to a fresh temp dir (removed by destroy()). */
  rootDir?: string;
}

/** One parsed access-log line. */
export interface AccessLogEntry {
  method: string;
  /** Request path without the query string, exactly as the client sent it (not URL-decoded). */
  path: string;
  /** The full request target (path plus `?query` if any). */
  target: string;
  status: number;
  /** Response body bytes written (0 for `-`). */
  bytes: number;
  userAgent: string;
}

export interface Distribution {
  /** http://127.0.0.1:PORT */
  url: string;
  port: number;
  rootDir: string;
  configPath: string;
  /** Every stdout and stderr line so far, across restarts. */
  accessLog(): string[];
  /** The access-log lines so far (stdout, Apache combined format), parsed. */
  accessEntries(): AccessLogEntry[];
  /** Access-log lines whose method equals `method` (case-insensitive) and whose path (query string excluded) matches. */
  countRequests(method: string, pathPattern: RegExp): number;
  /** Sum of response bytes over the same selection as countRequests. */
  bytesSent(method: string, pathPattern: RegExp): number;
  /**
   * distribution writes a request's access-log line after the response went out, so a client can finish
   * before its last lines arrive: settle() sends a marker request and waits for its line. Call it before
   * counting. The helper's own requests (this marker, readiness probes) are left out of accessEntries/counts.
   */
  settle(timeoutMs?: number): Promise<void>;
  /** SIGTERM, then SIGKILL after 5 s; resolves once exited. Keeps port, root dir and log. */
  stop(): Promise<void>;
  /** Starts again after stop(), on the same port and root dir; resolves once /v2/ answers. */
  start(): Promise<void>;
  /** stop(), then remove the directories this helper created (config dir, and rootDir unless it was given). */
  destroy(): Promise<void>;
}

// 127.0.0.1 - - [28/Nov/2026:19:56:20 +0000] "GET /v2/foo/blobs/sha256:… HTTP/1.1" 200 1234 "" "ua"
// Requests this helper makes itself (readiness probes, settle markers) carry this and are left out of the counts.
const HELPER_MARKER = 'regmirror-test-helper';
const ACCESS_LINE = /^\S+ \S+ \S+ \[[^\]]*\] "([A-Za-z]+) (\S+) HTTP\/[0-9.]+" (\d{3}) (\d+|-) "[^"]*" "([^"]*)"/;

export function parseAccessLine(line: string): AccessLogEntry | undefined {
  const match = ACCESS_LINE.exec(line);
  if (match === null) return undefined;
  const [, method = '', target = '', status = '0', bytes = '-', userAgent = ''] = match;
  const queryAt = target.indexOf('?');
  return {
    method: method.toUpperCase(),
    path: queryAt === -1 ? target : target.slice(0, queryAt),
    target,
    status: Number(status),
    bytes: bytes === '-' ? 0 : Number(bytes),
    userAgent,
  };
}

export function distributionConfig(port: number, rootDir: string, opts: DistributionOptions): Record<string, unknown> {
  const config: Record<string, unknown> = {
    version: '0.1',
    log: { level: 'info', formatter: 'text', accesslog: { disabled: false } },
    storage: { filesystem: { rootdirectory: rootDir }, delete: { enabled: true } },
    // A fixed secret keeps upload state valid across restart().
    http: { addr: `127.0.0.1:${port}`, secret: 'regmirror-test-distribution-secret' },
  };
  if (opts.auth !== undefined) {
    if ('htpasswd' in opts.auth) {
      config.auth = { htpasswd: { realm: 'regmirror-test', path: opts.auth.htpasswd.path } };
    } else {
      const { realm, service, issuer, rootCertBundle } = opts.auth.token;
      config.auth = { token: { realm, service, issuer, rootcertbundle: rootCertBundle } };
    }
  }
  if (opts.proxyRemoteUrl !== undefined) {
    config.proxy = { remoteurl: opts.proxyRemoteUrl, ...opts.proxyCredentials };
  }
  return config;
}

export async function startDistribution(opts: DistributionOptions = {}): Promise<Distribution> {
  const configDir = await makeTempDir('regmirror-distribution-config');
  const ownsRootDir = opts.rootDir === undefined;
  const rootDir = opts.rootDir ?? (await makeTempDir('regmirror-distribution-root'));
  const configPath = join(configDir, 'config.yml');
  // Fixed by the first start that came up; stop() and start() keep it.
  let port = 0;
  let url = '';
  const earlierRunsLines: string[] = [];
  let current: ManagedProcess | undefined;

  const accessLog = (): string[] => [...earlierRunsLines, ...(current?.lines() ?? [])];
  const accessEntries = (): AccessLogEntry[] =>
    accessLog().flatMap((line) => {
      const entry = parseAccessLine(line);
      return entry === undefined || entry.target.includes(HELPER_MARKER) ? [] : [entry];
    });
  const select = (method: string, pathPattern: RegExp): AccessLogEntry[] => {
    const wanted = method.toUpperCase();
    return accessEntries().filter((entry) => {
      pathPattern.lastIndex = 0; // a /g or /y pattern would otherwise carry state between lines
      return entry.method === wanted && pathPattern.test(entry.path);
    });
  };

  const stop = async (): Promise<void> => {
    const running = current;
    if (running === undefined) return;
    await running.stop('SIGTERM', 5_000);
    earlierRunsLines.push(...running.lines());
    current = undefined;
  };

  const start = async (): Promise<void> => {
    if (current !== undefined) throw new Error(`distribution on ${url} is already running`);
    const proc = startProcess('docker-registry', ['serve', configPath]);
    current = proc;
    const died = new AbortController();
    void proc.exited.then((code) => died.abort(new Error(`docker-registry exited with ${String(code)}`)));
    try {
      // Its own "listening" line first: another server already on the port would answer /v2/ as well.
      await proc.waitForLine(new RegExp(`listening on 127\\.0\\.0\\.1:${port}"?(\\s|$)`), 15_000);
      await waitForHttp(`${url}/v2/?${HELPER_MARKER}=ready`, 15_000, { signal: died.signal });
    } catch (err) {
      await stop();
      const reason = err instanceof Error ? err.message : String(err);
      throw new Error(`distribution on ${url} did not come up: ${reason}\n${accessLog().slice(-20).join('\n')}`, { cause: err });
    }
  };

  /** The first start: distribution must be told its port, so a port taken meanwhile means another one. */
  const startOn = async (candidate: number): Promise<void> => {
    port = candidate;
    url = `http://127.0.0.1:${candidate}`;
    earlierRunsLines.length = 0;
    // JSON is YAML; distribution reads it as such.
    await writeFile(configPath, `${JSON.stringify(distributionConfig(candidate, rootDir, opts), null, 2)}\n`);
    await start();
  };

  const settle = async (timeoutMs = 10_000): Promise<void> => {
    const running = current;
    if (running === undefined) return; // stop() already waited for all output
    const marker = `${HELPER_MARKER}=settle-${randomUUID()}`;
    const sawMarker = running.waitForLine(new RegExp(`"[A-Z]+ /v2/\\?${marker} `), timeoutMs);
    const answered = new Promise<void>((resolve, reject) => {
      const req = request(`${url}/v2/?${marker}`, { agent: false, timeout: timeoutMs }, (res) => {
        res.resume();
        res.once('end', resolve);
        res.once('error', reject);
      });
      req.once('timeout', () => req.destroy(new Error(`settle: ${url} did not answer within ${timeoutMs} ms`)));
      req.once('error', reject);
      req.end();
    });
    await Promise.all([answered, sawMarker]);
  };

  const destroy = async (): Promise<void> => {
    await stop();
    await removeDir(configDir);
    if (ownsRootDir) await removeDir(rootDir);
  };

  try {
    if (opts.port === undefined) await startOnFreePort(startOn);
    else await startOn(opts.port);
  } catch (err) {
    await removeDir(configDir);
    if (ownsRootDir) await removeDir(rootDir);
    throw err;
  }

  return {
    url,
    port,
    rootDir,
    configPath,
    accessLog,
    accessEntries,
    countRequests: (method, pathPattern) => select(method, pathPattern).length,
    bytesSent: (method, pathPattern) => select(method, pathPattern).reduce((sum, entry) => sum + entry.bytes, 0),
    settle,
    stop,
    start,
    destroy,
  };
}
