// The load and measuring tools the benchmark drives: curl for a body's throughput and its first byte,
// wrk (ab for HEAD) for requests/s and latency percentiles, a one-connection latency loop, skopeo for
// whole pulls, and a sampler of resident memory.

import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { Agent, request as httpRequest } from 'node:http';
import path from 'node:path';
import { runCommand } from '../../test/support/commands.js';
import { residentBytes } from '../../test/support/processes.js';
import { skopeo } from '../../test/support/skopeo.js';
import { median } from './stats.js';

export interface Download {
  status: number;
  bytes: number;
  /** Seconds from the start to the first byte of the body. */
  firstByteS: number;
  totalS: number;
  bytesPerS: number;
}

/** One GET with curl, the body thrown away; throws unless the status is 200. */
/** follow: follow redirects (a 307 to the bucket), timing the whole chain as one download. */
export async function download(url: string, timeoutMs: number, headers: Record<string, string> = {}, follow = false): Promise<Download> {
  const args = ['-sS', '--noproxy', '*', '-o', '/dev/null', '--max-time', String(Math.ceil(timeoutMs / 1000))];
  if (follow) args.push('-L');
  for (const [name, value] of Object.entries(headers)) args.push('-H', `${name}: ${value}`);
  args.push('-w', '%{http_code} %{size_download} %{time_starttransfer} %{time_total}', url);
  const { stdout } = await runCommand('curl', args, { timeoutMs: timeoutMs + 5_000 });
  const [status = 0, bytes = 0, firstByteS = 0, totalS = 0] = stdout.trim().split(/\s+/).map(Number);
  if (status !== 200) throw new Error(`curl ${url}: status ${status}`);
  return { status, bytes, firstByteS, totalS, bytesPerS: totalS > 0 ? bytes / totalS : Number.NaN };
}

export interface WrkOptions {
  connections: number;
  threads: number;
  durationS: number;
  headers?: Record<string, string>;
}

export interface WrkResult {
  requestsPerS: number;
  requests: number;
  p50Ms: number;
  p99Ms: number;
  /** Non-2xx/3xx answers plus socket errors (connect, read, write, timeout). */
  errors: number;
}

/** GET requests with wrk (HEAD: abHead). */
export async function wrk(url: string, options: WrkOptions): Promise<WrkResult> {
  const args = ['-t', String(options.threads), '-c', String(options.connections), '-d', `${options.durationS}s`, '--latency', '--timeout', '10s'];
  for (const [name, value] of Object.entries(options.headers ?? {})) args.push('-H', `${name}: ${value}`);
  args.push(url);
  const { stdout } = await runCommand('wrk', args, { timeoutMs: (options.durationS + 30) * 1000 });
  return parseWrk(stdout);
}

const UNIT_MS: Record<string, number> = { us: 0.001, ms: 1, s: 1000, m: 60_000 };

export function parseWrk(text: string): WrkResult {
  const latency = (percent: string): number => {
    const match = new RegExp(`^\\s*${percent}%\\s+([\\d.]+)(us|ms|s|m)\\s*$`, 'm').exec(text);
    return match ? Number(match[1]) * (UNIT_MS[match[2] ?? 'ms'] ?? 1) : Number.NaN;
  };
  const rate = /^Requests\/sec:\s+([\d.]+)/m.exec(text);
  const total = /^\s*(\d+) requests in/m.exec(text);
  const non2xx = /Non-2xx or 3xx responses:\s+(\d+)/.exec(text);
  const socket = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(text);
  if (!rate || !total) throw new Error(`wrk printed no rate:\n${text}`);
  const socketErrors = socket ? socket.slice(1).reduce((sum, value) => sum + Number(value), 0) : 0;
  return {
    requestsPerS: Number(rate[1]),
    requests: Number(total[1]),
    p50Ms: latency('50'),
    p99Ms: latency('99'),
    errors: Number(non2xx?.[1] ?? 0) + socketErrors,
  };
}

export interface AbOptions {
  connections: number;
  durationS: number;
}

/**
 * HEAD requests with ab (apache2-utils), keep-alive: wrk 4.1 cannot measure HEAD (its parser waits for a
 * body the response announces but never sends). ab reports whole milliseconds.
 */
export async function abHead(url: string, options: AbOptions): Promise<WrkResult> {
  // -t alone caps the count at 50000: -n after it lifts the cap, the time still bounds the run.
  const args = ['-k', '-i', '-q', '-c', String(options.connections), '-t', String(options.durationS), '-n', '100000000', '-s', '10', url];
  const { stdout } = await runCommand('ab', args, { timeoutMs: (options.durationS + 30) * 1000 });
  const number = (pattern: RegExp): number => Number(pattern.exec(stdout)?.[1] ?? Number.NaN);
  const requests = number(/^Complete requests:\s+(\d+)/m);
  if (!Number.isFinite(requests)) throw new Error(`ab printed no count:\n${stdout}`);
  return {
    requestsPerS: number(/^Requests per second:\s+([\d.]+)/m),
    requests,
    p50Ms: number(/^\s+50%\s+(\d+)/m),
    p99Ms: number(/^\s+99%\s+(\d+)/m),
    errors: number(/^Failed requests:\s+(\d+)/m) + (/^Non-2xx responses:\s+(\d+)/m.test(stdout) ? number(/^Non-2xx responses:\s+(\d+)/m) : 0),
  };
}

/**
 * One request at a time on one kept-alive connection, each to a path picked at random, for durationS:
 * the median latency. Node's client adds its own few tens of microseconds, the same at every count.
 */
export async function sequentialLatency(origin: string, options: { paths: string[]; method: 'GET' | 'HEAD'; headers?: Record<string, string>; durationS: number }): Promise<{ p50Ms: number; requests: number; errors: number }> {
  const agent = new Agent({ keepAlive: true, maxSockets: 1 });
  const latencies: number[] = [];
  let errors = 0;
  let state = 1;
  const random = (): number => {
    // xorshift32, seeded: the same sequence of paths every run.
    state ^= state << 13;
    state ^= state >>> 17;
    state ^= state << 5;
    return (state >>> 0) / 2 ** 32;
  };
  const deadline = performance.now() + options.durationS * 1000;
  try {
    while (performance.now() < deadline && latencies.length < 1_000_000) {
      const target = options.paths[Math.floor(random() * options.paths.length)] ?? '/';
      const started = performance.now();
      const status = await new Promise<number>((resolve, reject) => {
        const request = httpRequest(`${origin}${target}`, { method: options.method, headers: options.headers, agent, timeout: 10_000 }, (response) => {
          response.resume();
          response.once('end', () => resolve(response.statusCode ?? 0));
          response.once('error', reject);
        });
        request.once('timeout', () => request.destroy(new Error(`no answer from ${origin}${target} within 10 s`)));
        request.once('error', reject);
        request.end();
      });
      latencies.push(performance.now() - started);
      if (status !== 200) errors++;
    }
  } finally {
    agent.destroy();
  }
  return { p50Ms: median(latencies), requests: latencies.length, errors };
}

/** The direct children of a process (nginx's workers under its master). */
export async function childPids(pid: number): Promise<number[]> {
  const text = await readFile(`/proc/${pid}/task/${pid}/children`, 'utf8').catch(() => '');
  return text.split(/\s+/).filter((entry) => entry !== '').map(Number);
}

export interface RssSampler {
  /** Stops sampling (once; later calls give the same answer): the peak resident set seen since start, in bytes. */
  stop(): Promise<number>;
}

/**
 * Samples VmRSS every intervalMs; also resets the kernel's high-water mark (clear_refs 5) at the start and
 * reads VmHWM at the end, which catches a peak between two samples. Bounded by maxMs.
 */
export async function sampleRss(pid: number, intervalMs = 20, maxMs = 600_000): Promise<RssSampler> {
  let hwmReset = true;
  await writeFile(`/proc/${pid}/clear_refs`, '5').catch(() => {
    hwmReset = false;
  });
  let peak = (await residentBytes(pid, 'VmRSS')) ?? 0;
  let sampling = Promise.resolve();
  const deadline = Date.now() + maxMs;
  const timer = setInterval(() => {
    if (Date.now() > deadline) clearInterval(timer);
    sampling = sampling.then(async () => {
      peak = Math.max(peak, (await residentBytes(pid, 'VmRSS')) ?? 0);
    });
  }, intervalMs);
  let stopped: Promise<number> | undefined;
  return {
    stop: () =>
      (stopped ??= (async () => {
        clearInterval(timer);
        await sampling;
        const highWater = hwmReset ? ((await residentBytes(pid, 'VmHWM')) ?? 0) : 0;
        return Math.max(peak, highWater);
      })()),
  };
}

/** `skopeo copy` of repository:tag from host into a fresh directory under scratch (removed after); seconds taken. */
export async function pullImage(host: string, reference: string, scratch: string, timeoutMs = 900_000, creds?: string): Promise<number> {
  const out = await mkdtemp(path.join(scratch, 'pull-'));
  try {
    const started = performance.now();
    const login = creds === undefined ? [] : ['--src-creds', creds];
    await skopeo(['copy', '--quiet', '--src-tls-verify=false', ...login, `docker://${host}/${reference}`, `dir:${out}`], { timeoutMs });
    return (performance.now() - started) / 1000;
  } finally {
    await rm(out, { recursive: true, force: true });
  }
}
