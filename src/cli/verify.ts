// `regmirror verify`: checks a data directory (src/registry/verify.ts) while holding it, so never beside a
// running server; one line per problem, then a summary. Exit 0: all well; 1: problems (even repaired), or the
// check could not finish; 2: bad usage, or the data directory is in use or missing.

import type { ConfigFlags } from '../config/load.js';
import { formatSize } from '../config/size.js';
import { verifyData, type Problem, type VerifySummary } from '../registry/verify.js';
import { V1Layout } from '../store/layout.js';
import { STANDARD_OUTPUT, withDataDirectory, type Output } from './data-directory.js';

export interface VerifyFlags extends Pick<ConfigFlags, 'config' | 'flavor' | 'data'> {
  repair?: boolean;
}

/** Runs the check; resolves with the exit status. */
export async function runVerify(flags: VerifyFlags, output: Output = STANDARD_OUTPUT): Promise<number> {
  const repair = flags.repair === true;
  return withDataDirectory(flags, { command: repair ? 'regmirror verify --repair' : 'regmirror verify', name: 'verify', output, removes: repair }, async ({ settings, dataDir, store, meta }) => {
    const summary = await verifyData(store, meta, {
      repair,
      v1: new V1Layout(settings.v1.storagePrefix),
      onProblem: (problem) => output.out(describeProblem(problem)),
    });
    output.out(describeSummary(dataDir, summary, repair));
    return summary.problems === 0 ? 0 : 1;
  });
}

export function describeProblem(problem: Problem): string {
  const repaired = problem.repaired === undefined ? '' : ` [repaired: ${problem.repaired}]`;
  return `${problem.kind} ${problem.subject}: ${problem.detail}${repaired}`;
}

export function describeSummary(dataDir: string, summary: VerifySummary, repair: boolean): string {
  const hashed = `${summary.contentFiles} content files and ${summary.v1Layers} v1 layers hashed (${formatSize(summary.bytes)}), ${summary.records} records checked`;
  const unverifiable = summary.v1Unverifiable === 0 ? '' : `, ${summary.v1Unverifiable} v1 layers with no payload checksum to check`;
  const outcome =
    summary.problems === 0
      ? 'all well'
      : `${summary.problems} ${summary.problems === 1 ? 'problem' : 'problems'}${repair ? `, ${summary.repaired} repaired` : ' (--repair removes them, to be fetched again)'}`;
  return `verify ${dataDir}: ${hashed}${unverifiable}; ${outcome}`;
}
