// Runs one load (load-generator.ts) in a child process and watches the server meanwhile: its resident memory
// each second and its CPU time, from /proc, so a suite can compare memory early in the load with memory at its end.

import { randomUUID } from 'node:crypto';
import { readFile, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { residentBytes, startProcess } from '../../test/support/processes.js';
import type { LoadPlan, LoadReport } from './load-generator.js';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const GENERATOR = path.join(HERE, 'load-generator.ts');
const REPOSITORY = path.join(HERE, '..', '..');

export interface LoadRun {
  report: LoadReport;
  /** The server's RSS, read about once a second from the generator's start until it exited. */
  rss: Array<{ atS: number; bytes: number }>;
  /** CPU seconds (user + system) the server spent while the generator ran. */
  serverCpuS: number | undefined;
}

/** Linux reports process times in USER_HZ, 100 a second on every architecture Node runs on. */
const USER_HZ = 100;

/** A process's user + system CPU seconds so far, from /proc/PID/stat (fields 14 and 15, after the name). */
async function cpuSeconds(pid: number | undefined): Promise<number | undefined> {
  if (pid === undefined) return undefined;
  try {
    const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(fields[11]) + Number(fields[12])) / USER_HZ;
  } catch {
    return undefined;
  }
}

/**
 * Runs plan against the server whose process is serverPid; files go to dir. Rejects if the generator fails or
 * outlives the plan by a minute (it stops itself well before).
 */
export async function generateLoad(plan: LoadPlan, options: { serverPid: number | undefined; dir: string; say?: (line: string) => void }): Promise<LoadRun> {
  const id = randomUUID();
  const planFile = path.join(options.dir, `load-plan-${id}.json`);
  const reportFile = path.join(options.dir, `load-report-${id}.json`);
  await writeFile(planFile, JSON.stringify(plan));
  const cpuBefore = await cpuSeconds(options.serverPid);
  // tsx from this repository's node_modules, whatever the caller's working directory
  const child = startProcess(process.execPath, ['--import', 'tsx', GENERATOR, planFile, reportFile], { cwd: REPOSITORY });
  const rss: LoadRun['rss'] = [];
  let sampler: NodeJS.Timeout | undefined;
  const limitMs = (plan.durationS + 60) * 1000 + plan.answerDeadlineMs;
  const overrun = setTimeout(() => void child.stop('SIGKILL'), limitMs);
  try {
    await child.waitForLine(/^started$/, 30_000);
    const startedAt = Date.now();
    let lastSaid = 0;
    sampler = setInterval(() => {
      const atS = (Date.now() - startedAt) / 1000;
      if (options.serverPid !== undefined) {
        void residentBytes(options.serverPid).then((bytes) => {
          if (bytes !== undefined) rss.push({ atS: Math.round(atS * 10) / 10, bytes });
        });
      }
      const tick = child.lines().findLast((line) => line.startsWith('tick '));
      if (options.say !== undefined && atS - lastSaid >= 10 && tick !== undefined) {
        lastSaid = atS;
        options.say(`${Math.round(atS)} s, ${tick.split(' ')[2] ?? '?'} answers`);
      }
    }, 1000);
    const code = await child.exited;
    if (code !== 0) throw new Error(`the load generator exited with ${String(code)}:\n${child.lines().slice(-20).join('\n')}`);
    const cpuAfter = await cpuSeconds(options.serverPid);
    const report = JSON.parse(await readFile(reportFile, 'utf8')) as LoadReport;
    return { report, rss, serverCpuS: cpuBefore === undefined || cpuAfter === undefined ? undefined : Math.round((cpuAfter - cpuBefore) * 100) / 100 };
  } finally {
    clearTimeout(overrun);
    clearInterval(sampler);
    await child.stop('SIGKILL');
    await rm(planFile, { force: true });
    await rm(reportFile, { force: true });
  }
}

/** The RSS sample nearest after atS (or the last one), in bytes. */
export function rssAt(run: LoadRun, atS: number): number | undefined {
  return (run.rss.find((sample) => sample.atS >= atS) ?? run.rss.at(-1))?.bytes;
}
