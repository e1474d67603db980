// The OCI conformance suite v1.1.1 from the team's kit (../shared/oci-conformance): built once per machine from its
// offline source bundle (build.sh, Debian's Go; cached under the system's temporary folder by the bundle's hash)
// and run with run.sh, whose one-line summary is parsed.

import { createHash } from 'node:crypto';
import { access, constants, mkdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { runCommand } from './commands.js';
import { sharedKit } from './shared-kit.js';
import { makeTempDir } from './temp.js';

export interface ConformanceResult {
  passed: number;
  failed: number;
  skipped: number;
  /** run.sh's summary line. */
  summary: string;
  /** The names of the failed specs. */
  failures: string[];
}

/** The built test binary's path; built when this bundle has not been built on this machine yet. */
export async function buildConformanceSuite(): Promise<string> {
  const kit = await sharedKit('oci-conformance');
  const bundle = await readFile(path.join(kit, 'src.tar.gz'));
  const folder = path.join(tmpdir(), `regmirror-oci-conformance-${createHash('sha256').update(bundle).digest('hex').slice(0, 16)}`);
  const binary = path.join(folder, 'oci-conformance.test');
  try {
    await access(binary, constants.X_OK);
    return binary;
  } catch {
    // not built yet
  }
  await mkdir(folder, { recursive: true });
  const partial = `${binary}.partial`;
  await rm(partial, { force: true });
  await runCommand('bash', [path.join(kit, 'build.sh'), partial], { env: { ...process.env, GOCACHE: path.join(folder, 'go-cache') }, timeoutMs: 600_000 });
  await runCommand('mv', [partial, binary]);
  return binary;
}

/** Runs the suite with these OCI_* variables; resolves whatever the specs say (the caller judges). */
export async function runConformanceSuite(binary: string, variables: Record<string, string>): Promise<ConformanceResult> {
  const kit = await sharedKit('oci-conformance');
  const runDir = await makeTempDir('oci-conformance-run-');
  const env = { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: runDir, OCI_RUN_DIR: runDir, OCI_REPORT_DIR: 'none', ...variables };
  let stdout: string;
  let stderr: string;
  try {
    ({ stdout, stderr } = await runCommand('bash', [path.join(kit, 'run.sh'), binary], { env, timeoutMs: 600_000 }));
  } catch (error) {
    // run.sh exits as the binary does (1 when a spec failed): its summary is in the error's output.
    const message = error instanceof Error ? error.message : String(error);
    stdout = message;
    stderr = message;
  }
  const summary = /oci-conformance v[\d.]+: .*/.exec(stdout)?.[0] ?? `no summary: ${stdout.slice(-2000)}`;
  const count = (label: string): number => Number(new RegExp(`(\\d+) ${label}`).exec(summary)?.[1] ?? Number.NaN);
  const failures = [...stderr.matchAll(/^failed: (.*)$/gm)].map((match) => match[1] ?? '');
  return { passed: count('passed'), failed: count('failed'), skipped: count('skipped'), summary, failures };
}
