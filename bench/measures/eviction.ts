// Eviction at scale, in this process (regmirror alone: distribution 2.8.2 has no size-bounded eviction, so no
// row has a peer or a ratio to one). Data directories of N images sharing base layers — records with their graph
// and holders through the SQLite MetadataStore, a small real file per object — and at each N: the time to decide
// (totals, flushAccess, planEviction) and to free (LocalRegistry.removeContent: records, then files) a tenth of
// what is held and 1 GiB, and CacheEvictor.run() end to end (the first, a later one, an age check) with the
// longest the event loop was blocked meanwhile.

import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { CacheEvictor, type EvictionBounds } from '../../src/cache/evictor.js';
import { planEviction, type EvictionPlan } from '../../src/cache/eviction-plan.js';
import { GarbageCollector } from '../../src/cache/garbage-collector.js';
import type { ContentReference } from '../../src/oci/manifest.js';
import type { RepositoryRef } from '../../src/meta/metadata-store.js';
import { SQLITE_FILE, SqliteMetadataStore } from '../../src/meta/sqlite-store.js';
import { digestOf, type Digest } from '../../src/oci/digest.js';
import { LocalRegistry } from '../../src/registry/local-registry.js';
import { FsObjectStore } from '../../src/store/fs-store.js';
import { CONTENT_FOLDER, contentKey } from '../../src/store/layout.js';
import { Metrics } from '../../src/telemetry/metrics.js';
import { runCommand } from '../../test/support/commands.js';
import { deterministicBytes, MEDIA_TYPES } from '../../test/support/images.js';
import { makeTempDir, removeDir } from '../../test/support/temp.js';
import type { BenchBasics } from '../lib/context.js';
import { fmt, type Row } from '../lib/report.js';
import { median, MiB, ratio } from '../lib/stats.js';

const KiB = 1024;
const GiB = 1024 * MiB;
const DAY_MS = 86_400_000;

/** Per image: a config and this many layers of its own, and BASE_LAYERS layers of its base, which IMAGES_PER_BASE images share. */
const OWN_LAYERS = 9;
const BASE_LAYERS = 2;
const IMAGES_PER_BASE = 50;
const REPOSITORIES = 200;
/** Recorded sizes, [least, most]: what the bound counts. An image holds about 18 MiB of its own. */
const CONFIG_BYTES = [2 * KiB, 8 * KiB] as const;
const OWN_LAYER_BYTES = [512 * KiB, 3.5 * MiB] as const;
const BASE_LAYER_BYTES = [10 * MiB, 50 * MiB] as const;
/** The files themselves (their digests are of these bytes): 100k of them take about 0.4 GB of disk. */
const FILE_BYTES = [1 * KiB, 4 * KiB] as const;
/** Files written at once while seeding. */
const WRITE_BATCH = 64;

/** The default cache.inUseWindow. */
const IN_USE_WINDOW_MS = 60_000;
/**
 * Before each decision, reads of this many images (manifest and blobs) are noted: what flushAccess writes. A fixed
 * number at every count: the traffic since the last flush (5 s at most) sets it, not what the cache holds.
 */
const READS_NOTED = 20;
/** The "free 1 GB", in the bound's unit. */
const ONE_GIB = GiB;
/** Growth from the smallest to the largest count still called flat. */
const FLAT = 1.5;
/** The longest the event loop may be blocked by a run, at every count. */
const BLOCK_LIMIT_MS = 100;

interface SeededImage {
  manifest: Digest;
  /** Its config and layers, base layers included. */
  blobs: Digest[];
}

interface Seeded {
  images: number;
  blobs: number;
  dataDir: string;
  store: FsObjectStore;
  meta: SqliteMetadataStore;
  local: LocalRegistry;
  byImage: SeededImage[];
  heldBytes: number;
  diskKiB: number;
  /** What the LocalRegistry logged (damage): nothing, or the figures are not of what was meant. */
  warnings: string[];
  /** Draws for the reads noted before each decision. */
  random: () => number;
}

/** Pseudo-random numbers in [0, 1), the same every run, so every run seeds and reads alike. */
function draws(seed: number, count: number): () => number {
  const words = deterministicBytes(count * 4, seed);
  let index = 0;
  return () => {
    const value = words.readUInt32LE((index % count) * 4) / 2 ** 32;
    index += 1;
    return value;
  };
}

function between(random: () => number, [least, most]: readonly [number, number]): number {
  return Math.round(least + random() * (most - least));
}

/** Content files with their bytes, written WRITE_BATCH at a time straight to their keys. */
class FileWriter {
  private pending: Array<{ digest: Digest; bytes: Buffer }> = [];

  constructor(private readonly store: FsObjectStore) {}

  /** Small bytes of a fresh seed, and their digest. */
  async add(seed: number, random: () => number): Promise<Digest> {
    const bytes = deterministicBytes(between(random, FILE_BYTES), seed);
    return this.addBytes(bytes);
  }

  async addBytes(bytes: Buffer): Promise<Digest> {
    const digest = digestOf(bytes);
    this.pending.push({ digest, bytes });
    if (this.pending.length >= WRITE_BATCH) await this.flush();
    return digest;
  }

  async flush(): Promise<void> {
    const batch = this.pending;
    this.pending = [];
    await Promise.all(batch.map(({ digest, bytes }) => writeFile(this.store.filePath(contentKey(digest)), bytes)));
  }
}

/**
 * A data directory of `images` images, each read last at some time in the past 30 days (never within the in-use
 * window), its base layers as recent as the latest of their images. Files are written without the fs store's
 * fsyncs (two per object: seeding 100k objects would take several times as long); they are removed through it.
 */
async function seed(images: number, say: (text: string) => void): Promise<Seeded> {
  const dataDir = await makeTempDir(`regmirror-bench-eviction-${fmt.count(images)}-`);
  const store = new FsObjectStore(dataDir);
  await store.init();
  for (let folder = 0; folder < 256; folder++) await mkdir(store.filePath(`${CONTENT_FOLDER}/sha256/${folder.toString(16).padStart(2, '0')}`), { recursive: true });
  const meta = new SqliteMetadataStore(path.join(dataDir, SQLITE_FILE));
  const warnings: string[] = [];
  const local = new LocalRegistry(store, meta, { metrics: new Metrics(), log: { warn: (_fields, message) => warnings.push(message) } });
  const files = new FileWriter(store);
  const random = draws(images, 64 * images + 1024);
  let fileSeed = 0;
  const now = Date.now();
  const readAt = Array.from({ length: images }, () => now - 30 * DAY_MS + Math.round(random() * 29 * DAY_MS));
  const bases = Math.ceil(images / IMAGES_PER_BASE);
  const baseOf = (image: number): number => image % bases;
  const baseReadAt = new Array<number>(bases).fill(0);
  readAt.forEach((at, image) => (baseReadAt[baseOf(image)] = Math.max(baseReadAt[baseOf(image)] ?? 0, at)));
  const baseLayers: Array<Array<{ digest: Digest; size: number }>> = [];
  for (let base = 0; base < bases; base++) {
    const layers = [];
    for (let layer = 0; layer < BASE_LAYERS; layer++) layers.push({ digest: await files.add(fileSeed++, random), size: between(random, BASE_LAYER_BYTES) });
    baseLayers.push(layers);
  }

  const byImage: SeededImage[] = [];
  for (let image = 0; image < images; image++) {
    if (image % 1000 === 0) say(`eviction at scale: seeding ${fmt.count(images)} images, ${image} written`);
    const at = readAt[image] ?? now;
    const holder: RepositoryRef = { registry: 'docker.io', name: `bench/app-${image % REPOSITORIES}` };
    const config = { digest: await files.add(fileSeed++, random), size: between(random, CONFIG_BYTES) };
    await meta.putBlob(config.digest, config.size, at, holder);
    const layers = [...(baseLayers[baseOf(image)] ?? [])];
    for (const layer of layers) await meta.putBlob(layer.digest, layer.size, at, holder);
    for (let layer = 0; layer < OWN_LAYERS; layer++) {
      const own = { digest: await files.add(fileSeed++, random), size: between(random, OWN_LAYER_BYTES) };
      await meta.putBlob(own.digest, own.size, at, holder);
      layers.push(own);
    }
    const bytes = Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: MEDIA_TYPES.ociManifest,
        config: { mediaType: MEDIA_TYPES.ociConfig, ...config },
        layers: layers.map((layer) => ({ mediaType: MEDIA_TYPES.ociLayerGzip, ...layer })),
      }),
    );
    const manifest = await files.addBytes(bytes);
    const references: ContentReference[] = [{ digest: config.digest, role: 'config' }, ...layers.map((layer): ContentReference => ({ digest: layer.digest, role: 'layer' }))];
    await meta.putManifest({ digest: manifest, mediaType: MEDIA_TYPES.ociManifest, size: bytes.length }, at, { references, holder });
    await meta.putTag(holder, `v${image}`, { digest: manifest, fetchedAt: at });
    byImage.push({ manifest, blobs: references.map((reference) => reference.digest) });
  }
  await files.flush();
  // Each image's putBlob of a base layer set its last read to that image's: the base's latest image's is the one.
  for (const [base, layers] of baseLayers.entries()) for (const layer of layers) await meta.putBlob(layer.digest, layer.size, baseReadAt[base] ?? now);

  const totals = await meta.totals();
  const du = await runCommand('du', ['-sk', dataDir]);
  return {
    images,
    blobs: totals.blobs,
    dataDir,
    store,
    meta,
    local,
    byImage,
    heldBytes: totals.blobBytes + totals.manifestBytes,
    diskKiB: Number(du.stdout.split(/\s/)[0]),
    warnings,
    random: draws(images + 1, 65_536),
  };
}

/** Reads of READS_NOTED images, one to two hours ago, noted in memory as hits note them (flushAccess writes them). */
async function noteReads(data: Seeded): Promise<void> {
  const now = Date.now();
  for (let read = 0; read < READS_NOTED; read++) {
    const image = data.byImage[Math.floor(data.random() * data.byImage.length)];
    if (image === undefined) continue;
    const at = now - 2 * 3_600_000 + Math.round(data.random() * 3_600_000);
    await data.meta.touchManifest(image.manifest, at);
    for (const blob of image.blobs) await data.meta.touchBlob(blob, at);
  }
}

/** V8's full collection, exposed at run time: the heap a decision holds is measured between two of them. */
function fullCollection(): () => void {
  setFlagsFromString('--expose-gc');
  return runInNewContext('gc') as () => void;
}

interface Decision {
  ms: number;
  /** Roots the plan read: what it walked, which grows with what it evicts, not with what is held. */
  rootsRead: number;
  /** Heap the plan holds, after a full collection. */
  heapBytes: number;
  plan: EvictionPlan;
  readBefore: number;
}

/** What the evictor does to decide, timed: totals, flushAccess, planEviction (roots by last read, paced). */
async function decide(data: Seeded, freeBytes: number, collect: () => void): Promise<Decision> {
  await noteReads(data);
  collect();
  const heapBefore = process.memoryUsage().heapUsed;
  const started = performance.now();
  const totals = await data.meta.totals();
  const heldBytes = totals.blobBytes + totals.manifestBytes;
  await data.meta.flushAccess();
  const readBefore = Date.now();
  const plan = await planEviction(data.meta, { pinned: new Set(), heldBytes, targetBytes: heldBytes - freeBytes, inUseSince: readBefore - IN_USE_WINDOW_MS });
  const ended = performance.now();
  collect();
  const heapBytes = process.memoryUsage().heapUsed - heapBefore;
  if (!plan.reachesTarget || plan.blobs.length === 0) throw new Error(`eviction at ${fmt.count(data.images)} images: the plan does not free ${freeBytes} bytes`);
  return { ms: ended - started, rootsRead: plan.rootsRead, heapBytes, plan, readBefore };
}

interface Freeing {
  ms: number;
  /** The removal's SQLite transaction: synchronous, before the first file is deleted. */
  recordsMs: number;
  objects: number;
  bytes: number;
}

async function free(data: Seeded, { plan, readBefore }: Decision): Promise<Freeing> {
  const started = performance.now();
  const removal = data.local.removeContent({ manifests: plan.manifests, blobs: plan.blobs, readBefore });
  const recordsMs = performance.now() - started;
  const removed = await removal;
  const ms = performance.now() - started;
  const entries = [...removed.manifests, ...removed.blobs];
  if (entries.length !== plan.manifests.length + plan.blobs.length) throw new Error(`eviction at ${fmt.count(data.images)} images: ${entries.length} of ${plan.manifests.length + plan.blobs.length} planned objects removed`);
  for (const { digest } of [entries[0], entries[entries.length - 1]].filter((entry) => entry !== undefined)) {
    if ((await data.store.stat(contentKey(digest))) !== undefined) throw new Error(`eviction: the file of removed ${digest} is still there`);
  }
  return { ms, recordsMs, objects: entries.length, bytes: entries.reduce((sum, entry) => sum + entry.size, 0) };
}

interface EvictorRun {
  ms: number;
  /** The longest the event loop waited meanwhile (monitorEventLoopDelay). */
  blockMs: number;
  objects: number;
  freedBytes: number;
}

/** Work timed, and the longest the event loop was blocked meanwhile (monitorEventLoopDelay, 1 ms timer). */
async function monitored<T>(work: () => Promise<T>): Promise<{ value: T; ms: number; blockMs: number }> {
  const monitor = monitorEventLoopDelay({ resolution: 1 });
  monitor.enable();
  const started = performance.now();
  try {
    const value = await work();
    const ms = performance.now() - started;
    // The monitor's timer records a block when it next fires: after work whose end was a synchronous stretch too.
    await new Promise((resolve) => setTimeout(resolve, 5));
    return { value, ms, blockMs: monitor.max / 1e6 };
  } finally {
    monitor.disable();
  }
}

/**
 * Three CacheEvictor.run()s of one evictor: two with cache.maxSize just under what is held — the first after start
 * (it walks the whole graph once, to backfill references), then a later one, as every run after it — and then an
 * age check (cache.maxAge of a year) that finds nothing to evict.
 */
async function runEvictor(data: Seeded): Promise<ScaleFigures['run']> {
  const failures: string[] = [];
  // The evictor reads its bounds from this object at each run: lowering maxSizeBytes here makes the next run evict.
  const bounds: EvictionBounds = { maxSizeBytes: undefined, minFreeSpace: { bytes: 0 }, inUseWindowMs: IN_USE_WINDOW_MS, maxAgeMs: undefined };
  const evictor = new CacheEvictor(data.local, bounds, new Metrics(), {
    dataDir: data.dataDir,
    pinned: () => new Set(),
    log: { info: () => undefined, warn: (_fields, message) => failures.push(message), error: (_fields, message) => failures.push(message) },
  });
  const once = async (): Promise<EvictorRun> => {
    const before = await data.meta.totals();
    bounds.maxSizeBytes = before.blobBytes + before.manifestBytes - 1;
    await noteReads(data);
    const { value: report, ms, blockMs } = await monitored(() => evictor.run());
    const after = await data.meta.totals();
    if (report.reason !== 'max_size' || !report.reachesTarget || failures.length > 0) throw new Error(`eviction at ${fmt.count(data.images)} images: the run did not reach its target (${failures.join('; ')})`);
    return { ms, blockMs, objects: before.blobs + before.manifests - after.blobs - after.manifests, freedBytes: report.freedBytes };
  };
  // With cache.maxAge set, a run every minute sums the records and reads the least recently read roots.
  const ageCheck = async (): Promise<EvictorRun> => {
    bounds.maxSizeBytes = undefined;
    bounds.maxAgeMs = 365 * DAY_MS;
    const { value: report, ms, blockMs } = await monitored(() => evictor.run());
    if (report.images !== 0 || failures.length > 0) throw new Error(`eviction at ${fmt.count(data.images)} images: the age check evicted ${report.images} images (${failures.join('; ')})`);
    return { ms, blockMs, objects: 0, freedBytes: 0 };
  };
  try {
    return { first: await once(), later: await once(), ageCheck: await ageCheck() };
  } finally {
    await evictor.close();
  }
}

/**
 * A garbage collection at the scale (gc.grace of a year: everything is recent, so it removes nothing): the cost of
 * the mark over the graph and the orphan scan over every file and record, and its longest event-loop block.
 */
async function runCollector(data: Seeded): Promise<EvictorRun> {
  const collector = new GarbageCollector(data.local, {
    graceMs: 365 * DAY_MS,
    pinned: () => new Set(),
    abandonedTemporaryMs: DAY_MS,
    metrics: new Metrics(),
    log: { info: () => undefined, error: () => undefined },
  });
  const { value: report, ms, blockMs } = await monitored(() => collector.run({ dryRun: false }));
  const removed = Object.values(report.removed).reduce((sum, count) => sum + count, 0);
  if (removed !== 0) throw new Error(`gc at ${fmt.count(data.images)} images removed ${removed} objects from a cache where everything is recent`);
  return { ms, blockMs, objects: report.marked, freedBytes: 0 };
}

interface ScaleFigures {
  name: string;
  images: number;
  blobs: number;
  heldBytes: number;
  diskKiB: number;
  tenth: Decision[];
  freeTenth: Freeing;
  gib: Decision[];
  freeGib: Freeing;
  /** The first run, a later one, and a cache.maxAge check that finds nothing to evict. */
  run: { first: EvictorRun; later: EvictorRun; ageCheck: EvictorRun };
  gc: EvictorRun;
}

async function measureScale(ctx: BenchBasics, images: number, collect: () => void): Promise<ScaleFigures> {
  const name = fmt.count(images);
  const data = await seed(images, (text) => ctx.say(text));
  try {
    const decisions = async (what: string, freeBytes: number): Promise<Decision[]> => {
      const made: Decision[] = [];
      for (let run = 1; run <= ctx.runs; run++) {
        ctx.say(`eviction at scale: ${name} images, deciding ${what}, run ${run}/${ctx.runs}`);
        made.push(await decide(data, freeBytes, collect));
      }
      return made;
    };
    const tenth = await decisions('a tenth', Math.floor(data.heldBytes / 10));
    ctx.say(`eviction at scale: ${name} images, freeing a tenth`);
    const freeTenth = await free(data, lastOf(tenth));
    const gib = await decisions('1 GiB', ONE_GIB);
    ctx.say(`eviction at scale: ${name} images, freeing 1 GiB`);
    const freeGib = await free(data, lastOf(gib));
    ctx.say(`eviction at scale: ${name} images, CacheEvictor.run()`);
    const run = await runEvictor(data);
    ctx.say(`eviction at scale: ${name} images, GarbageCollector.run()`);
    const gc = await runCollector(data);
    if (data.warnings.length > 0) throw new Error(`eviction at ${name} images: the registry logged ${data.warnings.join('; ')}`);
    return { name, images, blobs: data.blobs, heldBytes: data.heldBytes, diskKiB: data.diskKiB, tenth, freeTenth, gib, freeGib, run, gc };
  } finally {
    await data.meta.close();
    await removeDir(data.dataDir);
  }
}

function lastOf<T>(values: readonly T[]): T {
  const last = values[values.length - 1];
  if (last === undefined) throw new Error('no runs');
  return last;
}

export async function evictionMeasures(ctx: BenchBasics): Promise<Row[]> {
  const counts = ctx.quick ? [200, 1_000] : [1_000, 5_000, 10_000];
  const collect = fullCollection();
  const scales: ScaleFigures[] = [];
  // One at a time: a data directory is removed before the next is seeded, so the disk holds one at most.
  for (const images of counts) scales.push(await measureScale(ctx, images, collect));

  const ms = (decisions: Decision[]): number[] => decisions.map((decision) => decision.ms);
  const rate = (freeing: Freeing): string => `${Math.round((freeing.objects / freeing.ms) * 1000)}/s`;
  const describe = `${scales.map((scale) => scale.name).join(' / ')} images (${scales.map((scale) => fmt.count(scale.blobs)).join(' / ')} blobs)`;
  const row = (id: string, measure: string, pick: (scale: ScaleFigures) => number[], cell: (scale: ScaleFigures, value: number) => string, unit: string, flat?: number): Row =>
    scaleRow(id, `eviction: ${measure}, ${describe}`, scales, pick, cell, unit, flat);
  const block = row(
    'eviction-loop-block',
    'longest event-loop block during those runs (monitorEventLoopDelay): the first, then the later; ratio of the later',
    (scale) => [scale.run.later.blockMs],
    (scale) => `${fmt.ms(scale.run.first.blockMs)}, then ${fmt.ms(scale.run.later.blockMs)}`,
    'ms',
  );
  return [
    row(
      'eviction-decide-tenth',
      'time to decide to free a tenth of what is held (totals, flushAccess, planEviction over roots by last read, paced); ratio and target per root read',
      (scale) => scale.tenth.map((decision) => decision.ms / decision.rootsRead),
      (scale) => `${fmt.ms(median(ms(scale.tenth)))} (${median(scale.tenth.map((decision) => decision.rootsRead))} roots read)`,
      'ms per root read',
      FLAT,
    ),
    row(
      'eviction-free-tenth',
      'time to free that tenth (LocalRegistry.removeContent: the records in transactions of 10 ms of work, then each file), objects removed per second; ratio and target per object',
      (scale) => [scale.freeTenth.ms / scale.freeTenth.objects],
      (scale) => `${fmt.seconds(scale.freeTenth.ms / 1000)}: ${scale.freeTenth.objects} objects, ${rate(scale.freeTenth)} (records ${fmt.ms(scale.freeTenth.recordsMs)})`,
      'ms per object',
      FLAT,
    ),
    row(
      'eviction-gib',
      'time to decide and free 1 GiB (recorded bytes): decide + free',
      (scale) => [median(ms(scale.gib)) + scale.freeGib.ms],
      (scale) => `${fmt.ms(median(ms(scale.gib)))} + ${fmt.ms(scale.freeGib.ms)} (${scale.freeGib.objects} objects, ${rate(scale.freeGib)})`,
      'ms',
      FLAT,
    ),
    row(
      'eviction-run',
      'CacheEvictor.run() end to end, cache.maxSize just under what is held (down to the low watermark: a tenth): the first after start (walks the whole graph once, to backfill references), then a later one; ratio of the later',
      (scale) => [scale.run.later.ms],
      (scale) => `${fmt.seconds(scale.run.first.ms / 1000)} (${scale.run.first.objects} objects), then ${fmt.seconds(scale.run.later.ms / 1000)} (${scale.run.later.objects} objects, ${fmt.mib(scale.run.later.freedBytes)})`,
      'ms',
    ),
    { ...block, target: `≤ ${BLOCK_LIMIT_MS} ms at every count`, met: scales.every((scale) => Math.max(scale.run.first.blockMs, scale.run.later.blockMs) <= BLOCK_LIMIT_MS) },
    row(
      'eviction-age-check',
      'a cache.maxAge check that evicts nothing (one a minute when cache.maxAge is set): the run, and its longest event-loop block',
      (scale) => [scale.run.ageCheck.blockMs],
      (scale, value) => `${fmt.ms(scale.run.ageCheck.ms)}, block ${fmt.ms(value)}`,
      'ms',
    ),
    row(
      'eviction-gc',
      'a garbage collection that removes nothing (everything recent): the mark over the graph and the scan of every file and record; its longest event-loop block',
      (scale) => [scale.gc.ms],
      (scale) => `${fmt.seconds(scale.gc.ms / 1000)} (${fmt.count(scale.gc.objects)} marked), block ${fmt.ms(scale.gc.blockMs)}`,
      'ms',
    ),
    row('eviction-heap', 'heap the plan holds while deciding a tenth (after a full collection)', (scale) => scale.tenth.map((decision) => decision.heapBytes), (_scale, value) => fmt.mib(value), 'bytes'),
    {
      ...row('eviction-data', 'the data directories: recorded bytes held; disk used by the files and the database', (scale) => [scale.heldBytes], (scale) => `${(scale.heldBytes / GiB).toFixed(0)} GiB; ${(scale.diskKiB / 1024).toFixed(0)} MiB`, 'bytes'),
      ratio: '—',
      // What the cells leave out, for the results file: each decision's parts and each removal's transaction.
      note: JSON.stringify(
        scales.map((scale) => ({
          images: scale.name,
          blobs: scale.blobs,
          diskKiB: scale.diskKiB,
          decideMs: [...scale.tenth, ...scale.gib].map((decision) => decision.ms),
          rootsRead: [...scale.tenth, ...scale.gib].map((decision) => decision.rootsRead),
          freeTenthRecordsMs: scale.freeTenth.recordsMs,
          freeGibRecordsMs: scale.freeGib.recordsMs,
        })),
      ),
    },
  ];
}

const NO_PEER = '— (2.8.2 has no size bound)';

/** A row over the counts: the medians in one cell, the growth from the smallest count to the largest; flat: within that growth. */
function scaleRow(
  id: string,
  measure: string,
  scales: readonly ScaleFigures[],
  pick: (scale: ScaleFigures) => number[],
  cell: (scale: ScaleFigures, value: number) => string,
  unit: string,
  flat: number | undefined,
): Row {
  const samples = Object.fromEntries(scales.map((scale) => [scale.name, pick(scale)]));
  const medians = Object.fromEntries(scales.map((scale) => [scale.name, median(pick(scale))]));
  const first = scales[0]?.name ?? '';
  const last = scales[scales.length - 1]?.name ?? '';
  const growth = ratio(medians[last] ?? Number.NaN, medians[first] ?? Number.NaN);
  return {
    id,
    measure,
    peer: NO_PEER,
    regmirror: scales.map((scale) => cell(scale, medians[scale.name] ?? Number.NaN)).join(' / '),
    ratio: `${fmt.times(growth)} (${last} / ${first})`,
    target: flat === undefined ? '—' : `flat (≤ ${flat}× from ${first} to ${last} images)`,
    met: flat === undefined ? undefined : growth <= flat,
    samples,
    medians,
    unit,
  };
}
