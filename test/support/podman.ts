// podman for tests, fully private: storage (vfs), run root, libpod tmp dir, events log, containers.conf,
// registries.conf, signature policy and auth file all in one temp dir. podman has no daemon; each call
// is one bounded command.
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { hermeticEnv, requireCommand, runCommand } from './commands.js';
import { makeTempDir, removeDir } from './temp.js';

export interface RegistryMirrorEntry {
  location: string;
  insecure?: boolean;
}

export interface RegistryEntry {
  /** The name clients use, e.g. docker.io. */
  prefix: string;
  /** Where the registry really is; tried after every mirror. */
  location: string;
  insecure?: boolean;
  mirrors: RegistryMirrorEntry[];
}

export interface PodmanOptions {
  registries: RegistryEntry[];
  /** Extra environment for podman (it is the one that talks to registries). */
  env?: NodeJS.ProcessEnv;
}

export interface PodmanImage {
  /** The image ID: its config digest, without `sha256:`. */
  id: string;
  /** The manifest digest the pulled reference resolved to. */
  digest: string;
  repoTags: string[];
}

export interface Podman {
  dir: string;
  registriesConfPath: string;
  /** `podman --root … ARGS…`; resolves with stdout. */
  podman(args: string[], opts?: { timeoutMs?: number }): Promise<string>;
  pull(ref: string, opts?: { timeoutMs?: number }): Promise<void>;
  inspectImage(ref: string): Promise<PodmanImage>;
  destroy(): Promise<void>;
}

/** The `[[registry]]` tables (registries.conf v2) for the given registries and their mirrors. */
export function registriesConf(registries: RegistryEntry[]): string {
  const lines: string[] = [];
  for (const registry of registries) {
    lines.push('[[registry]]', `prefix = ${JSON.stringify(registry.prefix)}`, `location = ${JSON.stringify(registry.location)}`);
    if (registry.insecure === true) lines.push('insecure = true');
    lines.push('');
    for (const mirror of registry.mirrors) {
      lines.push('[[registry.mirror]]', `location = ${JSON.stringify(mirror.location)}`);
      if (mirror.insecure === true) lines.push('insecure = true');
      lines.push('');
    }
  }
  return lines.join('\n');
}

/** storage.conf of the test's podman: vfs (no mounts, works as root anywhere), everything under dir. */
export function podmanStorageConf(dir: string): string {
  return ['[storage]', 'driver = "vfs"', `runroot = ${JSON.stringify(path.join(dir, 'runroot'))}`, `graphroot = ${JSON.stringify(path.join(dir, 'root'))}`, ''].join('\n');
}

/** containers.conf of the test's podman: no journald, no systemd. */
export const PODMAN_CONTAINERS_CONF = ['[engine]', 'events_logger = "file"', 'cgroup_manager = "cgroupfs"', ''].join('\n');

/** The global flags every podman call of the tests gets. */
export function podmanGlobalArgs(dir: string): string[] {
  return [
    '--root', path.join(dir, 'root'),
    '--runroot', path.join(dir, 'runroot'),
    '--storage-driver', 'vfs',
    '--tmpdir', path.join(dir, 'libpod-tmp'),
    '--events-backend', 'file',
    '--cgroup-manager', 'cgroupfs',
  ];
}

export async function makePodman(opts: PodmanOptions): Promise<Podman> {
  const podmanCommand = await requireCommand('podman');
  const dir = await makeTempDir('regmirror-podman');
  const file = (name: string): string => path.join(dir, name);
  // No short-name search: every reference in the tests is fully qualified.
  await writeFile(file('registries.conf'), `unqualified-search-registries = []\n\n${registriesConf(opts.registries)}`);
  await writeFile(file('storage.conf'), podmanStorageConf(dir));
  await writeFile(file('containers.conf'), PODMAN_CONTAINERS_CONF);
  await writeFile(file('policy.json'), '{"default":[{"type":"insecureAcceptAnything"}]}\n');
  await writeFile(file('auth.json'), '{"auths":{}}\n', { mode: 0o600 });
  const env = hermeticEnv(dir, {
    XDG_RUNTIME_DIR: file('xdg-run'),
    XDG_CONFIG_HOME: file('xdg-config'),
    XDG_DATA_HOME: file('xdg-data'),
    CONTAINERS_CONF: file('containers.conf'),
    CONTAINERS_REGISTRIES_CONF: file('registries.conf'),
    CONTAINERS_STORAGE_CONF: file('storage.conf'),
    REGISTRY_AUTH_FILE: file('auth.json'),
    ...opts.env,
  });
  const globalArgs = podmanGlobalArgs(dir);

  const podman = async (args: string[], runOpts: { timeoutMs?: number } = {}): Promise<string> =>
    (await runCommand(podmanCommand, [...globalArgs, ...args], { env, cwd: dir, timeoutMs: runOpts.timeoutMs ?? 60_000 })).stdout;

  return {
    dir,
    registriesConfPath: file('registries.conf'),
    podman,
    pull: async (ref, pullOpts = {}) => {
      await podman(['pull', '--signature-policy', file('policy.json'), ref], { timeoutMs: pullOpts.timeoutMs ?? 120_000 });
    },
    inspectImage: async (ref) => {
      const [image] = JSON.parse(await podman(['image', 'inspect', ref])) as Array<{ Id: string; Digest: string; RepoTags: string[] | null }>;
      if (image === undefined) throw new Error(`podman image inspect ${ref}: no image`);
      return { id: image.Id, digest: image.Digest, repoTags: image.RepoTags ?? [] };
    },
    destroy: () => removeDir(dir),
  };
}
