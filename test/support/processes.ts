// Long-running child processes for tests: spawn with captured output lines, wait for a line,
// stop with SIGTERM then SIGKILL, kill whatever is left when the test process exits, and read their memory.
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, openSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { createInterface } from 'node:readline';

export interface ManagedProcess {
  pid: number;
  /** Every stdout and stderr line so far, in arrival order. */
  lines(): string[];
  /** Resolves with the first line (already seen or future) matching pattern; rejects on timeout or exit. */
  waitForLine(pattern: RegExp, timeoutMs?: number): Promise<string>;
  /** Resolves with the exit code, or null when a signal (or a spawn error) ended the process. Never rejects. */
  exited: Promise<number | null>;
  /** The signal that ended the process, once it exited by one (null before, or after a normal exit). */
  exitSignal(): NodeJS.Signals | null;
  /** Sends signal (default SIGTERM) to the process group, then SIGKILL after graceMs (default 5000); resolves once it exited. */
  stop(signal?: NodeJS.Signals, graceMs?: number): Promise<void>;
  /** SIGKILL at once; resolves once it exited. */
  kill9(): Promise<void>;
}

export interface StartProcessOptions {
  cwd?: string;
  env?: NodeJS.ProcessEnv;
  /** Append stdout and stderr to this file instead of keeping them: lines() stays empty and waitForLine never matches. For chatty servers under load (bench/). */
  logFile?: string;
  /** Which lines lines() keeps (default all); waitForLine still sees every line. A server logging each request under load would fill memory. */
  keepLine?: (line: string) => boolean;
}

const running = new Set<ChildProcess>();
let exitHooksInstalled = false;

function signalGroup(child: ChildProcess, signal: NodeJS.Signals): void {
  if (child.pid === undefined || child.exitCode !== null || child.signalCode !== null) return;
  try {
    // detached: true makes the child a process-group leader, so this also reaches its own children.
    process.kill(-child.pid, signal);
  } catch {
    try {
      child.kill(signal);
    } catch {
      // already gone
    }
  }
}

function killAllRunning(): void {
  for (const child of running) signalGroup(child, 'SIGKILL');
  running.clear();
}

function installExitHooks(): void {
  if (exitHooksInstalled) return;
  exitHooksInstalled = true;
  process.on('exit', killAllRunning);
  // A signal would end this process without running 'exit' handlers: kill the children, then die of the same signal.
  for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    const onSignal = (): void => {
      killAllRunning();
      process.removeListener(signal, onSignal);
      process.kill(process.pid, signal);
    };
    process.on(signal, onSignal);
  }
}

function withTimeout<T>(promise: Promise<T>, timeoutMs: number): Promise<T | 'timeout'> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<'timeout'>((resolve) => {
    timer = setTimeout(() => resolve('timeout'), timeoutMs);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

export function startProcess(command: string, args: string[], opts: StartProcessOptions = {}): ManagedProcess {
  installExitHooks();
  const logFd = opts.logFile === undefined ? undefined : openSync(opts.logFile, 'a');
  let child: ChildProcess;
  try {
    child = spawn(command, args, {
      cwd: opts.cwd,
      env: opts.env ?? process.env,
      stdio: logFd === undefined ? ['ignore', 'pipe', 'pipe'] : ['ignore', logFd, logFd],
      detached: true,
    });
  } finally {
    // The child holds its own copy.
    if (logFd !== undefined) closeSync(logFd);
  }
  running.add(child);

  const captured: string[] = [];
  const lineWaiters = new Set<(line: string) => void>();
  const onLine = (line: string): void => {
    if (opts.keepLine?.(line) ?? true) captured.push(line);
    for (const waiter of lineWaiters) waiter(line);
  };
  if (child.stdout !== null) createInterface({ input: child.stdout }).on('line', onLine);
  if (child.stderr !== null) createInterface({ input: child.stderr }).on('line', onLine);

  let hasExited = false;
  let endedBy: NodeJS.Signals | null = null;
  const exited = new Promise<number | null>((resolve) => {
    child.once('error', (err) => {
      captured.push(`[startProcess] ${command}: ${err.message}`);
      // A spawn failure emits no 'exit'/'close'.
      if (child.pid === undefined) {
        hasExited = true;
        running.delete(child);
        resolve(null);
      }
    });
    const finish = (code: number | null): void => {
      hasExited = true;
      running.delete(child);
      resolve(code);
    };
    // 'close' waits for stdio to drain, so lines() is complete once exited resolves; a grandchild that
    // escaped the process group could hold the pipes open forever, so 'exit' settles it a second later.
    child.once('close', finish);
    child.once('exit', (code, signal) => {
      endedBy = signal;
      setTimeout(() => finish(code), 1_000).unref();
    });
  });

  const waitForLine = (pattern: RegExp, timeoutMs = 15_000): Promise<string> => {
    const seen = captured.find((line) => pattern.test(line));
    if (seen !== undefined) return Promise.resolve(seen);
    return new Promise<string>((resolve, reject) => {
      const cleanup = (): void => {
        clearTimeout(timer);
        lineWaiters.delete(waiter);
      };
      const waiter = (line: string): void => {
        if (!pattern.test(line)) return;
        cleanup();
        resolve(line);
      };
      const timer = setTimeout(() => {
        cleanup();
        reject(new Error(`${command}: no line matching ${String(pattern)} within ${timeoutMs} ms; last lines:\n${captured.slice(-20).join('\n')}`));
      }, timeoutMs);
      lineWaiters.add(waiter);
      void exited.then((code) => {
        if (!lineWaiters.has(waiter)) return;
        cleanup();
        reject(new Error(`${command} exited (${String(code)}) before a line matched ${String(pattern)}; last lines:\n${captured.slice(-20).join('\n')}`));
      });
    });
  };

  const stop = async (signal: NodeJS.Signals = 'SIGTERM', graceMs = 5_000): Promise<void> => {
    if (hasExited) return;
    signalGroup(child, signal);
    if ((await withTimeout(exited, graceMs)) !== 'timeout') return;
    signalGroup(child, 'SIGKILL');
    if ((await withTimeout(exited, 10_000)) === 'timeout') {
      throw new Error(`${command} (pid ${String(child.pid)}) did not exit 10 s after SIGKILL`);
    }
  };

  return {
    pid: child.pid ?? -1,
    lines: () => [...captured],
    waitForLine,
    exited,
    exitSignal: () => endedBy,
    stop,
    kill9: () => stop('SIGKILL', 10_000),
  };
}

/** A process's resident set in bytes (VmRSS, or its high-water mark VmHWM), or undefined once it is gone. */
export async function residentBytes(pid: number, field: 'VmRSS' | 'VmHWM' = 'VmRSS'): Promise<number | undefined> {
  try {
    const status = await readFile(`/proc/${pid}/status`, 'utf8');
    const match = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(status);
    return match ? Number(match[1]) * 1024 : undefined;
  } catch {
    return undefined;
  }
}
