// The faults suite: regmirror between clients and an upstream that fails on purpose (cut, lying, dripping,
// resetting, rate-limiting, failing), killed mid-fill and mid-commit, on a full disk, with its database locked,
// each at points drawn from one seed. After each fault the next pull succeeds, `regmirror verify` finds
// nothing, and no client was ever given a body that looked whole and was not (faults-ledger.ts judges).

import { randomInt } from 'node:crypto';
import { mkdir, rm } from 'node:fs/promises';
import { loadavg } from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { committedBlobPath, fileExists, sha256Of, startFaultUpstream, waitUntil, type FaultDetail, type FaultMode, type FaultUpstream } from '../../test/support/fault-upstream.js';
import { metadataRows } from '../../test/support/data-dir.js';
import { deterministicBytes } from '../../test/support/images.js';
import { startRegmirror, type Regmirror } from '../../test/support/regmirror.js';
import { makeTempDir, removeDir } from '../../test/support/temp.js';
import type { Scale, SuiteOptions, SuiteResult } from '../lib/result.js';
import { SeededRandom } from '../lib/seeded-random.js';
import { holdSqliteLock, mountSmallDisk } from './faults-hazards.js';
import { FaultLedger, sleep, type FaultKind, type Outcome, type Wanted } from './faults-ledger.js';

/** Faults injected per kind: 106 at full scale, 18 in `npm test`. */
const PLAN: Record<Scale, Record<FaultKind, number>> = {
  short: { cut: 3, 'wrong-bytes': 2, reset: 2, drip: 2, '429-storm': 1, '5xx-burst': 1, 'kill-fill': 2, 'kill-commit': 2, 'disk-full': 2, 'sqlite-lock': 1 },
  full: { cut: 14, 'wrong-bytes': 12, reset: 12, drip: 10, '429-storm': 8, '5xx-burst': 8, 'kill-fill': 14, 'kill-commit': 14, 'disk-full': 8, 'sqlite-lock': 6 },
};
/** Faults per regmirror run; each run ends with a stop and a verify (which needs the data directory to itself). */
const BATCH = 6;
const KiB = 1024;
const MiB = 1024 * KiB;
/** Deadlines short enough that a drip outlasts them within seconds (defaults: 60 s of silence, 30 s per manifest). */
const BODY_IDLE_MS = 2_000;
const MIRROR_ENV = { REGMIRROR_TIMEOUTS_BODY_IDLE: `${BODY_IDLE_MS}ms`, REGMIRROR_TIMEOUTS_MANIFEST: '3s' };
const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';
/**
 * How long after a fill's last bytes are released the kill may come: the commit (the tail received and
 * hashed, fsync, rename, fsync of the folder, the record) was done 7–60 ms after the release here, so kills
 * land before, during and after it.
 */
const COMMIT_KILL_WINDOW_MS = 80;
/** The full-disk phase's tmpfs: room for every blob it commits, so only the filler makes it full. */
const DISK_MIB = 48;
/** The longest the upstream drips a body (a drip whose ticks are further apart than BODY_IDLE_MS fails sooner). */
const LONGEST_DRIP_MS = 9_000;

interface Run {
  random: SeededRandom;
  ledger: FaultLedger;
  say: (line: string) => void;
  work: string;
  /** Every phase but the full disk's shares it, so each verify checks everything kept so far. */
  dataDir: string;
  batches: number;
  upstreamRequests: number;
}

/** One batch: a fake upstream with fresh blobs under a repository of its own, and a regmirror in front of it. */
interface Stage {
  upstream: FaultUpstream;
  mirror: Regmirror;
  blobs: Buffer[];
}

/** Runs the faults suite; `options.seed` repeats a run's choices (which object, where, how long) exactly. */
export async function runFaults(scale: Scale, options: SuiteOptions = {}): Promise<SuiteResult> {
  const seed = options.seed ?? randomInt(2 ** 31);
  const say = options.say ?? ((): void => undefined);
  say(`faults: seed ${seed} (repeat with --seed ${seed})`);
  const work = await makeTempDir('regmirror-faults-');
  const ledger = new FaultLedger();
  const run: Run = { random: new SeededRandom(seed), ledger, say, work, dataDir: path.join(work, 'data'), batches: 0, upstreamRequests: 0 };
  for (const key of ['faults', 'responses', 'completeButWrong', 'verifyRuns', 'verifyFindings', 'crashVerifyRuns', 'recoveries', 'violations']) ledger.add(key, 0);
  ledger.figures.seed = seed;
  ledger.figures.loadAverageAtStart = loadavg()[0]?.toFixed(2) ?? '';
  try {
    await mkdir(run.dataDir);
    const plan = PLAN[scale];
    for (const kind of ['cut', 'wrong-bytes', 'reset', 'drip'] as const) await byteFaults(run, kind, plan[kind]);
    for (const kind of ['429-storm', '5xx-burst'] as const) await storms(run, kind, plan[kind]);
    for (const kind of ['kill-fill', 'kill-commit'] as const) await kills(run, kind, plan[kind]);
    await fullDisk(run, plan['disk-full']);
    await lockedDatabase(run, plan['sqlite-lock']);
    ledger.figures.upstreamRequests = run.upstreamRequests;
    ledger.figures.loadAverageAtEnd = loadavg()[0]?.toFixed(2) ?? '';
    return { suite: 'faults', tried: Number(ledger.figures.faults), violations: ledger.violations, figures: ledger.figures };
  } finally {
    await removeDir(work);
  }
}

/** Upstream bodies that go wrong at a random byte: cut (or ended cleanly short), lying, reset, dripping. */
async function byteFaults(run: Run, kind: 'cut' | 'wrong-bytes' | 'reset' | 'drip', count: number): Promise<void> {
  for (const size of batchSizes(count)) {
    const sizes = Array.from({ length: size }, () => run.random.logInt(16 * KiB, 2 * MiB));
    await batch(run, kind, sizes, run.dataDir, async (stage) => {
      let manifestCold = true;
      for (const bytes of stage.blobs) {
        // Now and then the manifest by tag takes the fault instead (once per batch: then it is cached).
        const onManifest: boolean = manifestCold && run.random.chance(0.2);
        manifestCold &&= !onManifest;
        const wanted = onManifest ? manifestWanted(stage) : blobWanted(stage, bytes);
        const fault = byteFault(run.random, kind, wanted.bytes.length);
        run.ledger.add(`${kind}:${fault.variant}`);
        stage.upstream.setMode(fault.mode, onManifest ? 'v1' : wanted.digest, fault.detail);
        await clients(run, kind, wanted, { ranges: !onManifest, most: 3 });
        await faultGone(run, kind, stage);
        await run.ledger.recover(kind, [wanted]);
      }
    });
  }
}

function byteFault(random: SeededRandom, kind: 'cut' | 'wrong-bytes' | 'reset' | 'drip', size: number): { mode: FaultMode; detail: FaultDetail; variant: string } {
  switch (kind) {
    case 'cut':
      return random.chance(0.3)
        ? { mode: 'chunked-short', detail: { at: random.int(0, size - 1) }, variant: 'cleanShortEnd' }
        : { mode: 'cut', detail: { at: random.int(1, size - 1) }, variant: 'connectionClosed' };
    case 'wrong-bytes':
      return { mode: 'wrong-bytes', detail: { at: random.int(0, size - 1) }, variant: 'byteFlipped' };
    case 'reset':
      return { mode: 'reset', detail: { at: random.int(1, size - 1) }, variant: 'rst' };
    case 'drip': {
      const dripIntervalMs = random.int(100, 3_000);
      const ticks = Math.min(random.int(2, 10), Math.max(2, Math.floor(LONGEST_DRIP_MS / dripIntervalMs)));
      const variant = dripIntervalMs > BODY_IDLE_MS ? 'slowerThanIdleTimeout' : 'withinIdleTimeout';
      return { mode: 'slow-drip', detail: { dripIntervalMs, dripBytes: Math.ceil(size / ticks) }, variant };
    }
  }
}

/** An upstream that rate-limits (429 with a Retry-After of 1–3 s) or fails (500) every request for a while. */
async function storms(run: Run, kind: '429-storm' | '5xx-burst', count: number): Promise<void> {
  const perStorm = 3;
  for (const size of batchSizes(count)) {
    // One warm blob for the batch, then three cold ones per storm.
    const sizes = Array.from({ length: 1 + perStorm * size }, () => run.random.logInt(4 * KiB, 256 * KiB));
    await batch(run, kind, sizes, run.dataDir, async (stage) => {
      const [warmBytes, ...coldBytes] = stage.blobs;
      const warm = [blobWanted(stage, warmBytes as Buffer)];
      await run.ledger.expectWhole(kind, warm, 'while warming up');
      let manifestCold = true;
      for (let storm = 0; storm < size; storm++) {
        const targets = coldBytes.slice(storm * perStorm, (storm + 1) * perStorm).map((bytes) => blobWanted(stage, bytes));
        if (manifestCold && run.random.chance(0.5)) {
          targets.push(manifestWanted(stage));
          manifestCold = false;
        }
        const requests = Array.from({ length: run.random.int(4, 12) }, () => ({ wanted: run.random.pick(targets), delayMs: run.random.int(0, 400) }));
        const before = stage.upstream.requests().length;
        if (kind === '429-storm') {
          stage.upstream.setMode('status-429', undefined, { retryAfterS: run.random.int(1, 3) });
          // Concurrent, as a fleet asks: most fail fast once the first 429 opened the circuit.
          await Promise.all(requests.map(({ wanted, delayMs }) => sleep(delayMs).then(() => run.ledger.get(kind, wanted))));
        } else {
          stage.upstream.setMode('status-500');
          for (const { wanted } of requests) await run.ledger.get(kind, wanted);
        }
        await run.ledger.expectWhole(kind, warm, 'during the fault');
        run.ledger.add(`${kind}:clientRequests`, requests.length);
        run.ledger.add(`${kind}:upstreamAnswers`, stage.upstream.requests().length - before);
        await faultGone(run, kind, stage);
        await run.ledger.recover(kind, targets);
      }
    });
  }
}

/**
 * kill -9 of regmirror while the upstream holds a fill open at a random byte ('kill-fill'), or a few
 * milliseconds after it released the last bytes ('kill-commit'); verify right after, then a restart.
 */
async function kills(run: Run, kind: 'kill-fill' | 'kill-commit', count: number): Promise<void> {
  for (const size of batchSizes(count)) {
    const sizes = Array.from({ length: size }, () => run.random.logInt(256 * KiB, 4 * MiB));
    await batch(run, kind, sizes, run.dataDir, async (stage) => {
      for (const bytes of stage.blobs) {
        const wanted = blobWanted(stage, bytes);
        const at = kind === 'kill-fill' ? run.random.int(1, bytes.length - 1) : bytes.length - run.random.int(1, Math.min(bytes.length - 1, 256 * KiB));
        const delayMs = kind === 'kill-fill' ? run.random.int(0, 150) : run.random.int(0, COMMIT_KILL_WINDOW_MS);
        stage.upstream.setMode('held', wanted.digest, { at });
        const answers = clients(run, kind, wanted, { ranges: false, most: 2, killed: true });
        await waitUntil('the upstream holds the fill open', () => stage.upstream.heldCount() > 0, 15_000);
        if (kind === 'kill-commit') stage.upstream.release('rest');
        await sleep(delayMs);
        await stage.mirror.kill9();
        await answers;
        stage.upstream.clearModes();
        run.ledger.add('faults');
        run.ledger.add(`${kind}:faults`);
        const leftovers = await run.ledger.verify(kind, run.dataDir, 'crash');
        if (kind === 'kill-commit') run.ledger.add(`kill-commit:landed:${await commitLanding(run.dataDir, wanted, leftovers)}`);
        await stage.mirror.start();
        await run.ledger.recover(kind, [wanted]);
      }
    });
  }
}

/**
 * Where a kill fell relative to the commit, from what it left (verify's findings): a temporary short of the
 * blob (the tail not all in yet), a whole temporary (verifying, fsync), the file without its record, or both.
 */
async function commitLanding(dataDir: string, wanted: Wanted, problems: string[]): Promise<string> {
  if (!(await fileExists(committedBlobPath(dataDir, wanted.digest)))) {
    const spooled = problems.map((problem) => /^temporary \S+: (\d+) bytes/.exec(problem)).find((match) => match !== null);
    return spooled !== undefined && Number(spooled?.[1]) === wanted.bytes.length ? 'wholeTemporaryNotRenamed' : 'beforeTailSpooled';
  }
  const hex = wanted.digest.replace(/^sha256:/, '');
  return problems.some((problem) => problem.startsWith('orphan-file') && problem.includes(hex)) ? 'renamedNotRecorded' : 'afterCommit';
}

/**
 * The data directory on a small tmpfs, filled so that a random number of bytes smaller than the blob stays
 * free: the fill fails with ENOSPC part way, cached content is still served, and once the filler is gone
 * the same blob is pulled whole.
 */
async function fullDisk(run: Run, count: number): Promise<void> {
  if (count === 0) return;
  const disk = await mountSmallDisk(path.join(run.work, 'disk'), DISK_MIB);
  try {
    const dataDir = path.join(disk.mountPoint, 'data');
    await mkdir(dataDir);
    for (const size of batchSizes(count)) {
      const sizes = [run.random.logInt(16 * KiB, 256 * KiB), ...Array.from({ length: size }, () => run.random.logInt(256 * KiB, 2 * MiB))];
      await batch(run, 'disk-full', sizes, dataDir, async (stage) => {
        const [warmBytes, ...coldBytes] = stage.blobs;
        const warm = [manifestWanted(stage), blobWanted(stage, stage.upstream.config), blobWanted(stage, warmBytes as Buffer)];
        await run.ledger.expectWhole('disk-full', warm, 'while warming up');
        for (const bytes of coldBytes) {
          const wanted = blobWanted(stage, bytes);
          const { filler } = await disk.fillLeaving(run.random.int(0, bytes.length - 1));
          await clients(run, 'disk-full', wanted, { ranges: true, most: 2 });
          await run.ledger.expectWhole('disk-full', warm, 'during the fault');
          await faultGone(run, 'disk-full', stage, () => rm(filler));
          await countUnrecorded(run, 'disk-full', dataDir, [wanted]);
          await run.ledger.recover('disk-full', [wanted]);
        }
      });
    }
  } finally {
    await disk.unmount();
  }
}

/**
 * Another process holds a write lock on metadata.sqlite for 5.5–8 s (longer than regmirror's 5 s busy
 * timeout) while clients ask for a cold blob (and, first in a batch, the cold manifest), then a little later
 * for a cached blob; once it lets go, the same pull succeeds.
 */
async function lockedDatabase(run: Run, count: number): Promise<void> {
  for (const size of batchSizes(count)) {
    const sizes = [run.random.logInt(16 * KiB, 256 * KiB), ...Array.from({ length: size }, () => run.random.logInt(64 * KiB, MiB))];
    await batch(run, 'sqlite-lock', sizes, run.dataDir, async (stage) => {
      const [warmBytes, ...coldBytes] = stage.blobs;
      const warm = blobWanted(stage, warmBytes as Buffer);
      await run.ledger.expectWhole('sqlite-lock', [warm], 'while warming up');
      for (const [index, bytes] of coldBytes.entries()) {
        const wanted = index === 0 ? [manifestWanted(stage), blobWanted(stage, bytes)] : [blobWanted(stage, bytes)];
        const lock = await holdSqliteLock(run.dataDir, run.random.int(5_500, 8_000));
        const longestHealthz = longestHealthzWait(stage.mirror, lock.released);
        const asked = wanted.map((item) => clients(run, 'sqlite-lock', item, { ranges: false, most: 2 }));
        const cached = sleep(run.random.int(0, 1_000)).then(() => run.ledger.get('sqlite-lock', warm));
        await Promise.all([...asked, cached]);
        const cachedOutcome = await cached;
        run.ledger.add(`sqlite-lock:cachedDuringLock:${cachedOutcome.kind === 'refused' ? cachedOutcome.status : cachedOutcome.kind}`);
        await faultGone(run, 'sqlite-lock', stage, () => lock.released);
        await countUnrecorded(run, 'sqlite-lock', run.dataDir, wanted);
        const longest = Math.round(await longestHealthz);
        run.ledger.figures['sqlite-lock:longestHealthzMs'] = Math.max(Number(run.ledger.figures['sqlite-lock:longestHealthzMs'] ?? 0), longest);
        await run.ledger.recover('sqlite-lock', wanted);
      }
    });
  }
}

/**
 * Content committed to a file whose record the failing database or disk refused: harmless (the next pull
 * fetches the blob again and records it), but `regmirror verify` calls each an orphan until then. Counted.
 */
async function countUnrecorded(run: Run, kind: FaultKind, dataDir: string, wanted: Wanted[]): Promise<void> {
  const rows = metadataRows(dataDir);
  const recorded = new Set([...rows.blobs, ...rows.manifests]);
  for (const { digest } of wanted) {
    if (!recorded.has(digest) && (await fileExists(committedBlobPath(dataDir, digest)))) run.ledger.add(`${kind}:fileLeftWithoutRecord`);
  }
}

/** The longest a /healthz probe (one every 250 ms) waited until `until` settles: the process's event loop, seen from outside. */
async function longestHealthzWait(mirror: Regmirror, until: Promise<unknown>): Promise<number> {
  let settled = false;
  until.then(
    () => (settled = true),
    () => (settled = true),
  );
  let longest = 0;
  while (!settled) {
    const started = performance.now();
    await fetch(`${mirror.url}/healthz`, { signal: AbortSignal.timeout(30_000) }).then(
      (response) => response.arrayBuffer(),
      () => undefined,
    );
    longest = Math.max(longest, performance.now() - started);
    await sleep(250);
  }
  return longest;
}

/**
 * Starts a batch's upstream and regmirror, runs its faults, stops both, then verifies the data directory.
 * A batch that throws is a violation; the others still run.
 */
async function batch(run: Run, kind: FaultKind, sizes: number[], dataDir: string, faults: (stage: Stage) => Promise<void>): Promise<void> {
  run.batches += 1;
  const number = run.batches;
  const blobs = sizes.map((size) => deterministicBytes(size, run.random.int(1, 2 ** 31 - 1)));
  const before = Number(run.ledger.figures[`${kind}:faults`] ?? 0);
  // Half the upstreams answer a Range with a 206 (as distribution does: regmirror passes a cold range through),
  // half ignore it (regmirror then fills and serves the range from the fill).
  const ranges = run.random.chance(0.5);
  if (ranges) run.ledger.add('batchesWithRangeUpstream');
  const upstream = await startFaultUpstream({ blobs, repository: `faults/b${number}`, ranges });
  run.ledger.hideAddress(`127.0.0.1:${upstream.port}`);
  let mirror: Regmirror | undefined;
  try {
    mirror = await startRegmirror({ upstreams: [upstream.url], dataDir, env: MIRROR_ENV });
    const stage = { upstream, mirror, blobs };
    await faults(stage);
    await restartIfDead(run, kind, mirror);
    // The next pull: the whole image, as a client pulls it.
    await run.ledger.expectWhole(kind, [manifestWanted(stage), blobWanted(stage, upstream.config), ...blobs.map((bytes) => blobWanted(stage, bytes))], 'in the pull that ends the batch');
  } catch (error) {
    run.ledger.violation(kind, `batch ${number} (faults/b${number})`, `the batch stopped: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}`);
  } finally {
    run.upstreamRequests += upstream.requests().length;
    await mirror?.stop();
    await upstream.stop();
  }
  await run.ledger.verify(kind, dataDir, 'recovered');
  const injected = Number(run.ledger.figures[`${kind}:faults`] ?? 0) - before;
  run.say(`faults: ${kind} batch ${number}: ${injected} faults, ${run.ledger.violations.length} violations so far`);
}

/** A regmirror that died of a fault (nobody killed it) is a violation, with its last words; it is started again so the run goes on. */
async function restartIfDead(run: Run, kind: FaultKind, mirror: Regmirror): Promise<void> {
  const pid = mirror.pid();
  if (pid === undefined || isAlive(pid)) return;
  const lines = mirror.lines();
  const errors = lines.filter((line) => /"level":(50|60)/.test(line)).slice(-3);
  run.ledger.violation(kind, `the faults of batch ${run.batches} (faults/b${run.batches})`, `regmirror exited by itself; its last words:\n${[...errors, ...lines.slice(-30)].join('\n')}`);
  await mirror.stop();
  await mirror.start();
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** Batch sizes for `count` faults: as many BATCH-sized batches as fit, then the rest. */
function batchSizes(count: number): number[] {
  const sizes: number[] = [];
  for (let left = count; left > 0; left -= BATCH) sizes.push(Math.min(BATCH, left));
  return sizes;
}

/**
 * Ends a fault: the upstream behaves again (and `end`, e.g. the filler removed, is done), and every fill the
 * fault started has settled, so the next pull is not a follower of a doomed fill. Counts the fault.
 */
async function faultGone(run: Run, kind: FaultKind, stage: Stage, end?: () => Promise<unknown>): Promise<void> {
  stage.upstream.clearModes();
  await end?.();
  run.ledger.add('faults');
  run.ledger.add(`${kind}:faults`);
  await restartIfDead(run, kind, stage.mirror);
  try {
    await waitUntil('no fill in progress', async () => (await stage.mirror.metricValue('regmirror_fills_in_progress')) === 0, 30_000);
  } catch (error) {
    run.ledger.violation(kind, `waiting for the fills of the fault to settle (faults/b${run.batches})`, error instanceof Error ? error.message : String(error));
  }
}

/**
 * One to `most` clients for the same object, the first at once and the others a few milliseconds apart
 * (followers of the same fill); with `ranges`, some ask for a random byte range. Every answer is judged.
 */
function clients(run: Run, kind: FaultKind, wanted: Wanted, options: { ranges: boolean; most: number; killed?: boolean }): Promise<Outcome[]> {
  const { random } = run;
  const count = random.int(1, options.most);
  const asks = Array.from({ length: count }, (_, index) => {
    const delayMs = index === 0 ? 0 : random.int(0, 40);
    const start = random.int(0, wanted.bytes.length - 1);
    const range = options.ranges && random.chance(0.3) ? { start, end: random.int(start, wanted.bytes.length - 1) } : undefined;
    return { delayMs, range };
  });
  return Promise.all(asks.map(({ delayMs, range }) => sleep(delayMs).then(() => run.ledger.get(kind, wanted, { ...(range === undefined ? {} : { range }), killed: options.killed === true }))));
}

function blobWanted(stage: Stage, bytes: Buffer): Wanted {
  const digest = sha256Of(bytes);
  return { what: `blob ${digest.slice(0, 19)}… (${bytes.length} bytes) of ${stage.upstream.repository}`, url: `${stage.mirror.url}/v2/${stage.upstream.repository}/blobs/${digest}`, bytes, digest };
}

function manifestWanted(stage: Stage): Wanted {
  const { manifest, repository } = stage.upstream;
  return { what: `manifest ${repository}:v1`, url: `${stage.mirror.url}/v2/${repository}/manifests/v1`, bytes: manifest.bytes, digest: manifest.digest, headers: { accept: OCI_MANIFEST } };
}
