// Runs the built regmirror (`node dist/cli.js serve`) on a free loopback port for integration tests,
// and reads its JSON access log and /metrics so tests can prove what the mirror served.

import { randomUUID } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import path from 'node:path';
import { freePort, waitForHttp } from './ports.js';
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
  port?: number;
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
  const port = options.port ?? (await freePort());
  const ownData = options.dataDir === undefined;
  const dataDir = options.dataDir ?? (await makeTempDir('regmirror-data-'));
  const args = [...REGMIRROR_NODE_FLAGS, CLI, 'serve', '--listen', `127.0.0.1:${port}`, '--data', dataDir];
  for (const upstream of options.upstreams ?? []) args.push('--upstream', upstream);
  if (options.configFile !== undefined) args.push('--config', options.configFile);
  args.push(...(options.extraArgs ?? []));
  const url = `http://127.0.0.1:${port}`;
  const history: string[] = [];
  let current: ManagedProcess | undefined;

  const start = async (): Promise<void> => {
    const child = startProcess(process.execPath, args, { env: { ...process.env, ...options.env } });
    current = child;
    const ready = waitForHttp(`${url}/healthz`, 15_000);
    const exited = child.exited.then((code) => {
      throw new Error(`regmirror exited with ${String(code)} before it was ready:\n${child.lines().join('\n')}`);
    });
    await Promise.race([ready, exited]);
  };
  const retire = (): void => {
    if (current !== undefined) history.push(...current.lines());
    current = undefined;
  };
  const lines = (): string[] => [...history, ...(current?.lines() ?? [])];
  await start();

  const metrics = async (): Promise<string> => {
    const response = await fetch(`${url}/metrics`);
    return response.text();
  };
  return {
    url,
    host: `127.0.0.1:${port}`,
    port,
    dataDir,
    lines,
    accessEntries: () => lines().flatMap((line) => parseAccessEntry(line)).filter((entry) => !entry.path.includes(SETTLE_MARKER)),
    settle: async (timeoutMs = 10_000) => {
      const marker = `${SETTLE_MARKER}=${randomUUID()}`;
      await (await fetch(`${url}/healthz?${marker}`)).arrayBuffer();
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
