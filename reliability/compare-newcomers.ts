// Not a suite: the load suite's newcomers part against two builds of regmirror, alternately, to compare their
// throughput and latencies in the same conditions (how docs/reliability.md measured the accept-fairness change).
//
//   node --import tsx reliability/compare-newcomers.ts --before OTHER/dist/cli.js [--after dist/cli.js] [--rounds 3]
//
// Both builds run side by side against one token-authenticated upstream, each warmed first (content, then 5 s
// on 16 connections so that neither is measured cold); then each round runs the newcomers on one build, then the
// other. Prints a table of every run and the medians; writes reliability/results/<date>-newcomers-ab.json.

import { mkdir, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { median } from '../bench/lib/stats.js';
import { requireCommand } from '../test/support/commands.js';
import type { Regmirror } from '../test/support/regmirror.js';
import { makeTempDir, removeDir } from '../test/support/temp.js';
import { generateLoad } from './lib/load-run.js';
import { newcomersPlan, setUpStage, startMirror, warmUp } from './suites/load.js';

const HERE = path.dirname(fileURLToPath(import.meta.url));

interface Run {
  build: string;
  round: number;
  loadAverage: number;
  reqPerS: number;
  p50Ms: number;
  p99Ms: number;
  maxMs: number;
  firstP99Ms: number;
  firstMaxMs: number;
  over1s: number;
  firstOver1s: number;
  errors: number;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      before: { type: 'string' },
      after: { type: 'string', default: path.join(HERE, '..', 'dist', 'cli.js') },
      rounds: { type: 'string', default: '3' },
      connections: { type: 'string', default: '500' },
      duration: { type: 'string', default: '30' },
    },
    strict: true,
  });
  if (values.before === undefined) throw new Error('--before: the cli.js of the build to compare with (e.g. a worktree of an older commit, built)');
  const rounds = Number(values.rounds);
  const size = { connections: Number(values.connections), durationS: Number(values.duration) };
  for (const command of ['docker-registry', 'skopeo', 'openssl']) await requireCommand(command);
  const builds = { before: path.resolve(values.before), after: path.resolve(values.after) };

  const work = await makeTempDir('regmirror-newcomers-ab-');
  const started: Array<{ destroy(): Promise<void> }> = [];
  const runs: Run[] = [];
  try {
    const stage = await setUpStage(work, 0, started);
    const mirrors: Record<string, Regmirror> = {};
    for (const [build, cli] of Object.entries(builds)) {
      const mirror = await startMirror(stage, cli);
      started.push(mirror);
      await warmUp(stage, mirror);
      await generateLoad({ ...newcomersPlan(stage, mirror.port, { connections: 16, durationS: 5 }), openGapMs: 0 }, { serverPid: mirror.pid(), dir: work });
      mirrors[build] = mirror;
    }
    for (let round = 1; round <= rounds; round++) {
      for (const build of Object.keys(builds)) {
        const mirror = mirrors[build] as Regmirror;
        const loadAverage = os.loadavg()[0] ?? 0;
        console.error(`round ${round}: ${build}, ${size.connections} connections for ${size.durationS} s (load average ${loadAverage.toFixed(2)})`);
        const { report } = await generateLoad(newcomersPlan(stage, mirror.port, size), { serverPid: mirror.pid(), dir: work });
        runs.push({
          build,
          round,
          loadAverage: Math.round(loadAverage * 100) / 100,
          reqPerS: report.reqPerS,
          p50Ms: report.all.p50Ms,
          p99Ms: report.all.p99Ms,
          maxMs: report.all.maxMs,
          firstP99Ms: report.first.p99Ms,
          firstMaxMs: report.first.maxMs,
          over1s: report.all.over1s,
          firstOver1s: report.first.over1s,
          errors: report.errors,
        });
      }
    }
  } finally {
    for (const server of started.reverse()) await server.destroy();
    await removeDir(work);
  }

  const columns: Array<keyof Run> = ['build', 'round', 'loadAverage', 'reqPerS', 'p50Ms', 'p99Ms', 'maxMs', 'firstP99Ms', 'firstMaxMs', 'over1s', 'firstOver1s', 'errors'];
  const lines = [`| ${columns.join(' | ')} |`, `|${columns.map(() => '---').join('|')}|`, ...runs.map((run) => `| ${columns.map((column) => String(run[column])).join(' | ')} |`)];
  for (const build of Object.keys(builds)) {
    const mine = runs.filter((run) => run.build === build);
    lines.push(`| **${build}, median** | | | ${columns.slice(3).map((column) => String(median(mine.map((run) => Number(run[column]))))).join(' | ')} |`);
  }
  const ratio = median(runs.filter((run) => run.build === 'after').map((run) => run.reqPerS)) / median(runs.filter((run) => run.build === 'before').map((run) => run.reqPerS));
  const table = `${lines.join('\n')}\n\nthroughput after / before (medians): ${ratio.toFixed(2)}`;
  console.log(table);
  const date = new Date().toISOString().replace(/:/g, '-').replace(/\.\d+Z$/, 'Z');
  const resultsDir = path.join(HERE, 'results');
  await mkdir(resultsDir, { recursive: true });
  const file = path.join(resultsDir, `${date}-newcomers-ab.json`);
  await writeFile(file, `${JSON.stringify({ date, builds, size, machine: { cpus: os.cpus().length, node: process.version }, runs, table }, null, 2)}\n`);
  console.log(`results: ${path.relative(process.cwd(), file)}`);
}

main().catch((error: unknown) => {
  console.error(error instanceof Error ? (error.stack ?? error.message) : error);
  process.exitCode = 1;
});
