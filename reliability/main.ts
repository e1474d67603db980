// `npm run reliability`: runs every suite (or one) at full scale against real servers on loopback, prints a
// table row per suite and writes reliability/results/<date>.json. Exits non-zero when a suite found violations.

import { access, mkdir, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { progress, progressDone } from '../bench/lib/progress.js';
import { describeViolation, type Suite, type SuiteResult } from './lib/result.js';
import { runFaults } from './suites/faults.js';
import { runFuzz } from './suites/fuzz.js';
import { runLoad } from './suites/load.js';

const RELIABILITY_DIR = path.dirname(fileURLToPath(import.meta.url));
/** Every suite, in the order they run. */
const SUITES: Record<string, Suite> = { faults: runFaults, fuzz: runFuzz, load: runLoad };

const USAGE = `npm run reliability -- [--suite NAME] [--seed N] [--note TEXT]
  --suite NAME  run one suite: ${Object.keys(SUITES).join(', ')}
  --seed N      repeat a run's choices exactly (each suite prints the seed it used)
  --note TEXT   kept in the results file (e.g. "machine shared with test suites")`;

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      suite: { type: 'string' },
      seed: { type: 'string' },
      note: { type: 'string' },
      help: { type: 'boolean', default: false },
    },
    strict: true,
  });
  if (values.help) {
    console.log(USAGE);
    return;
  }
  const names = values.suite === undefined ? Object.keys(SUITES) : [values.suite];
  for (const name of names) if (!(name in SUITES)) throw new Error(`--suite: unknown suite ${name}; one of ${Object.keys(SUITES).join(', ')}`);
  const seed = values.seed === undefined ? undefined : Number(values.seed);
  if (seed !== undefined && (!Number.isSafeInteger(seed) || seed < 0)) throw new Error(`--seed: expected a non-negative integer, got ${values.seed ?? ''}`);
  await access(path.join(RELIABILITY_DIR, '..', 'dist', 'cli.js')).catch((error: unknown) => {
    throw new Error('dist/cli.js is missing: npm run build (reliability/run.sh does)', { cause: error });
  });

  const date = new Date().toISOString().replace(/:/g, '-').replace(/\.\d+Z$/, 'Z');
  const startedAt = Date.now();
  const results: Array<SuiteResult & { durationS: number }> = [];
  try {
    for (const name of names) {
      const suiteStarted = Date.now();
      const result = await (SUITES[name] as Suite)('full', { ...(seed === undefined ? {} : { seed }), say: progress });
      results.push({ ...result, durationS: Math.round((Date.now() - suiteStarted) / 1000) });
    }
  } finally {
    progressDone();
  }

  for (const result of results) {
    if (result.violations.length === 0) continue;
    console.log(`\n${result.suite}: ${result.violations.length} distinct violations`);
    for (const violation of result.violations) console.log(`  - ${describeViolation(violation)}`);
  }
  const table = [
    '| suite | tried | violations | figures |',
    '|---|---|---|---|',
    ...results.map((result) => `| ${result.suite} | ${result.tried} | ${Number(result.figures.violations ?? result.violations.length)} | ${headlineFigures(result)} |`),
  ].join('\n');
  console.log(`\n${table}\n`);

  const resultsDir = path.join(RELIABILITY_DIR, 'results');
  await mkdir(resultsDir, { recursive: true });
  const file = path.join(resultsDir, `${date}${values.suite === undefined ? '' : `-${values.suite}`}.json`);
  const record = {
    date,
    suites: names,
    note: values.note,
    durationS: Math.round((Date.now() - startedAt) / 1000),
    machine: { cpus: os.cpus().length, cpuModel: os.cpus()[0]?.model, memoryBytes: os.totalmem(), loadAverage: os.loadavg(), node: process.version },
    table,
    results,
  };
  await writeFile(file, `${JSON.stringify(record, null, 2)}\n`);
  console.log(`results: ${path.relative(process.cwd(), file)}`);
  if (results.some((result) => result.violations.length > 0)) process.exitCode = 1;
}

/** The figures worth a glance in the table: everything except the per-kind and per-status breakdowns, which stay in the JSON. */
function headlineFigures(result: SuiteResult): string {
  return Object.entries(result.figures)
    .filter(([key]) => !key.includes(':') || /^rss|^loggedErrors/.test(key))
    .map(([key, value]) => `${key} ${value}`)
    .join(', ');
}

main().catch((error: unknown) => {
  progressDone();
  console.error(error instanceof Error ? (error.stack ?? error.message) : error);
  process.exitCode = 1;
});
