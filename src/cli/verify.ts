// `regmirror verify`: checks a data directory (src/registry/verify.ts) while holding it, so never beside a
// running server; one line per problem, then a summary. Exit 0: all well; 1: problems (even repaired), or the
// check could not finish; 2: bad usage, or the data directory is in use or missing.

import { stat } from 'node:fs/promises';
import path from 'node:path';
import { ConfigError } from '../config/config-error.js';
import { formatSize } from '../config/size.js';
import { loadSettings, type ConfigFlags } from '../config/load.js';
import { MetadataError } from '../meta/metadata-error.js';
import { SQLITE_FILE, SqliteMetadataStore } from '../meta/sqlite-store.js';
import { verifyData, type Problem, type VerifySummary } from '../registry/verify.js';
import { DataDirectoryInUse, DataDirectoryLock } from '../store/data-directory-lock.js';
import { FsObjectStore } from '../store/fs-store.js';
import { V1Layout } from '../store/layout.js';
import { StorageError } from '../store/storage-error.js';
import { describeError } from './describe-error.js';

export interface VerifyFlags extends Pick<ConfigFlags, 'config' | 'flavor' | 'data'> {
  repair?: boolean;
}

export interface Output {
  out(line: string): void;
  err(line: string): void;
}

const STANDARD_OUTPUT: Output = {
  out: (line) => process.stdout.write(`${line}\n`),
  err: (line) => process.stderr.write(`${line}\n`),
};

/** Runs the check; resolves with the exit status. */
export async function runVerify(flags: VerifyFlags, output: Output = STANDARD_OUTPUT): Promise<number> {
  let settings;
  try {
    settings = loadSettings({ config: flags.config, flavor: flags.flavor, data: flags.data }).settings;
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error;
    output.err(`regmirror: ${error.message}`);
    return 2;
  }
  const dataDir = path.resolve(settings.dataDir);
  if (!(await stat(dataDir).then((info) => info.isDirectory(), () => false))) {
    output.err(`regmirror: no data directory at ${dataDir}`);
    return 2;
  }
  let lock;
  try {
    lock = await DataDirectoryLock.acquire(dataDir, flags.repair === true ? 'regmirror verify --repair' : 'regmirror verify');
  } catch (error) {
    if (!(error instanceof DataDirectoryInUse)) throw error;
    output.err(`regmirror: ${error.message}; verify needs it to itself`);
    return 2;
  }
  try {
    const meta = new SqliteMetadataStore(path.join(dataDir, SQLITE_FILE));
    try {
      const summary = await verifyData(new FsObjectStore(dataDir), meta, {
        repair: flags.repair === true,
        v1: new V1Layout(settings.v1.storagePrefix),
        onProblem: (problem) => output.out(describeProblem(problem)),
      });
      output.out(describeSummary(dataDir, summary, flags.repair === true));
      return summary.problems === 0 ? 0 : 1;
    } finally {
      await meta.close();
    }
  } catch (error) {
    if (!(error instanceof StorageError || error instanceof MetadataError)) throw error;
    output.err(`regmirror: verification stopped: ${describeError(error)}`);
    return 1;
  } finally {
    await lock.release();
  }
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
