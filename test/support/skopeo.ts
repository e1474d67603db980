// Runs skopeo, the reference v2 client, against loopback registries in a private, hermetic
// environment (own empty auth file, policy and registries.conf; never root's real credentials).
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export interface SkopeoOptions {
  /** Kill skopeo (SIGKILL) and reject after this long; default 120 s. */
  timeoutMs?: number;
}

interface SkopeoSandbox {
  env: NodeJS.ProcessEnv;
  globalArgs: string[];
}

let sandbox: SkopeoSandbox | undefined;

/** The private HOME/auth/policy/registries.conf every skopeo run here uses, made once per process. */
function skopeoSandbox(): SkopeoSandbox {
  if (sandbox !== undefined) return sandbox;
  const home = mkdtempSync(join(tmpdir(), 'regmirror-skopeo-'));
  process.on('exit', () => rmSync(home, { recursive: true, force: true }));
  const authFile = join(home, 'auth.json');
  const policyFile = join(home, 'policy.json');
  const registriesConf = join(home, 'registries.conf');
  writeFileSync(authFile, '{"auths":{}}\n', { mode: 0o600 });
  writeFileSync(policyFile, '{"default":[{"type":"insecureAcceptAnything"}]}\n');
  writeFileSync(registriesConf, 'unqualified-search-registries = []\n');
  const env: NodeJS.ProcessEnv = {
    PATH: process.env.PATH ?? '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin',
    HOME: home,
    XDG_RUNTIME_DIR: home,
    XDG_CONFIG_HOME: join(home, '.config'),
    REGISTRY_AUTH_FILE: authFile,
    CONTAINERS_REGISTRIES_CONF: registriesConf,
    TMPDIR: tmpdir(),
    // Loopback only: never route 127.0.0.1 through a proxy someone configured.
    NO_PROXY: '*',
    no_proxy: '*',
  };
  sandbox = { env, globalArgs: ['--policy', policyFile] };
  return sandbox;
}

function runSkopeo(args: string[], timeoutMs: number): Promise<{ stdout: Buffer; stderr: string }> {
  const { env, globalArgs } = skopeoSandbox();
  const argv = [...globalArgs, ...args];
  return new Promise((resolve, reject) => {
    execFile(
      'skopeo',
      argv,
      { env, encoding: 'buffer', timeout: timeoutMs, killSignal: 'SIGKILL', maxBuffer: 256 * 1024 * 1024 },
      (err, stdout, stderr) => {
        const stderrText = stderr.toString('utf8');
        if (err === null) {
          resolve({ stdout, stderr: stderrText });
          return;
        }
        const why = err.killed ? `killed after ${timeoutMs} ms` : `exit ${String(err.code ?? err.signal)}`;
        reject(new Error(`skopeo ${argv.join(' ')}: ${why}\n${stderrText.trim()}`));
      },
    );
  });
}

/** `skopeo ARGS…` with the private environment; rejects with stderr on a non-zero exit. */
export async function skopeo(args: string[], opts: SkopeoOptions = {}): Promise<{ stdout: string; stderr: string }> {
  const { stdout, stderr } = await runSkopeo(args, opts.timeoutMs ?? 120_000);
  return { stdout: stdout.toString('utf8'), stderr };
}

/**
 * The exact manifest (or index) bytes the registry serves for ref, e.g. docker://127.0.0.1:P/repo:tag. With certDir
 * (a directory holding ca.crt, and client.cert/client.key for mutual TLS), over TLS verified against it.
 */
export async function inspectRaw(ref: string, opts: { tlsVerify?: boolean; certDir?: string; creds?: string; timeoutMs?: number } = {}): Promise<Buffer> {
  const args = ['inspect', '--raw', ...(opts.certDir === undefined ? [`--tls-verify=${String(opts.tlsVerify ?? false)}`] : ['--cert-dir', opts.certDir])];
  if (opts.creds !== undefined) args.push('--creds', opts.creds);
  args.push(ref);
  const { stdout } = await runSkopeo(args, opts.timeoutMs ?? 120_000);
  return stdout;
}

/**
 * Pulls ref into the OCI layout outDir under tag: plain HTTP allowed, or with srcCertDir over TLS verified against its
 * ca.crt; `all` copies every platform of an index.
 */
export async function copyToOci(
  ref: string,
  outDir: string,
  tag: string,
  opts: { all?: boolean; creds?: string; srcCertDir?: string; timeoutMs?: number } = {},
): Promise<void> {
  const args = ['copy', '--quiet', ...(opts.srcCertDir === undefined ? ['--src-tls-verify=false'] : ['--src-cert-dir', opts.srcCertDir])];
  if (opts.all === true) args.push('--all');
  if (opts.creds !== undefined) args.push('--src-creds', opts.creds);
  args.push(ref, `oci:${outDir}:${tag}`);
  await runSkopeo(args, opts.timeoutMs ?? 300_000);
}
