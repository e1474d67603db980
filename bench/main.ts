// regmirror against distribution 2.8.2 (the peer) on this machine, in one run: starts the upstream with
// the benchmark images, runs each measure alternating the peer and regmirror, prints the table and writes
// bench/results/<date>.json. Usage: see bench/README.md.

import { mkdir, writeFile } from 'node:fs/promises';
import { access } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { requireCommand, runCommand } from '../test/support/commands.js';
import { makeTempDir, removeDir } from '../test/support/temp.js';
import type { BenchBasics, BenchContext } from './lib/context.js';
import { FULL_SIZES, QUICK_SIZES, startUpstream } from './lib/images.js';
import { progress, progressDone } from './lib/progress.js';
import { markdownTable, type Row } from './lib/report.js';
import { authMeasures } from './measures/auth.js';
import { clusterMeasures } from './measures/cluster.js';
import { coldMeasures } from './measures/cold.js';
import { evictionMeasures } from './measures/eviction.js';
import { metadataMeasures } from './measures/metadata.js';
import { pushMeasures } from './measures/push.js';
import { s3Measures } from './measures/s3.js';
import { stalledMeasures } from './measures/stalled.js';
import { warmMeasures } from './measures/warm.js';

const BENCH_DIR = path.dirname(fileURLToPath(import.meta.url));
/**
 * The groups in the order they run; those against the peer need the upstream and its images, the others do not.
 * Those not in the full run (cluster: PostgreSQL, Swift and up to 3 nodes, about 10 minutes) run when named.
 */
const GROUPS = {
  warm: { upstream: true, measures: warmMeasures, full: true },
  cold: { upstream: true, measures: coldMeasures, full: true },
  metadata: { upstream: false, measures: metadataMeasures, full: true },
  stalled: { upstream: true, measures: stalledMeasures, full: true },
  eviction: { upstream: false, measures: evictionMeasures, full: true },
  auth: { upstream: true, measures: authMeasures, full: true },
  s3: { upstream: true, measures: s3Measures, full: true },
  push: { upstream: true, measures: pushMeasures, full: true },
  cluster: { upstream: true, measures: clusterMeasures, full: false },
} as const satisfies Record<string, ({ upstream: true; measures: (ctx: BenchContext) => Promise<Row[]> } | { upstream: false; measures: (ctx: BenchBasics) => Promise<Row[]> }) & { full: boolean }>;
type Group = keyof typeof GROUPS;

const USAGE = `npm run bench -- [--quick] [--runs N] [--only warm,cold,metadata,stalled,eviction,auth,s3,push,cluster] [--cluster] [--note TEXT] [--cpu-prof]
  --quick      layers of 1, 5 and 50 MiB instead of 1, 50 and 500 MiB; 2 runs; short wrk runs
  --runs N     runs per measure (default 5; at least 5 for figures worth quoting)
  --only LIST  some of the groups: warm (cached content), cold (fresh caches), metadata (at scale), stalled (clients that never read),
               eviction (deciding and freeing at scale), auth (warm requests with and without client authentication),
               s3 (warm blob GETs with the content in S3, Swift's s3api, against the fs store; redirected against streamed; fill commit time),
               push (a large layer whole and chunked, and a whole image with skopeo, to a plain instance),
               cluster (1 regmirror node against 3 in cluster mode on PostgreSQL and Swift: 24 cold pulls, warm GETs; not in the full run);
               metadata and eviction need no upstream: alone, none is started
  --cluster    the cluster group: alone, or added to the groups --only names
  --note TEXT  kept in the results file (e.g. "machine shared with test suites")
  --cpu-prof   regmirror writes V8 CPU profiles into bench/results/profiles/<date>/`;

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      quick: { type: 'boolean', default: false },
      runs: { type: 'string' },
      only: { type: 'string' },
      note: { type: 'string' },
      'cpu-prof': { type: 'boolean', default: false },
      cluster: { type: 'boolean', default: false },
      help: { type: 'boolean', default: false },
    },
    strict: true,
  });
  if (values.help) {
    console.log(USAGE);
    return;
  }
  const quick = values.quick;
  const runs = values.runs === undefined ? (quick ? 2 : 5) : Number(values.runs);
  if (!Number.isInteger(runs) || runs < 1 || runs > 50) throw new Error(`--runs: expected 1 to 50, got ${values.runs ?? ''}`);
  const named = values.only?.split(',').map((name) => name.trim());
  for (const name of named ?? []) if (!(name in GROUPS)) throw new Error(`--only: unknown group ${name}; one of ${Object.keys(GROUPS).join(', ')}`);
  const picked = named ?? (values.cluster ? [] : (Object.keys(GROUPS) as Group[]).filter((group) => GROUPS[group].full));
  const groups = values.cluster && !picked.includes('cluster') ? [...picked, 'cluster'] : picked;
  const needsUpstream = (groups as Group[]).some((group) => GROUPS[group].upstream);

  if (needsUpstream) for (const command of ['docker-registry', 'skopeo', 'nginx', 'wrk', 'ab', 'curl']) await requireCommand(command);
  await access(path.join(BENCH_DIR, '..', 'dist', 'cli.js')).catch((error: unknown) => {
    throw new Error('dist/cli.js is missing: npm run build (bench/run.sh does)', { cause: error });
  });

  const date = new Date().toISOString().replace(/:/g, '-').replace(/\.\d+Z$/, 'Z');
  const resultsDir = path.join(BENCH_DIR, 'results');
  const profileDir = path.join(resultsDir, 'profiles', date);
  if (values['cpu-prof']) await mkdir(profileDir, { recursive: true });
  const loadBefore = os.loadavg();
  const scratch = await makeTempDir('regmirror-bench-');
  const basics: BenchBasics = {
    quick,
    runs,
    scratch,
    regmirrorNodeArgs: values['cpu-prof'] ? ['--cpu-prof', `--cpu-prof-dir=${profileDir}`] : [],
    wrkSeconds: quick ? 2 : 10,
    say: progress,
  };
  const rows: Row[] = [];
  const startedAt = Date.now();
  let ctx: BenchContext | undefined;
  try {
    if (needsUpstream) ctx = { ...basics, ...(await startUpstream(path.join(BENCH_DIR, '.cache'), quick ? QUICK_SIZES : FULL_SIZES, progress)) };
    for (const group of groups as Group[]) {
      const chosen = GROUPS[group];
      if (!chosen.upstream) {
        rows.push(...(await chosen.measures(basics)));
        continue;
      }
      if (ctx === undefined) throw new Error(`${group} needs the upstream, which was not started`);
      rows.push(...(await chosen.measures(ctx)));
    }
  } finally {
    progressDone();
    await ctx?.upstream.destroy();
    await removeDir(scratch);
  }

  const images = ctx?.images;
  const table = markdownTable(rows);
  console.log(`\n${table}\n`);
  const results = {
    date,
    quick,
    runs,
    groups,
    note: values.note,
    durationS: Math.round((Date.now() - startedAt) / 1000),
    machine: {
      cpus: os.cpus().length,
      cpuModel: os.cpus()[0]?.model,
      memoryBytes: os.totalmem(),
      loadAverageBefore: loadBefore,
      loadAverageAfter: os.loadavg(),
      node: process.version,
      distribution: needsUpstream ? (await runCommand('docker-registry', ['--version'])).stdout.trim() : undefined,
      nginx: needsUpstream ? (await runCommand('nginx', ['-v'])).stderr.trim() : undefined,
    },
    images: images === undefined ? undefined : { sizes: images.sizes, appPullBytes: images.app.pullBytes, concurrentPullBytes: images.concurrent.pullBytes },
    table,
    rows,
  };
  await mkdir(resultsDir, { recursive: true });
  const file = path.join(resultsDir, `${date}${quick ? '-quick' : ''}.json`);
  await writeFile(file, `${JSON.stringify(results, null, 2)}\n`);
  console.log(`results: ${path.relative(process.cwd(), file)}`);
  const missed = rows.filter((row) => row.met === false);
  console.log(missed.length === 0 ? 'every target met' : `targets not met: ${missed.map((row) => row.id).join(', ')}`);
}

main().catch((error: unknown) => {
  progressDone();
  console.error(error instanceof Error ? (error.stack ?? error.message) : error);
  process.exitCode = 1;
});
