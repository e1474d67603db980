// The load generator, run as a child process so that it shares no event loop with the server or the harness:
// keep-alive connections over raw sockets, each looping on planned requests, every answer checked and timed.
//
// Usage (load-run.ts does this): node --import tsx load-generator.ts PLAN.json REPORT.json
// It prints `started` when the first connection opens and `tick SECOND ANSWERS` each second, then writes the report.
// A first request's latency is measured from connect(): it includes the wait for the server to accept.

import { createHash, type Hash } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { pathToFileURL } from 'node:url';

export interface PlannedRequest {
  /** The kind of request and content, e.g. `blob-range:cold`: figures are kept per label. */
  label: string;
  method: 'GET' | 'HEAD';
  path: string;
  headers: Record<string, string>;
  /** Seconds after the start before it may be sent: cold content is released over the run. */
  releaseS: number;
  expect: {
    status: number;
    /** The Docker-Content-Digest the answer must carry. */
    digest?: string;
    /** The Content-Length the answer must announce (also on a HEAD). */
    length?: number;
    /** The sha256 (`sha256:…`) of the whole body. */
    bodyDigest?: string;
    /** The exact body: bytes start..end (inclusive) of a file. */
    bodySlice?: { file: string; start: number; end: number };
  };
}

export interface RequestGroup {
  name: string;
  /** Relative share of the picks, among the groups with a released request. */
  weight: number;
  requests: PlannedRequest[];
  /** Half the picks go to the requests released last: new content gets many clients at once (fills with followers). */
  favourNewest: boolean;
}

export interface LoadPlan {
  port: number;
  connections: number;
  /** Connections open this far apart, on an absolute schedule (0: all at once). */
  openGapMs: number;
  durationS: number;
  /** An answer not complete this long after its request is an error (the connection is then dropped). */
  answerDeadlineMs: number;
  groups: RequestGroup[];
  seed: number;
}

export interface LatencySummary {
  count: number;
  p50Ms: number;
  p90Ms: number;
  p99Ms: number;
  maxMs: number;
  over1s: number;
}

export interface ErrorExample {
  label: string;
  /** The request line, e.g. `GET /v2/load/app/manifests/v1`. */
  sent: string;
  problem: string;
  count: number;
}

export interface LoadReport {
  /** Answers received (right or wrong) plus requests that got none. */
  requests: number;
  /** From the first connection's open to the last answer. */
  elapsedS: number;
  reqPerS: number;
  all: LatencySummary;
  /** The first request of each connection, timed from connect(). */
  first: LatencySummary;
  established: LatencySummary;
  byLabel: Record<string, LatencySummary & { errors: number }>;
  statuses: Record<string, number>;
  errors: number;
  /** Distinct problems (by label and kind), each with one example and its count. */
  errorExamples: ErrorExample[];
  connectionsOpened: number;
  /** Connections the server closed after a whole answer (not errors), opened again. */
  reopened: number;
  bodiesVerified: number;
  bytesReceived: number;
  /** Answers completed in each second of the run. */
  perSecond: number[];
  clientCpuS: number;
  clientLagP99Ms: number;
}

const HEADER_END = Buffer.from('\r\n\r\n');
const CRLF = Buffer.from('\r\n');
const MAX_HEAD_BYTES = 64 * 1024;
/** Bytes of an unexpected answer's body kept for the report. */
const SNIPPET_BYTES = 200;
const REOPEN_DELAY_MS = 20;

/** mulberry32: the mix's choices from one seed. */
function seededRandom(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) | 0;
    let t = Math.imul(state ^ (state >>> 15), 1 | state);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** A growable list of latencies. */
class Samples {
  private values = new Float64Array(1024);
  count = 0;

  push(value: number): void {
    if (this.count === this.values.length) {
      const larger = new Float64Array(this.values.length * 2);
      larger.set(this.values);
      this.values = larger;
    }
    this.values[this.count++] = value;
  }

  static summary(...lists: Samples[]): LatencySummary {
    const count = lists.reduce((total, list) => total + list.count, 0);
    const sorted = new Float64Array(count);
    let at = 0;
    for (const list of lists) {
      sorted.set(list.values.subarray(0, list.count), at);
      at += list.count;
    }
    sorted.sort();
    const quantile = (q: number): number => (count === 0 ? 0 : round(sorted[Math.min(count - 1, Math.max(0, Math.ceil(q * count) - 1))] ?? 0));
    let over1s = 0;
    for (let index = count - 1; index >= 0 && (sorted[index] ?? 0) > 1000; index--) over1s++;
    return { count, p50Ms: quantile(0.5), p90Ms: quantile(0.9), p99Ms: quantile(0.99), maxMs: count === 0 ? 0 : round(sorted[count - 1] ?? 0), over1s };
  }
}

function round(ms: number): number {
  return Math.round(ms * 10) / 10;
}

const now = (): number => performance.now();

/** The groups' requests by release time, and the pick. */
class Mix {
  private readonly groups: Array<RequestGroup & { sorted: PlannedRequest[] }>;

  constructor(
    groups: RequestGroup[],
    private readonly random: () => number,
  ) {
    this.groups = groups.filter((group) => group.requests.length > 0 && group.weight > 0).map((group) => ({ ...group, sorted: [...group.requests].sort((a, b) => a.releaseS - b.releaseS) }));
  }

  /** A request released by elapsedS, or undefined when none is (yet). */
  pick(elapsedS: number): PlannedRequest | undefined {
    const open = this.groups.map((group) => ({ group, released: releasedCount(group.sorted, elapsedS) })).filter(({ released }) => released > 0);
    const total = open.reduce((sum, { group }) => sum + group.weight, 0);
    let ticket = this.random() * total;
    for (const { group, released } of open) {
      ticket -= group.weight;
      if (ticket > 0) continue;
      let from = 0;
      if (group.favourNewest && this.random() < 0.5) {
        const newest = group.sorted[released - 1]?.releaseS;
        from = released - 1;
        while (from > 0 && group.sorted[from - 1]?.releaseS === newest) from--;
      }
      return group.sorted[from + Math.floor(this.random() * (released - from))];
    }
    return undefined;
  }
}

/** How many of the requests (sorted by release) are released at elapsedS. */
function releasedCount(sorted: PlannedRequest[], elapsedS: number): number {
  let low = 0;
  let high = sorted.length;
  while (low < high) {
    const middle = (low + high) >> 1;
    if ((sorted[middle]?.releaseS ?? Infinity) <= elapsedS) low = middle + 1;
    else high = middle;
  }
  return low;
}

interface InFlight {
  request: PlannedRequest;
  startedAt: number;
  first: boolean;
}

/** The answer being read: its head, then a body framed by Content-Length or chunked encoding. */
interface Reading {
  status: number;
  headers: Map<string, string>;
  framing: 'none' | 'length' | 'chunked';
  /** Body bytes still expected (length framing), or of the current chunk (chunked). */
  remaining: number;
  chunkState: 'size' | 'data' | 'data-end' | 'trailer';
  line: Buffer;
  received: number;
  hash: Hash | undefined;
  /** The body, when it is compared byte for byte; else its start, for the report. */
  kept: Buffer[];
  keptBytes: number;
}

class Generator {
  private readonly t0 = now();
  private readonly endAt: number;
  private readonly mix: Mix;
  private readonly expectedFiles = new Map<string, Buffer>();
  private readonly requestBytes = new Map<PlannedRequest, Buffer>();
  private readonly first = new Samples();
  private readonly established = new Samples();
  private readonly byLabel = new Map<string, { samples: Samples; errors: number }>();
  private readonly statuses: Record<string, number> = {};
  private readonly problems = new Map<string, ErrorExample>();
  private readonly perSecond: number[] = [];
  private readonly sockets = new Set<net.Socket>();
  /** Per open connection: fails its request if it has waited longer than cutoffMs. */
  private readonly lateChecks = new Map<net.Socket, (cutoffMs: number, problem: string) => void>();
  private readonly lag = monitorEventLoopDelay({ resolution: 10 });
  private errors = 0;
  private opened = 0;
  private reopened = 0;
  private verified = 0;
  private bytes = 0;
  private lastAnswerAt = 0;
  /** Answers that arrived within the run's duration: the throughput. */
  private answeredInRun = 0;
  private finished = false;

  constructor(
    private readonly plan: LoadPlan,
    private readonly done: (report: LoadReport) => void,
  ) {
    this.endAt = this.t0 + plan.durationS * 1000;
    this.mix = new Mix(plan.groups, seededRandom(plan.seed));
    for (const group of plan.groups) {
      for (const request of group.requests) {
        const slice = request.expect.bodySlice;
        if (slice !== undefined && !this.expectedFiles.has(slice.file)) this.expectedFiles.set(slice.file, readFileSync(slice.file));
        const headers = Object.entries(request.headers).map(([name, value]) => `${name}: ${value}\r\n`).join('');
        this.requestBytes.set(request, Buffer.from(`${request.method} ${request.path} HTTP/1.1\r\nHost: 127.0.0.1:${plan.port}\r\nUser-Agent: regmirror-load\r\n${headers}\r\n`, 'latin1'));
      }
    }
  }

  start(): void {
    this.lag.enable();
    process.stdout.write('started\n');
    let next = 0;
    const opener = (): void => {
      const t = now();
      while (next < this.plan.connections && this.t0 + next * this.plan.openGapMs <= t) {
        this.open();
        next++;
      }
      if (next < this.plan.connections) setTimeout(opener, Math.max(0, this.t0 + next * this.plan.openGapMs - now()));
    };
    opener();
    const sweep = setInterval(() => this.sweep(), 250);
    const hardStop = setTimeout(() => this.finish(), this.plan.durationS * 1000 + this.plan.answerDeadlineMs + 2_000);
    const ticker = setInterval(() => process.stdout.write(`tick ${Math.round((now() - this.t0) / 1000)} ${this.perSecond.reduce((sum, count) => sum + count, 0)}\n`), 1000);
    this.stopTimers = () => {
      clearInterval(sweep);
      clearTimeout(hardStop);
      clearInterval(ticker);
    };
  }

  private stopTimers: () => void = () => undefined;

  /** One keep-alive connection, looping until the end of the run; opened again if it breaks before then. */
  private open(): void {
    if (this.finished || now() >= this.endAt) return;
    const openedAt = now();
    const socket = net.connect({ host: '127.0.0.1', port: this.plan.port, noDelay: true });
    this.sockets.add(socket);
    this.opened++;
    let inFlight: InFlight | undefined;
    let last: PlannedRequest | undefined;
    let reading: Reading | undefined;
    let pendingHead: Buffer | undefined;
    let answeredWhole = false;
    let ending = false;

    const send = (first: boolean, startedAt: number): boolean => {
      const request = this.mix.pick((now() - this.t0) / 1000);
      if (request === undefined) return false;
      inFlight = { request, startedAt, first };
      last = request;
      socket.write(this.requestBytes.get(request) as Buffer);
      return true;
    };
    const end = (): void => {
      ending = true;
      socket.end();
    };
    /** The request in flight gets no (whole) answer: counted, and the connection dropped. */
    const fail = (problem: string): void => {
      if (inFlight !== undefined) this.record(inFlight, now(), undefined, problem);
      else if (last !== undefined) this.countProblem(last, problem);
      inFlight = undefined;
      reading = undefined;
      socket.destroy();
    };
    this.lateChecks.set(socket, (cutoffMs, problem) => {
      if (inFlight !== undefined && now() - inFlight.startedAt > cutoffMs) fail(problem);
    });

    socket.on('connect', () => {
      if (!send(true, openedAt)) end();
    });
    socket.on('data', (data: Buffer) => {
      this.bytes += data.length;
      let chunk = data;
      while (chunk.length > 0) {
        if (inFlight === undefined) {
          fail(`${chunk.length} bytes with no request in flight`);
          return;
        }
        const wanted = inFlight.request.expect;
        if (reading === undefined) {
          pendingHead = pendingHead === undefined ? chunk : Buffer.concat([pendingHead, chunk]);
          const headEnd = pendingHead.indexOf(HEADER_END);
          if (headEnd === -1) {
            if (pendingHead.length > MAX_HEAD_BYTES) fail('response head too large');
            return;
          }
          reading = parseHead(pendingHead.subarray(0, headEnd).toString('latin1'), inFlight.request.method);
          chunk = pendingHead.subarray(headEnd + HEADER_END.length);
          pendingHead = undefined;
          if (reading === undefined) {
            fail('unparsable response head, or no Content-Length on a keep-alive answer');
            return;
          }
          if (reading.status === wanted.status && wanted.bodyDigest !== undefined) reading.hash = createHash('sha256');
        } else {
          chunk = consumeBody(reading, chunk, wanted.bodySlice !== undefined);
        }
        if (!isWhole(reading)) continue;
        const answeredAt = now();
        const answer = reading;
        const answered = inFlight;
        inFlight = undefined;
        reading = undefined;
        // Nothing is pipelined: bytes after a whole answer (a body on a HEAD, a smuggled answer) are its fault.
        if (chunk.length > 0) {
          this.record(answered, answeredAt, answer, `${chunk.length} bytes after a whole answer`);
          socket.destroy();
          return;
        }
        this.record(answered, answeredAt, answer, undefined);
        if (answer.headers.get('connection')?.toLowerCase() === 'close') {
          answeredWhole = true;
          return;
        }
        if (answeredAt >= this.endAt || this.finished || !send(false, answeredAt)) {
          end();
          return;
        }
      }
    });
    socket.on('error', (error: NodeJS.ErrnoException) => {
      fail(`connection error ${error.code ?? error.message}${reading === undefined ? ' before an answer' : ` mid-body (${reading.received} bytes in)`}`);
    });
    socket.on('close', () => {
      this.sockets.delete(socket);
      this.lateChecks.delete(socket);
      if (inFlight !== undefined) fail(reading === undefined ? 'closed before an answer' : `closed mid-body (short body: ${reading.received} bytes${reading.framing === 'length' ? `, ${reading.remaining} missing` : ''})`);
      if (answeredWhole) this.reopened++;
      if (!ending && now() < this.endAt && !this.finished) {
        setTimeout(() => this.open(), REOPEN_DELAY_MS);
        return;
      }
      if (now() >= this.endAt && this.sockets.size === 0) this.finish();
    });
  }

  /** Drops connections whose answer is past the deadline; ends the run once the last one closed. */
  private sweep(): void {
    const deadline = this.plan.answerDeadlineMs;
    for (const check of this.lateChecks.values()) check(deadline, `no answer within ${deadline} ms`);
    if (now() >= this.endAt && this.sockets.size === 0) this.finish();
  }

  /** Counts and judges one request: its answer, or the problem that left it without one. */
  private record(inFlight: InFlight, at: number, answer: Reading | undefined, failure: string | undefined): void {
    const latency = at - inFlight.startedAt;
    const { request } = inFlight;
    (inFlight.first ? this.first : this.established).push(latency);
    let perLabel = this.byLabel.get(request.label);
    if (perLabel === undefined) {
      perLabel = { samples: new Samples(), errors: 0 };
      this.byLabel.set(request.label, perLabel);
    }
    perLabel.samples.push(latency);
    const second = Math.floor((at - this.t0) / 1000);
    while (this.perSecond.length <= second) this.perSecond.push(0);
    this.perSecond[second] = (this.perSecond[second] ?? 0) + 1;
    this.lastAnswerAt = Math.max(this.lastAnswerAt, at);
    if (answer !== undefined) {
      this.statuses[String(answer.status)] = (this.statuses[String(answer.status)] ?? 0) + 1;
      if (at <= this.endAt) this.answeredInRun++;
    }
    const problem = failure ?? (answer === undefined ? 'no answer' : this.judge(request, answer));
    if (problem !== undefined) this.countProblem(request, problem);
  }

  /** One error, grouped with its like (same label, same problem up to the details). */
  private countProblem(request: PlannedRequest, problem: string): void {
    this.errors++;
    const perLabel = this.byLabel.get(request.label);
    if (perLabel !== undefined) perLabel.errors++;
    const kind = `${request.label} ${(problem.split(':')[0] ?? '').replace(/\d+/g, 'N')}`;
    const known = this.problems.get(kind);
    if (known !== undefined) known.count++;
    else this.problems.set(kind, { label: request.label, sent: `${request.method} ${request.path}${Object.entries(request.headers).map(([name, value]) => ` [${name}: ${value}]`).join('')}`, problem, count: 1 });
  }

  /** What is wrong with a whole answer, if anything. */
  private judge(request: PlannedRequest, answer: Reading): string | undefined {
    const wanted = request.expect;
    if (answer.status !== wanted.status) {
      const snippet = Buffer.concat(answer.kept).subarray(0, SNIPPET_BYTES).toString('utf8');
      return `answered ${answer.status} (expected ${wanted.status}): ${snippet}`;
    }
    const digest = answer.headers.get('docker-content-digest');
    if (wanted.digest !== undefined && digest !== wanted.digest) return `Docker-Content-Digest ${digest ?? 'missing'}, expected ${wanted.digest}`;
    const length = answer.headers.get('content-length');
    if (wanted.length !== undefined && length !== String(wanted.length)) return `Content-Length ${length ?? 'missing'}, expected ${wanted.length}`;
    if (wanted.bodyDigest !== undefined && answer.hash !== undefined) {
      const got = `sha256:${answer.hash.digest('hex')}`;
      if (got !== wanted.bodyDigest) return `body of ${answer.received} bytes hashes to ${got}, expected ${wanted.bodyDigest}`;
      this.verified++;
    }
    if (wanted.bodySlice !== undefined) {
      const { file, start, end } = wanted.bodySlice;
      const expected = (this.expectedFiles.get(file) as Buffer).subarray(start, end + 1);
      if (!Buffer.concat(answer.kept).equals(expected)) return `range body differs from bytes ${start}-${end} of the blob`;
      this.verified++;
    }
    return undefined;
  }

  private finish(): void {
    if (this.finished) return;
    this.finished = true;
    this.stopTimers();
    // Still without an answer at the hard stop: each counts as an error.
    for (const check of this.lateChecks.values()) check(-1, 'no answer by the hard stop');
    for (const socket of this.sockets) socket.destroy();
    this.lag.disable();
    const cpu = process.cpuUsage();
    const elapsedS = Math.max(0.001, (this.lastAnswerAt - this.t0) / 1000);
    const all = Samples.summary(this.first, this.established);
    this.done({
      requests: all.count,
      elapsedS: round(elapsedS),
      reqPerS: Math.round(this.answeredInRun / this.plan.durationS),
      all,
      first: Samples.summary(this.first),
      established: Samples.summary(this.established),
      byLabel: Object.fromEntries([...this.byLabel].sort(([a], [b]) => a.localeCompare(b)).map(([label, { samples, errors }]) => [label, { ...Samples.summary(samples), errors }])),
      statuses: this.statuses,
      errors: this.errors,
      errorExamples: [...this.problems.values()].sort((a, b) => b.count - a.count),
      connectionsOpened: this.opened,
      reopened: this.reopened,
      bodiesVerified: this.verified,
      bytesReceived: this.bytes,
      perSecond: this.perSecond,
      clientCpuS: round((cpu.user + cpu.system) / 1e6),
      clientLagP99Ms: round(this.lag.percentile(99) / 1e6),
    });
  }
}

/** Status line and headers; the body's framing (a HEAD, 204 and 304 have none, whatever they announce). */
function parseHead(text: string, method: string): Reading | undefined {
  const lines = text.split('\r\n');
  const status = /^HTTP\/1\.[01] (\d{3})/.exec(lines[0] ?? '');
  if (status === null) return undefined;
  const headers = new Map<string, string>();
  for (const line of lines.slice(1)) {
    const colon = line.indexOf(':');
    if (colon > 0) headers.set(line.slice(0, colon).trim().toLowerCase(), line.slice(colon + 1).trim());
  }
  const code = Number(status[1]);
  const reading: Reading = { status: code, headers, framing: 'none', remaining: 0, chunkState: 'size', line: Buffer.alloc(0), received: 0, hash: undefined, kept: [], keptBytes: 0 };
  if (method === 'HEAD' || code === 204 || code === 304 || (code >= 100 && code < 200)) return reading;
  if (/\bchunked\b/i.test(headers.get('transfer-encoding') ?? '')) {
    reading.framing = 'chunked';
    return reading;
  }
  const length = headers.get('content-length');
  if (length === undefined || !/^\d+$/.test(length)) return undefined; // a keep-alive answer must say where it ends
  reading.framing = 'length';
  reading.remaining = Number(length);
  return reading;
}

function isWhole(reading: Reading): boolean {
  if (reading.framing === 'none') return true;
  if (reading.framing === 'length') return reading.remaining === 0;
  return reading.chunkState === 'trailer' && reading.remaining === -1;
}

/** Feeds body bytes to the answer (hash, kept bytes); returns what follows the body (the next answer's bytes). */
function consumeBody(reading: Reading, chunk: Buffer, keep: boolean): Buffer {
  const take = (bytes: Buffer): void => {
    reading.received += bytes.length;
    reading.hash?.update(bytes);
    if (keep) reading.kept.push(bytes);
    else if (reading.keptBytes < SNIPPET_BYTES) reading.kept.push(bytes.subarray(0, SNIPPET_BYTES - reading.keptBytes));
    reading.keptBytes += bytes.length;
  };
  if (reading.framing === 'length') {
    const body = chunk.subarray(0, reading.remaining);
    take(body);
    reading.remaining -= body.length;
    return chunk.subarray(body.length);
  }
  let rest = chunk;
  while (rest.length > 0) {
    if (reading.chunkState === 'data') {
      const body = rest.subarray(0, reading.remaining);
      take(body);
      reading.remaining -= body.length;
      rest = rest.subarray(body.length);
      if (reading.remaining === 0) reading.chunkState = 'data-end';
      continue;
    }
    // size, data-end and trailer are lines
    const line = Buffer.concat([reading.line, rest]);
    const end = line.indexOf(CRLF);
    if (end === -1) {
      reading.line = line;
      return Buffer.alloc(0);
    }
    reading.line = Buffer.alloc(0);
    rest = line.subarray(end + CRLF.length);
    const text = line.subarray(0, end).toString('latin1');
    if (reading.chunkState === 'size') {
      const size = Number.parseInt(text.split(';')[0] ?? '', 16);
      reading.remaining = Number.isNaN(size) ? 0 : size;
      reading.chunkState = size > 0 ? 'data' : 'trailer';
    } else if (reading.chunkState === 'data-end') {
      reading.chunkState = 'size';
    } else if (text === '') {
      reading.remaining = -1; // the empty line after the trailers: the answer is whole
      return rest;
    }
  }
  return rest;
}

/** Runs a plan file's load and writes its report: the child process's whole job. */
function main(): void {
  const [planFile, reportFile] = process.argv.slice(2);
  if (planFile === undefined || reportFile === undefined) throw new Error('usage: load-generator.ts PLAN.json REPORT.json');
  const plan = JSON.parse(readFileSync(planFile, 'utf8')) as LoadPlan;
  const generator = new Generator(plan, (report) => {
    writeFileSync(reportFile, JSON.stringify(report));
    process.exit(0);
  });
  generator.start();
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) main();
