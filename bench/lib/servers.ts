// The servers under test, each on a free loopback port with its own fresh directory and its output in a
// log file there (a server answering thousands of requests a second must not fill the harness's memory):
// distribution 2.8.2 in proxy mode (the peer) and regmirror (the built dist/cli.js).

import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { distributionConfig, type DistributionOptions } from '../../test/support/distribution.js';
import { freePort, waitForHttp } from '../../test/support/ports.js';
import { REGMIRROR_NODE_FLAGS } from '../../test/support/regmirror.js';
import { startProcess, type ManagedProcess } from '../../test/support/processes.js';
import { makeTempDir, removeDir } from '../../test/support/temp.js';

const CLI = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', '..', 'dist', 'cli.js');

export interface BenchServer {
  /** http://127.0.0.1:PORT */
  url: string;
  /** 127.0.0.1:PORT, for skopeo references. */
  host: string;
  /** The serving process: node for regmirror, docker-registry for the peer. */
  pid: number;
  /** Where it keeps content: regmirror's data directory, distribution's storage root. */
  dataDir: string;
  /** Stops the process and removes its directory. */
  stop(): Promise<void>;
}

async function launch(label: string, command: string, args: string[], options: { dir: string; port: number; probe: string; env?: NodeJS.ProcessEnv }): Promise<BenchServer> {
  const logFile = path.join(options.dir, 'output.log');
  const proc: ManagedProcess = startProcess(command, args, { logFile, env: { ...process.env, ...options.env } });
  const url = `http://127.0.0.1:${options.port}`;
  const died = new AbortController();
  void proc.exited.then((code) => died.abort(new Error(`${label} exited with ${String(code)}`)));
  const stop = async (): Promise<void> => {
    await proc.stop('SIGTERM', 10_000);
    await removeDir(options.dir);
  };
  try {
    // Polled every 5 ms: start-up time is one of the measures.
    await waitForHttp(`${url}${options.probe}`, 20_000, { signal: died.signal, intervalMs: 5 });
  } catch (error) {
    const output = await readFile(logFile, 'utf8').catch(() => '');
    await stop();
    throw new Error(`${label} did not come up: ${(error as Error).message}\n${output.split('\n').slice(-20).join('\n')}`, { cause: error });
  }
  return { url, host: `127.0.0.1:${options.port}`, pid: proc.pid, dataDir: path.join(options.dir, 'data'), stop };
}

/** distribution 2.8.2 as a pull-through cache of upstreamUrl, on an empty storage root. */
export async function startPeer(upstreamUrl: string, auth?: DistributionOptions['auth']): Promise<BenchServer> {
  const dir = await makeTempDir('regmirror-bench-peer-');
  const port = await freePort();
  const configPath = path.join(dir, 'config.yml');
  // JSON is YAML; distribution reads it as such.
  await writeFile(configPath, JSON.stringify(distributionConfig(port, path.join(dir, 'data'), { proxyRemoteUrl: upstreamUrl, auth })));
  return launch('distribution (peer)', 'docker-registry', ['serve', configPath], { dir, port, probe: '/v2/' });
}

/** distribution 2.8.2 as a plain registry (pushes accepted), on an empty storage root. */
export async function startPlainPeer(): Promise<BenchServer> {
  const dir = await makeTempDir('regmirror-bench-peer-');
  const port = await freePort();
  const configPath = path.join(dir, 'config.yml');
  await writeFile(configPath, JSON.stringify(distributionConfig(port, path.join(dir, 'data'), {})));
  return launch('distribution (plain)', 'docker-registry', ['serve', configPath], { dir, port, probe: '/v2/' });
}

export interface RegmirrorOptions {
  /** The upstream's URL; none: a plain registry over whatever the data directory holds. */
  upstreamUrl?: string;
  /** An existing data directory to serve (left in place on stop); default a fresh empty one. */
  dataDir?: string;
  env?: NodeJS.ProcessEnv;
  /** Arguments for node itself, before the script (--cpu-prof is not allowed in NODE_OPTIONS). */
  nodeArgs?: string[];
  /** A configuration file (--config); the options above still apply, as flags. */
  config?: string;
  /** The port, chosen beforehand (a cluster node's cluster.advertise names it); default a free one. */
  port?: number;
}

/** regmirror at its defaults (log level info: one access-log line per request, as the peer writes). */
export async function startRegmirror(options: RegmirrorOptions = {}): Promise<BenchServer> {
  const dir = await makeTempDir('regmirror-bench-mirror-');
  const port = options.port ?? (await freePort());
  const dataDir = options.dataDir ?? path.join(dir, 'data');
  const args = [...REGMIRROR_NODE_FLAGS, ...(options.nodeArgs ?? []), CLI, 'serve', '--listen', `127.0.0.1:${port}`, '--data', dataDir];
  if (options.upstreamUrl !== undefined) args.push('--upstream', options.upstreamUrl);
  if (options.config !== undefined) args.push('--config', options.config);
  const server = await launch('regmirror', process.execPath, args, { dir, port, probe: '/healthz', env: options.env });
  return { ...server, dataDir };
}

/** What a measure starts, to stop at its end: `keep` passes a server through; `stopAll` stops them, the last started first. */
export function serverStack(): { keep: <T extends { stop(): Promise<void> }>(server: T) => T; stopAll: () => Promise<void> } {
  const started: Array<{ stop(): Promise<void> }> = [];
  return {
    keep: (server) => {
      started.unshift(server);
      return server;
    },
    stopAll: async () => {
      for (const server of started) await server.stop();
    },
  };
}
