// Runs the built regmirror (`node dist/cli.js serve`) on a loopback port it binds itself (:0, read back from
// its log) for integration tests, and reads its JSON access log and /metrics so tests can prove what it served.

import { execFile } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import path from 'node:path';
import { getText, waitForHttp, type ClientTls } from './ports.js';
import { startProcess, type ManagedProcess } from './processes.js';
import { makeTempDir, removeDir } from './temp.js';

const SETTLE_MARKER = 'regmirror-test-settle';
const CLI = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', '..', 'dist', 'cli.js');
/** How regmirror is meant to run (README, `npm start`, the cli's shebang): a small young generation, see docs/operations.md. */
export const REGMIRROR_NODE_FLAGS = ['--max-semi-space-size=3'];

export interface RegmirrorOptions {
  /** `--upstream` values, `[REGISTRY=]URL`. */
  upstreams?: string[];
  dataDir?: string;
  configFile?: string;
  extraArgs?: string[];
  env?: NodeJS.ProcessEnv;
  /** Default: a port regmirror picks itself (it binds :0); restarts keep the port of the first start. */
  port?: number;
  /** The cli.js of another build (default this checkout's dist/cli.js), to compare builds. */
  cli?: string;
  /** Which output lines lines() keeps (default all): under load, leave out the access log. */
  keepLine?: (line: string) => boolean;
  /** The mirror serves TLS (its tls.* settings are in env or the config file): reach it over https with these. */
  tls?: ClientTls;
}

export interface AccessEntry {
  method: string;
  path: string;
  status: number;
  bytes: number;
  cache: string;
  upstream?: string;
  aborted?: boolean;
}

export interface Regmirror {
  url: string;
  /** 127.0.0.1:PORT, for skopeo references. */
  host: string;
  port: number;
  dataDir: string;
  /** The running process's id (node itself: no shell in between), for /proc; undefined while stopped. */
  pid(): number | undefined;
  /** Every line the process printed so far, across restarts. */
  lines(): string[];
  /** Parsed access-log lines so far (settle() markers left out). */
  accessEntries(): AccessEntry[];
  /**
   * The access-log line of a request is written after its response went out, so a client can finish
   * before the line arrives: settle() sends a marker request and waits for its line. Call it before reading.
   */
  settle(timeoutMs?: number): Promise<void>;
  /**
   * A client has a blob's last byte once the fill has verified it, a little before the fill's commit (disk sync,
   * rename, record) ends: fillsSettled() waits until no fill is in progress. Call it before expecting a cache hit.
   */
  fillsSettled(timeoutMs?: number): Promise<void>;
  metrics(): Promise<string>;
  /** The value of one metric series, e.g. metricValue('regmirror_fills_total', {outcome: 'committed'}); summed over other labels. */
  metricValue(name: string, labels?: Record<string, string>): Promise<number>;
  stop(): Promise<void>;
  kill9(): Promise<void>;
  start(): Promise<void>;
  /** stop(), and remove the data directory unless it was given. */
  destroy(): Promise<void>;
}

export async function startRegmirror(options: RegmirrorOptions = {}): Promise<Regmirror> {
  const ownData = options.dataDir === undefined;
  const dataDir = options.dataDir ?? (await makeTempDir('regmirror-data-'));
  // 0 until the first start: regmirror binds a port of its own choosing and says which; restarts keep it.
  let port = options.port ?? 0;
  const scheme = options.tls === undefined ? 'http' : 'https';
  const argsFor = (listenPort: number): string[] => {
    const args = [...REGMIRROR_NODE_FLAGS, options.cli ?? CLI, 'serve', '--listen', `127.0.0.1:${listenPort}`, '--data', dataDir];
    for (const upstream of options.upstreams ?? []) args.push('--upstream', upstream);
    if (options.configFile !== undefined) args.push('--config', options.configFile);
    args.push(...(options.extraArgs ?? []));
    return args;
  };
  const history: string[] = [];
  let current: ManagedProcess | undefined;

  const start = async (): Promise<void> => {
    const child = startProcess(process.execPath, argsFor(port), { env: { ...process.env, ...options.env }, keepLine: options.keepLine });
    current = child;
    try {
      const bound = await listeningPort(child);
      if (port !== 0 && bound !== port) throw new Error(`regmirror listens on ${bound}, not ${port}`);
      port = bound;
      await waitForHttp(`${scheme}://127.0.0.1:${port}/healthz`, 15_000, { tls: options.tls });
    } catch (error) {
      await child.stop('SIGKILL');
      throw error;
    }
  };
  const retire = (): void => {
    if (current !== undefined) history.push(...current.lines());
    current = undefined;
  };
  const lines = (): string[] => [...history, ...(current?.lines() ?? [])];
  await start();
  const url = `${scheme}://127.0.0.1:${port}`;
  const get = async (target: string): Promise<string> => (await getText(`${url}${target}`, { tls: options.tls })).body;

  const metrics = (): Promise<string> => get('/metrics');
  return {
    url,
    host: `127.0.0.1:${port}`,
    port,
    dataDir,
    pid: () => current?.pid,
    lines,
    accessEntries: () => lines().flatMap((line) => parseAccessEntry(line)).filter((entry) => !entry.path.includes(SETTLE_MARKER)),
    settle: async (timeoutMs = 10_000) => {
      const marker = `${SETTLE_MARKER}=${randomUUID()}`;
      await get(`/healthz?${marker}`);
      const deadline = Date.now() + timeoutMs;
      while (!lines().some((line) => line.includes(marker))) {
        if (Date.now() > deadline) throw new Error('regmirror did not log the settle marker in time');
        await new Promise((resolve) => setTimeout(resolve, 10));
      }
    },
    fillsSettled: async (timeoutMs = 15_000) => {
      const deadline = Date.now() + timeoutMs;
      while (sumMetric(await metrics(), 'regmirror_fills_in_progress', {}) > 0) {
        if (Date.now() > deadline) throw new Error(`a fill was still in progress after ${timeoutMs} ms`);
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
    },
    metrics,
    metricValue: async (name, labels = {}) => sumMetric(await metrics(), name, labels),
    stop: async () => {
      await current?.stop('SIGTERM', 10_000);
      retire();
    },
    kill9: async () => {
      await current?.kill9();
      retire();
    },
    start,
    destroy: async () => {
      await current?.stop('SIGTERM', 10_000);
      retire();
      if (ownData) await removeDir(dataDir);
    },
  };
}

/**
 * The port a regmirror process bound, from its "regmirror listening" log line (it may have been told
 * port 0); rejects with everything it printed if it exits or stays silent first.
 */
export async function listeningPort(child: ManagedProcess, timeoutMs = 15_000): Promise<number> {
  let line: string;
  try {
    line = await child.waitForLine(/"msg":"regmirror listening"/, timeoutMs);
  } catch (error) {
    throw new Error(`regmirror did not come up:\n${child.lines().join('\n')}`, { cause: error });
  }
  const port = (JSON.parse(line) as { address?: { port?: unknown } }).address?.port;
  if (typeof port !== 'number' || port <= 0) throw new Error(`regmirror logged no port: ${line}`);
  return port;
}

function parseAccessEntry(line: string): AccessEntry[] {
  if (!line.startsWith('{')) return [];
  try {
    const entry = JSON.parse(line) as Partial<AccessEntry> & { msg?: string };
    if (entry.msg !== 'request' || typeof entry.method !== 'string' || typeof entry.path !== 'string') return [];
    return [entry as AccessEntry];
  } catch {
    return [];
  }
}

/** Sums the samples of a metric whose labels include the given ones. */
export function sumMetric(text: string, name: string, labels: Record<string, string>): number {
  let total = 0;
  for (const line of text.split('\n')) {
    if (!line.startsWith(name)) continue;
    const match = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!match || match[1] !== name) continue;
    const found: Record<string, string> = {};
    for (const pair of (match[2] ?? '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) found[pair[1] ?? ''] = pair[2] ?? '';
    if (Object.entries(labels).every(([key, value]) => found[key] === value)) total += Number(match[3]);
  }
  return total;
}

export interface CommandOutcome {
  /** The exit status. */
  code: number;
  stdout: string;
  stderr: string;
}

/**
 * Runs `regmirror ARGS` to its end (verify, or a serve that must refuse to start), with stdout and stderr
 * apart. Rejects when it is killed after timeoutMs (a serve that did not refuse) or cannot be started.
 */
export function runRegmirror(args: string[], options: { env?: NodeJS.ProcessEnv; timeoutMs?: number } = {}): Promise<CommandOutcome> {
  const timeoutMs = options.timeoutMs ?? 60_000;
  return new Promise((resolve, reject) => {
    execFile(
      process.execPath,
      [...REGMIRROR_NODE_FLAGS, CLI, ...args],
      { env: { ...process.env, ...options.env }, encoding: 'utf8', timeout: timeoutMs, killSignal: 'SIGKILL', maxBuffer: 16 * 1024 * 1024 },
      (error, stdout, stderr) => {
        if (error === null) {
          resolve({ code: 0, stdout, stderr });
        } else if (typeof error.code === 'number') {
          resolve({ code: error.code, stdout, stderr });
        } else {
          const why = error.killed ? `killed after ${timeoutMs} ms` : error.message;
          reject(new Error(`regmirror ${args.join(' ')}: ${why}\n${stderr}\n${stdout}`, { cause: error }));
        }
      },
    );
  });
}

