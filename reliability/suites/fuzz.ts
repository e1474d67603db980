// The fuzz suite: generated hostile requests (fast-check, one seed) against two real regmirrors on loopback,
// one mirroring a distribution 2.8.2 that holds small test images, one plain (v1 writable) holding v1 images;
// each answer judged (fuzz-oracle.ts), the files around each data directory watched, memory compared.

import { randomInt } from 'node:crypto';
import path from 'node:path';
import { requireCommand } from '../../test/support/commands.js';
import { startDistribution, type Distribution } from '../../test/support/distribution.js';
import { buildImageLayout, pushLayout } from '../../test/support/images.js';
import { residentBytes } from '../../test/support/processes.js';
import { startRegmirror, type Regmirror } from '../../test/support/regmirror.js';
import { makeTempDir, removeDir } from '../../test/support/temp.js';
import { makeV1Chain, V1Client } from '../../test/support/v1-client.js';
import { makeCanary, snapshotChanges, type Canary } from '../lib/canary.js';
import { exchange } from '../lib/raw-http.js';
import type { Scale, SuiteOptions, SuiteResult } from '../lib/result.js';
import { categoryOf, Findings, simplerRequests, type Finding } from './fuzz-findings.js';
import { judge, type Expectations } from './fuzz-oracle.js';
import { generateRequests, type FuzzRequest, type KnownContent, type TargetName } from './fuzz-requests.js';
import { toWire } from './fuzz-wire.js';

const REQUESTS = { short: 1_500, full: 12_000 } as const;
/** Requests per target before the memory baseline is read: caches, JIT and pools have filled by then. */
const WARMUP = { short: 250, full: 2_000 } as const;
const DEADLINE_MS = 10_000;
/** At most this many simplifications per finding (each tries every variant once). */
const MINIMIZE_STEPS = 30;
/** Memory flat: RSS after the run at most this much above RSS after warm-up (fraction, plus a floor for noise). */
const RSS_GROWTH = 0.25;
const RSS_SLACK_BYTES = 16 * 1024 * 1024;
const MIB = 1024 * 1024;

interface Target {
  name: TargetName;
  server: Regmirror;
  canary: Canary;
}

/** The servers of a run and what they hold. */
interface Stage {
  upstream: Distribution;
  targets: Target[];
  known: KnownContent;
  expected: Expectations;
  /** Each canary before its server started. */
  before: Record<TargetName, Map<string, string>>;
}

/** What a run gathers: the findings and the figures. */
interface Tally {
  findings: Findings;
  figures: Record<string, number | string>;
  /** Per target, each request sent (method, path, printable), to name the request behind a log line. */
  sent: Record<TargetName, Array<{ method: string; path: string; printable: string }>>;
}

/** Runs the fuzz suite; `options.seed` repeats a run's requests exactly. */
export async function runFuzz(scale: Scale, options: SuiteOptions = {}): Promise<SuiteResult> {
  const seed = options.seed ?? randomInt(2 ** 31);
  const say = options.say ?? ((): void => undefined);
  say(`fuzz: seed ${seed} (repeat with --seed ${seed})`);
  for (const command of ['docker-registry', 'skopeo']) await requireCommand(command);

  const work = await makeTempDir('regmirror-fuzz-');
  const started: Array<{ destroy(): Promise<void> }> = [];
  const tally: Tally = { findings: new Findings(), figures: { seed }, sent: { mirror: [], plain: [] } };
  try {
    const stage = await setUp(work, started);
    const { findings, figures } = tally;
    const requests = generateRequests(stage.known, REQUESTS[scale], seed);
    figures.requests = requests.length;
    const progress = { done: 0, say: (): void => say(`fuzz: ${progress.done}/${requests.length} requests, ${findings.total} violations`) };
    await Promise.all(stage.targets.map((target) => fuzzTarget(stage, target, requests, scale, tally, progress)));

    for (const target of stage.targets) checkAfterRun(target, tally);
    for (const finding of findings.findings) {
      const target = stage.targets.find((candidate) => candidate.name === finding.origin?.target);
      if (target !== undefined) await minimize(finding, target.server.port, stage.expected);
    }
    await stage.upstream.settle();
    figures.upstreamRequests = stage.upstream.accessEntries().length;
    for (const target of stage.targets) await target.server.destroy();
    for (const target of stage.targets) {
      for (const change of snapshotChanges(stage.before[target.name], await target.canary.snapshot())) {
        findings.add(`end ${change}`, { sent: `the whole run against ${target.name}`, problem: `file outside the data directory touched: ${change}` });
      }
    }
    figures.violations = findings.total;
    return { suite: 'fuzz', tried: requests.length, violations: findings.list(), figures };
  } finally {
    for (const server of started.reverse()) await server.destroy();
    await removeDir(work);
  }
}

/**
 * The upstream with its images; the two regmirrors, each data directory inside a canary; the v1 images on the
 * plain one. Start-up and set-up must write nothing beside either data directory.
 */
async function setUp(work: string, started: Array<{ destroy(): Promise<void> }>): Promise<Stage> {
  const upstream = await startDistribution();
  started.push(upstream);
  const v2 = await pushImages(upstream, path.join(work, 'images'));

  const canaries = { mirror: await makeCanary(path.join(work, 'mirror')), plain: await makeCanary(path.join(work, 'plain')) };
  const before = { mirror: await canaries.mirror.snapshot(), plain: await canaries.plain.snapshot() };
  const mirror = await startRegmirror({ upstreams: [upstream.url], dataDir: canaries.mirror.dataDir });
  started.push(mirror);
  const plain = await startRegmirror({ dataDir: canaries.plain.dataDir });
  started.push(plain);
  const v1Images = makeV1Chain('fuzz', [
    { size: 2_000, seed: 801 },
    { size: 40_000, seed: 802 },
  ]);
  const v1Kept = makeV1Chain('fuzz-kept', [
    { size: 3_000, seed: 803 },
    { size: 50_000, seed: 804 },
  ]);
  await new V1Client(plain.url).push('team/app', 'latest', v1Images);
  await new V1Client(plain.url).push('team/kept', 'stable', v1Kept);

  const known: KnownContent = {
    upstreamRegistry: `127.0.0.1:${upstream.port}`,
    v2,
    v1: {
      repositories: ['team/app'],
      tags: ['latest'],
      imageIds: v1Images.map((image) => image.id),
      kept: { repository: 'team/kept', tag: 'stable', imageIds: v1Kept.map((image) => image.id) },
    },
    sentinels: {
      relative: canaries.mirror.sentinelsFromData,
      absolute: [canaries.mirror, canaries.plain].flatMap((canary) => canary.sentinelsFromData.map((relative) => path.resolve(canary.dataDir, relative))),
    },
  };
  const held = new Set(v2.held.flatMap(({ name, manifests, blobs }) => [...v2.tags, ...manifests, ...blobs].map((reference) => `${name}@${reference}`)));
  const expected: Expectations = {
    markers: [canaries.mirror.marker, canaries.plain.marker],
    paths: [work, canaries.mirror.dataDir, canaries.plain.dataDir],
    held: { mirror: held, plain: new Set() },
  };
  return {
    upstream,
    targets: [
      { name: 'mirror', server: mirror, canary: canaries.mirror },
      { name: 'plain', server: plain, canary: canaries.plain },
    ],
    known,
    expected,
    before,
  };
}

/** Sends the target's share of the requests one at a time, judging each answer and watching the canary after each. */
async function fuzzTarget(stage: Stage, target: Target, requests: FuzzRequest[], scale: Scale, tally: Tally, progress: { done: number; say: () => void }): Promise<void> {
  const { findings, figures } = tally;
  const note = (key: string): void => {
    figures[key] = Number(figures[key] ?? 0) + 1;
  };
  // The plain registry's v1 push wrote only inside its data directory; start-up wrote nothing beside it.
  for (const change of snapshotChanges(stage.before[target.name], await target.canary.snapshot())) {
    findings.add(`start ${change}`, { sent: `starting regmirror (${target.name}) and setting it up`, problem: `file outside the data directory touched: ${change}` });
  }
  const queue = requests.map((request, index) => ({ request, index })).filter(({ request }) => request.target === target.name);
  figures[`requests:${target.name}`] = queue.length;
  const port = target.server.port;
  let snapshot = await target.canary.snapshot();
  for (const [position, { request, index }] of queue.entries()) {
    if (position === WARMUP[scale]) figures[`rssAfterWarmupMiB:${target.name}`] = await rssMiB(target.server);
    const wire = toWire(request, port);
    const outcome = await exchange({ port, bytes: wire.bytes, method: request.method, halfClose: wire.halfClose, deadlineMs: DEADLINE_MS });
    const judgement = judge(request, wire, outcome, DEADLINE_MS, stage.expected);
    // A 502/503/504 is the mirror's right answer when the upstream itself failed: its access log says so.
    const gateway = judgement.problems.find((problem) => /^answered 50[234]:/.test(problem));
    if (gateway !== undefined && target.name === 'mirror' && (await upstreamFailed(stage.upstream, request.path))) {
      judgement.problems.splice(judgement.problems.indexOf(gateway), 1);
      note('upstreamFaults');
      figures['upstreamFaults:example'] ??= `#${index} ${wire.printable} → ${gateway}`;
    }
    note(`tried:${request.kind}`);
    note(`status:${judgement.outcome}`);
    if (judgement.refusedByHttp) note('refusedByHttpLayer');
    if (judgement.servedUnderAnotherName) note('servedUnderAnotherName');
    for (const reason of wire.malformed) note(`malformed:${reason}`);
    const sent = `#${index} ${wire.printable}`;
    tally.sent[target.name].push({ method: request.method, path: request.path, printable: sent });
    for (const problem of judgement.problems) findings.addForRequest({ request, target: target.name }, sent, problem);
    const now = await target.canary.snapshot();
    for (const change of snapshotChanges(snapshot, now)) findings.add(`${request.kind} file touched`, { sent, problem: `file outside the data directory touched: ${change}` });
    snapshot = now;
    progress.done++;
    if (progress.done % 1_000 === 0) progress.say();
  }
  figures[`rssAfterMiB:${target.name}`] = await settledRssMiB(target.server);
}

/** Memory flat after the run, and no error-level log line (each an error the code did not expect). */
function checkAfterRun(target: Target, tally: Tally): void {
  const { findings, figures } = tally;
  const warm = Number(figures[`rssAfterWarmupMiB:${target.name}`]);
  const after = Number(figures[`rssAfterMiB:${target.name}`]);
  const bound = Math.round(warm * (1 + RSS_GROWTH) + RSS_SLACK_BYTES / MIB);
  figures[`rssBoundMiB:${target.name}`] = bound;
  if (after > bound) {
    findings.add(`rss ${target.name}`, {
      sent: `the whole run against ${target.name} (${String(figures[`requests:${target.name}`])} requests)`,
      problem: `memory not flat: RSS ${warm} MiB after warm-up, ${after} MiB after the run (bound ${bound} MiB)`,
    });
  }
  const logged = loggedErrors(target.server.lines());
  figures[`loggedErrors:${target.name}`] = logged.length;
  for (const error of logged) {
    const sent = tally.sent[target.name].find((entry) => entry.method === error.method && entry.path === error.path);
    findings.add(`log ${target.name} ${error.method} ${error.summary}`, {
      sent: sent?.printable ?? `${target.name}: ${error.method} ${error.path} (from the access log)`,
      problem: `logged as an unexpected error (${error.summary}), access log status ${error.status}`,
    });
  }
}

/**
 * Sends a finding's request again, then simpler variants of it while the same kind of problem recurs; the
 * finding then shows the simplest request that still does it (or says it did not recur).
 */
async function minimize(finding: Finding, port: number, expected: Expectations): Promise<void> {
  const origin = finding.origin;
  if (origin === undefined) return;
  const category = categoryOf(finding.problem);
  const recurs = async (request: FuzzRequest): Promise<string | undefined> => {
    const wire = toWire(request, port);
    const outcome = await exchange({ port, bytes: wire.bytes, method: request.method, halfClose: wire.halfClose, deadlineMs: DEADLINE_MS });
    return judge(request, wire, outcome, DEADLINE_MS, expected).problems.find((problem) => categoryOf(problem) === category);
  };
  let problem = await recurs(origin.request);
  finding.reproduced = problem !== undefined;
  if (problem === undefined) return;
  let simplest = origin.request;
  for (let step = 0; step < MINIMIZE_STEPS; step++) {
    let simpler: FuzzRequest | undefined;
    for (const candidate of simplerRequests(simplest)) {
      const again = await recurs(candidate);
      if (again === undefined) continue;
      [simpler, problem] = [candidate, again];
      break;
    }
    if (simpler === undefined) break;
    simplest = simpler;
  }
  finding.sent = `${toWire(simplest, port).printable} (simplified from ${finding.sent.slice(0, finding.sent.indexOf(' '))})`;
  finding.problem = problem;
}

/** Whether the upstream answered the same path with a 5xx (the path without its query: the mirror drops it). */
async function upstreamFailed(upstream: Distribution, path: string): Promise<boolean> {
  await upstream.settle();
  const bare = path.split(/[?#]/)[0];
  return upstream.accessEntries().some((entry) => entry.path === bare && entry.status >= 500);
}

interface LoggedError {
  method: string;
  path: string;
  status: number | string;
  summary: string;
}

/** The process's error-level log lines (an error the code did not expect), each with its request from the access log. */
function loggedErrors(lines: string[]): LoggedError[] {
  const parsed = lines.flatMap((line) => {
    if (!line.startsWith('{')) return [];
    try {
      return [JSON.parse(line) as { level?: number; reqId?: string; msg?: string; method?: string; path?: string; status?: number; err?: { message?: string; code?: string } }];
    } catch {
      return [];
    }
  });
  return parsed
    .filter((entry) => (entry.level ?? 0) >= 50)
    .map((entry) => {
      const access = parsed.find((other) => other.msg === 'request' && other.reqId !== undefined && other.reqId === entry.reqId);
      const summary = `${entry.msg ?? ''}: ${entry.err?.message ?? ''}${entry.err?.code === undefined ? '' : ` ${entry.err.code}`}`;
      return { method: access?.method ?? '?', path: access?.path ?? '?', status: access?.status ?? 'unknown', summary };
    });
}

const MANIFEST_TYPES = [
  'application/vnd.oci.image.index.v1+json',
  'application/vnd.oci.image.manifest.v1+json',
  'application/vnd.docker.distribution.manifest.list.v2+json',
  'application/vnd.docker.distribution.manifest.v2+json',
].join(', ');

/** Small images on the upstream (an OCI image, a two-platform index, a Docker schema 2 image), and their digests as the upstream serves them. */
async function pushImages(upstream: Distribution, dir: string): Promise<KnownContent['v2']> {
  const host = `127.0.0.1:${upstream.port}`;
  const app = await buildImageLayout(path.join(dir, 'app'), 'v1', [{ layers: [{ size: 3_000, seed: 901 }, { size: 300_000, seed: 902 }] }]);
  await pushLayout(app, `${host}/team/app:v1`);
  const multi = await buildImageLayout(path.join(dir, 'multi'), 'v1', [
    { layers: [{ size: 5_000, seed: 903 }] },
    { layers: [{ size: 6_000, seed: 904 }], platform: { os: 'linux', architecture: 'arm64', variant: 'v8' } },
  ]);
  await pushLayout(multi, `${host}/team/multi:v1`);
  const docker = await buildImageLayout(path.join(dir, 'docker'), 'v1', [{ layers: [{ size: 1_200_000, seed: 905 }] }]);
  await pushLayout(docker, `${host}/library/docker:v1`, { format: 'v2s2' });

  const names = ['team/app', 'team/multi', 'library/docker'];
  const held: KnownContent['v2']['held'] = [];
  const walk = async (entry: KnownContent['v2']['held'][number], reference: string): Promise<void> => {
    const response = await fetch(`${upstream.url}/v2/${entry.name}/manifests/${reference}`, { headers: { accept: MANIFEST_TYPES } });
    if (!response.ok) throw new Error(`upstream ${entry.name}:${reference}: ${response.status}`);
    entry.manifests.push(response.headers.get('docker-content-digest') ?? '');
    const manifest = (await response.json()) as { manifests?: Array<{ digest: string }>; config?: { digest: string }; layers?: Array<{ digest: string }> };
    for (const child of manifest.manifests ?? []) await walk(entry, child.digest);
    if (manifest.config !== undefined) entry.blobs.push(manifest.config.digest);
    for (const layer of manifest.layers ?? []) entry.blobs.push(layer.digest);
  };
  for (const name of names) {
    const entry = { name, manifests: [], blobs: [] };
    await walk(entry, 'v1');
    held.push(entry);
  }
  return { names, tags: ['v1'], manifestDigests: held.flatMap((entry) => entry.manifests), blobDigests: held.flatMap((entry) => entry.blobs), held };
}

async function rssMiB(server: Regmirror): Promise<number> {
  const pid = server.pid();
  const bytes = pid === undefined ? undefined : await residentBytes(pid);
  if (bytes === undefined) throw new Error('regmirror is not running: no RSS to read');
  return Math.round(bytes / MIB);
}

/** RSS once the last answers are out: the lowest of a few readings a quarter second apart (the heap shrinks lazily). */
async function settledRssMiB(server: Regmirror): Promise<number> {
  let lowest = Number.POSITIVE_INFINITY;
  for (let reading = 0; reading < 8; reading++) {
    await new Promise((resolve) => setTimeout(resolve, 250));
    lowest = Math.min(lowest, await rssMiB(server));
  }
  return lowest;
}
