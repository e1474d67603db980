// Runs Debian's nginx on a free loopback port in front of a regmirror, with the configuration documented in
// docs/nginx.md (read from there, so the tested configuration is the documented one).
import { access, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { requireCommand } from './commands.js';
import { startOnFreePort, waitForHttp } from './ports.js';
import { startProcess, type ManagedProcess } from './processes.js';
import { makeTempDir, removeDir } from './temp.js';

const DOC = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', '..', 'docs', 'nginx.md');

export interface NginxOptions {
  /** regmirror's host:port, in place of the document's 127.0.0.1:5000. */
  upstream: string;
  /** regmirror's data directory, in place of the document's /var/lib/regmirror. */
  dataDir: string;
  port?: number;
  /** nginx's own access log, in its temporary directory; off by default (benchmarks). */
  accessLog?: boolean;
  /** Another server block instead of the documented one, given its port (the benchmark's plain file server). */
  block?: (port: number) => string;
}

export interface Nginx {
  url: string;
  port: number;
  pid: number;
  /** The access log's lines so far ([] when it is off). */
  accessLog(): Promise<string[]>;
  stop(): Promise<void>;
}

/** The first ```nginx block of docs/nginx.md. */
export async function documentedNginxConfig(): Promise<string> {
  const text = await readFile(DOC, 'utf8');
  const match = /```nginx\n([\s\S]*?)```/.exec(text);
  if (match?.[1] === undefined) throw new Error(`${DOC} has no nginx block`);
  return match[1];
}

/** The documented block with this run's port, upstream and data directory; throws if a placeholder is missing. */
export function localizeNginxConfig(block: string, options: { port: number; upstream: string; dataDir: string }): string {
  const replacements: Array<[RegExp, string]> = [
    [/^(\s*)listen 80;$/m, `$1listen 127.0.0.1:${options.port};`],
    [/server 127\.0\.0\.1:5000;/, `server ${options.upstream};`],
    [/\/var\/lib\/regmirror\//g, `${path.resolve(options.dataDir)}/`],
  ];
  let config = block;
  for (const [pattern, value] of replacements) {
    if (!pattern.test(config)) throw new Error(`docs/nginx.md: the nginx block no longer contains ${String(pattern)}`);
    pattern.lastIndex = 0;
    config = config.replace(pattern, value);
  }
  return config;
}

export async function startNginx(options: NginxOptions): Promise<Nginx> {
  const binary = await requireCommand('nginx');
  const documented = options.block === undefined ? await documentedNginxConfig() : '';
  // nginx must be told its port: one another process took meanwhile means another port.
  const startOn = (port: number): Promise<Nginx> =>
    launchNginx(binary, port, options.block?.(port) ?? localizeNginxConfig(documented, { port, upstream: options.upstream, dataDir: options.dataDir }), options.accessLog === true);
  return options.port === undefined ? startOnFreePort(startOn) : startOn(options.port);
}

async function launchNginx(binary: string, port: number, block: string, accessLog: boolean): Promise<Nginx> {
  const dir = await makeTempDir('regmirror-nginx-');
  const accessLogPath = path.join(dir, 'access.log');
  const pidPath = path.join(dir, 'nginx.pid');
  // The main and http contexts a distribution's nginx.conf would give, in a private directory.
  const config = [
    // As root, workers would switch to nobody, who cannot enter a test's 0700 temporary directories.
    ...(process.getuid?.() === 0 ? ['user root;'] : []),
    'worker_processes 1;',
    'daemon off;',
    `pid ${pidPath};`,
    `error_log ${path.join(dir, 'error.log')} warn;`,
    'events { worker_connections 1024; }',
    'http {',
    '  default_type application/octet-stream;',
    `  access_log ${accessLog ? accessLogPath : 'off'};`,
    ...['client_body', 'proxy', 'fastcgi', 'uwsgi', 'scgi'].map((kind) => `  ${kind}_temp_path ${path.join(dir, kind)};`),
    block,
    '}',
    '',
  ].join('\n');
  const configPath = path.join(dir, 'nginx.conf');
  await writeFile(configPath, config);
  const url = `http://127.0.0.1:${port}`;
  let proc: ManagedProcess | undefined;
  try {
    const started = startProcess(binary, ['-p', dir, '-e', path.join(dir, 'error.log'), '-c', configPath]);
    proc = started;
    const died = new AbortController();
    void started.exited.then((code) => died.abort(new Error(`nginx exited with ${String(code)}: ${started.lines().join('\n')}`)));
    // nginx writes its pid file only once its sockets are bound: before that, whatever answers on the port is not it.
    await waitForFile(pidPath, 15_000, died.signal);
    await waitForHttp(`${url}/healthz`, 15_000, { signal: died.signal });
  } catch (error) {
    await proc?.stop('SIGTERM', 5_000);
    const log = await readFile(path.join(dir, 'error.log'), 'utf8').catch(() => '');
    await removeDir(dir);
    throw new Error(`nginx on ${url} did not come up: ${(error as Error).message}\n${log}`, { cause: error });
  }
  const running = proc;
  return {
    url,
    port,
    pid: running.pid,
    accessLog: async () => (await readFile(accessLogPath, 'utf8').catch(() => '')).split('\n').filter((line) => line !== ''),
    stop: async () => {
      // SIGQUIT: a graceful stop (SIGTERM is nginx's fast one); either way the pid file goes with the directory.
      await running.stop('SIGQUIT', 5_000);
      await removeDir(dir);
    },
  };
}

async function waitForFile(file: string, timeoutMs: number, signal: AbortSignal): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (signal.aborted) throw signal.reason instanceof Error ? signal.reason : new Error(String(signal.reason));
    try {
      await access(file);
      return;
    } catch {
      if (Date.now() > deadline) throw new Error(`${file} did not appear within ${timeoutMs} ms`);
    }
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}
