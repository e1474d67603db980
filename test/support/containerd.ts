// A private containerd daemon for tests (root, state, sockets in a temp dir; CRI disabled unless asked for), driven
// with ctr: pulls through `hosts.toml` mirrors, and what it then holds (`ctr images ls`, `ctr content ls`).
// dockerd can run on top of it (its "containerd" setting is this daemon's address); kubelet's calls go to its CRI plugin.
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { hermeticEnv, requireCommand, runCommand, startDaemon } from './commands.js';
import { makeTempDir, removeDir } from './temp.js';

export interface ContainerdOptions {
  /** Extra environment for the daemon and for ctr (ctr itself talks to registries on a pull). */
  env?: NodeJS.ProcessEnv;
  /** Run the CRI plugin (what kubelet talks to, on the same socket), reading registries' hosts.toml from this directory. */
  criHostsDir?: string;
}

export interface ContainerdImage {
  ref: string;
  mediaType: string;
  /** The digest the image's reference resolved to (its manifest or index). */
  digest: string;
}

export interface Containerd {
  dir: string;
  /** The gRPC socket: `ctr --address`, dockerd's "containerd". */
  address: string;
  configPath: string;
  /** The daemon's output so far. */
  lines(): string[];
  /** `ctr --address SOCK [--namespace NS] ARGS…`; resolves with stdout. */
  ctr(args: string[], opts?: { namespace?: string; timeoutMs?: number }): Promise<string>;
  /** `ctr images pull --hosts-dir HOSTS_DIR REF` (and unpack). */
  pull(ref: string, hostsDir: string, opts?: { namespace?: string; timeoutMs?: number }): Promise<void>;
  /** `ctr images ls`, by reference. */
  images(namespace?: string): Promise<Map<string, ContainerdImage>>;
  /** `ctr content ls -q`: every blob digest in the content store. */
  contentDigests(namespace?: string): Promise<Set<string>>;
  /** SIGTERM, SIGKILL after 10 s. */
  stop(): Promise<void>;
  /** stop(), then remove the directory. */
  destroy(): Promise<void>;
}

/** The daemon's config.toml: everything under dir; CRI (Kubernetes) disabled, or on with its hosts directory. */
export function containerdConfig(dir: string, criHostsDir?: string): string {
  return [
    'version = 2',
    `root = ${JSON.stringify(path.join(dir, 'root'))}`,
    `state = ${JSON.stringify(path.join(dir, 'state'))}`,
    ...(criHostsDir === undefined ? ['disabled_plugins = ["io.containerd.grpc.v1.cri"]'] : []),
    '',
    '[grpc]',
    `  address = ${JSON.stringify(path.join(dir, 'containerd.sock'))}`,
    '',
    '[ttrpc]',
    `  address = ${JSON.stringify(path.join(dir, 'containerd-ttrpc.sock'))}`,
    '',
    // Otherwise it creates /opt/containerd.
    '[plugins."io.containerd.internal.v1.opt"]',
    `  path = ${JSON.stringify(path.join(dir, 'opt'))}`,
    '',
    ...(criHostsDir === undefined ? [] : criPluginConfig(dir, criHostsDir)),
  ].join('\n');
}

/**
 * The CRI plugin's tables (containerd 1.6 and 1.7): its streaming server on loopback, a CNI directory of its own rather
 * than the host's /etc/cni/net.d (no pod runs here: only its image service is used), and registries from hosts.toml.
 */
export function criPluginConfig(dir: string, hostsDir: string): string[] {
  return [
    '[plugins."io.containerd.grpc.v1.cri"]',
    '  stream_server_address = "127.0.0.1"',
    '  stream_server_port = "0"',
    '',
    '[plugins."io.containerd.grpc.v1.cri".cni]',
    `  bin_dir = ${JSON.stringify(path.join(dir, 'cni', 'bin'))}`,
    `  conf_dir = ${JSON.stringify(path.join(dir, 'cni', 'net.d'))}`,
    '',
    ...criRegistryConfig(hostsDir),
  ];
}

/** What a Kubernetes node's config.toml needs for hosts.toml mirrors (containerd 1.6 and 1.7). */
export function criRegistryConfig(hostsDir: string): string[] {
  return ['[plugins."io.containerd.grpc.v1.cri".registry]', `  config_path = ${JSON.stringify(hostsDir)}`, ''];
}

/**
 * One registry's `hosts.toml`: try the mirror first for pull and resolve, then fall back to `server`
 * (omit server, as in `_default`, to fall back to the registry itself).
 */
export function hostsToml(opts: { server?: string; mirror: string; ca?: string }): string {
  const lines = opts.server === undefined ? [] : [`server = ${JSON.stringify(opts.server)}`, ''];
  lines.push(`[host.${JSON.stringify(opts.mirror)}]`, '  capabilities = ["pull", "resolve"]');
  if (opts.ca !== undefined) lines.push(`  ca = ${JSON.stringify(opts.ca)}`);
  lines.push('');
  return lines.join('\n');
}

/** Writes DIR/<registry>/hosts.toml for each entry (registry `_default` applies to every registry without its own). */
export async function writeHostsDir(dir: string, files: Record<string, string>): Promise<void> {
  for (const [registry, text] of Object.entries(files)) {
    await mkdir(path.join(dir, registry), { recursive: true });
    await writeFile(path.join(dir, registry, 'hosts.toml'), text);
  }
}

/** Parses `ctr images ls`: REF TYPE DIGEST SIZE PLATFORMS LABELS (SIZE holds a space, so only the first three columns are read). */
export function parseCtrImages(text: string): Map<string, ContainerdImage> {
  const images = new Map<string, ContainerdImage>();
  for (const line of text.split('\n').slice(1)) {
    const [ref, mediaType, digest] = line.trim().split(/\s+/);
    if (ref === undefined || mediaType === undefined || digest === undefined || ref === '') continue;
    images.set(ref, { ref, mediaType, digest });
  }
  return images;
}

export async function startContainerd(options: ContainerdOptions = {}): Promise<Containerd> {
  const containerd = await requireCommand('containerd');
  const ctrCommand = await requireCommand('ctr');
  await requireCommand('runc'); // containerd's runtime; without it dockerd on top cannot start
  const dir = await makeTempDir('regmirror-containerd');
  const configPath = path.join(dir, 'config.toml');
  const address = path.join(dir, 'containerd.sock');
  const env = hermeticEnv(dir, options.env);

  const ctr = async (args: string[], opts: { namespace?: string; timeoutMs?: number } = {}): Promise<string> => {
    const namespaceArgs = opts.namespace === undefined ? [] : ['--namespace', opts.namespace];
    const { stdout } = await runCommand(ctrCommand, ['--address', address, ...namespaceArgs, ...args], { env, timeoutMs: opts.timeoutMs ?? 60_000 });
    return stdout;
  };

  await writeFile(configPath, containerdConfig(dir, options.criHostsDir));
  const proc = await startDaemon({
    name: 'containerd',
    command: containerd,
    args: ['--config', configPath],
    env,
    readyLine: /containerd successfully booted/,
    timeoutMs: 30_000,
    check: () => ctr(['version'], { timeoutMs: 15_000 }),
    cleanup: () => removeDir(dir),
  });
  const stop = (): Promise<void> => proc.stop('SIGTERM', 10_000);

  return {
    dir,
    address,
    configPath,
    lines: () => proc.lines(),
    ctr,
    pull: async (ref, hostsDir, opts = {}) => {
      await ctr(['images', 'pull', '--hosts-dir', hostsDir, ref], { ...opts, timeoutMs: opts.timeoutMs ?? 120_000 });
    },
    images: async (namespace) => parseCtrImages(await ctr(['images', 'ls'], namespace === undefined ? {} : { namespace })),
    contentDigests: async (namespace) =>
      new Set((await ctr(['content', 'ls', '-q'], namespace === undefined ? {} : { namespace })).split('\n').map((line) => line.trim()).filter((line) => line !== '')),
    stop,
    destroy: async () => {
      await stop();
      await removeDir(dir);
    },
  };
}
