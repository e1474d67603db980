// One-shot commands for tests (ctr, docker, podman, umount): bounded in time, with their output in the
// error when they fail; and the check that a required program is installed (a missing one fails the test).
import { execFile } from 'node:child_process';
import { access, constants, readFile } from 'node:fs/promises';
import path from 'node:path';
import { startProcess, type ManagedProcess } from './processes.js';

export interface RunOptions {
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  /** SIGKILL and reject after this long; default 120 s. */
  timeoutMs?: number;
}

export interface RunResult {
  stdout: string;
  stderr: string;
}

/** Runs command with args; resolves with its output on exit 0, rejects with both output streams otherwise. */
export function runCommand(command: string, args: string[], opts: RunOptions = {}): Promise<RunResult> {
  const timeoutMs = opts.timeoutMs ?? 120_000;
  return new Promise((resolve, reject) => {
    execFile(
      command,
      args,
      { env: opts.env, cwd: opts.cwd, encoding: 'utf8', timeout: timeoutMs, killSignal: 'SIGKILL', maxBuffer: 64 * 1024 * 1024 },
      (err, stdout, stderr) => {
        if (err === null) {
          resolve({ stdout, stderr });
          return;
        }
        const why = err.killed ? `killed after ${timeoutMs} ms` : `exit ${String(err.code ?? err.signal)}`;
        const output = [stderr.trim(), stdout.trim().split('\n').slice(-20).join('\n')].filter((text) => text !== '').join('\n');
        reject(new Error(`${command} ${args.join(' ')}: ${why}\n${output}`, { cause: err }));
      },
    );
  });
}

/**
 * The absolute path of an installed program, found on PATH (plus the sbin directories, where dockerd lives).
 * Throws when it is missing: the suite needs every real client it tests, and scripts/install-deps.sh installs them.
 */
export async function requireCommand(name: string): Promise<string> {
  const searchPath = [...(process.env.PATH ?? '').split(':'), '/usr/local/sbin', '/usr/sbin', '/sbin'];
  for (const dir of searchPath) {
    if (dir === '') continue;
    const candidate = path.join(dir, name);
    try {
      await access(candidate, constants.X_OK);
      return candidate;
    } catch {
      // not here
    }
  }
  throw new Error(`${name} is not installed (not on PATH); scripts/install-deps.sh installs what the suite needs`);
}

/** A minimal environment for a client or daemon under test: PATH and HOME only, plus extra. No proxy, no real credentials. */
export function hermeticEnv(home: string, extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  return {
    PATH: [process.env.PATH ?? '/usr/local/bin:/usr/bin:/bin', '/usr/local/sbin', '/usr/sbin', '/sbin'].join(':'),
    HOME: home,
    ...extra,
  };
}

/**
 * Unmounts whatever is mounted at or below dir, deepest first (lazily, so a busy mount cannot block the
 * test's cleanup). dockerd bind-mounts its data-root onto itself and only undoes that when it exits cleanly.
 */
export async function unmountUnder(dir: string): Promise<void> {
  const root = path.resolve(dir);
  const mountInfo = await readFile('/proc/self/mountinfo', 'utf8');
  const mountPoints = mountInfo
    .split('\n')
    .map((line) => line.split(' ')[4] ?? '')
    // mountinfo escapes spaces and the like as \040: decode them.
    .map((field) => field.replace(/\\([0-7]{3})/g, (_match, octal: string) => String.fromCharCode(parseInt(octal, 8))))
    .filter((mountPoint) => mountPoint === root || mountPoint.startsWith(`${root}/`))
    .sort((a, b) => b.length - a.length);
  for (const mountPoint of mountPoints) await runCommand('umount', ['-l', mountPoint], { timeoutMs: 30_000 });
}

export interface DaemonOptions {
  /** For messages: containerd, dockerd… */
  name: string;
  command: string;
  args: string[];
  env: NodeJS.ProcessEnv;
  /** The daemon's own line that says it is serving. */
  readyLine: RegExp;
  /** How long to wait for readyLine. */
  timeoutMs: number;
  /** Then this must succeed, e.g. `ctr version` against the socket. */
  check: () => Promise<unknown>;
  /** Run when start-up fails (after the daemon was stopped): remove what the helper made. */
  cleanup: () => Promise<void>;
}

/** Starts a daemon and resolves once it is ready; when it is not, stops it, cleans up and throws with its last output. */
export async function startDaemon(opts: DaemonOptions): Promise<ManagedProcess> {
  const proc = startProcess(opts.command, opts.args, { env: opts.env });
  let sawReadyLine = false;
  try {
    await proc.waitForLine(opts.readyLine, opts.timeoutMs);
    sawReadyLine = true;
    await opts.check();
    return proc;
  } catch (err) {
    await proc.stop('SIGTERM', 10_000);
    await opts.cleanup();
    // waitForLine's error already carries the last lines.
    const output = sawReadyLine ? `\n${proc.lines().slice(-30).join('\n')}` : '';
    throw new Error(`${opts.name} did not start: ${err instanceof Error ? err.message : String(err)}${output}`, { cause: err });
  }
}
