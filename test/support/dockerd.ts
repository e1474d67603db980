// A private dockerd for tests: data-root, exec-root, pidfile, trust key and API socket in a temp dir,
// on top of a containerd the test started, with no networking of its own (no bridge, no iptables).
// Driven with the docker CLI through DOCKER_HOST. With certsD, dockerd trusts registries' CAs from a directory of the test.
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { startContainerd } from './containerd.js';
import { hermeticEnv, requireCommand, runCommand, startDaemon, unmountUnder } from './commands.js';
import { makeTempDir, removeDir } from './temp.js';

export interface DockerdOptions {
  /** The gRPC socket of a running containerd (see containerd.ts). */
  containerdAddress: string;
  /** `registry-mirrors`, e.g. ['http://127.0.0.1:5000']. */
  registryMirrors: string[];
  /** `insecure-registries`, e.g. ['127.0.0.1:5000']. */
  insecureRegistries?: string[];
  /** Extra environment for the daemon (it is the one that talks to registries). */
  env?: NodeJS.ProcessEnv;
  /**
   * Give dockerd a certs.d of the test's own (Dockerd.certsD, `HOST:PORT/ca.crt`). dockerd 20.10 has no setting for
   * its path (/etc/docker/certs.d, or ~/.config/docker/certs.d only under RootlessKit), so the daemon runs in a mount
   * namespace of its own where a directory of the test is bind-mounted over /etc/docker: nothing of the host changes.
   */
  privateCertsD?: boolean;
}

export interface DockerImage {
  /** The image ID: its config digest. */
  id: string;
  /** NAME@sha256:… of the manifest each pulled name resolved to. */
  repoDigests: string[];
}

export interface Dockerd {
  dir: string;
  /** unix://DIR/docker.sock */
  host: string;
  configPath: string;
  /** With privateCertsD: the directory dockerd sees as /etc/docker/certs.d. */
  certsD: string;
  lines(): string[];
  /** `docker ARGS…` against this daemon; resolves with stdout. */
  docker(args: string[], opts?: { timeoutMs?: number }): Promise<string>;
  pull(ref: string, opts?: { timeoutMs?: number }): Promise<void>;
  inspectImage(ref: string): Promise<DockerImage>;
  /** SIGTERM (dockerd then undoes its mounts), SIGKILL after 20 s. */
  stop(): Promise<void>;
  /** stop(), unmount what is left, remove the directory. */
  destroy(): Promise<void>;
}

/** The registry part of daemon.json: what a node running dockerd needs to pull Docker Hub images through a mirror. */
export function registryMirrorSettings(registryMirrors: string[], insecureRegistries: string[] = []): Record<string, unknown> {
  return {
    'registry-mirrors': registryMirrors,
    ...(insecureRegistries.length === 0 ? {} : { 'insecure-registries': insecureRegistries }),
  };
}

/** The whole daemon.json of the test daemon: its own directories and socket, no networking, then the registry settings. */
export function dockerdConfig(dir: string, opts: DockerdOptions): Record<string, unknown> {
  return {
    'data-root': path.join(dir, 'data'),
    'exec-root': path.join(dir, 'exec'),
    pidfile: path.join(dir, 'dockerd.pid'),
    // dockerd 20.10 writes its trust key to /etc/docker/key.json otherwise.
    'deprecated-key-path': path.join(dir, 'key.json'),
    hosts: [`unix://${path.join(dir, 'docker.sock')}`],
    containerd: opts.containerdAddress,
    bridge: 'none',
    iptables: false,
    ip6tables: false,
    'ip-forward': false,
    'ip-masq': false,
    ...registryMirrorSettings(opts.registryMirrors, opts.insecureRegistries),
  };
}

export async function startDockerd(opts: DockerdOptions): Promise<Dockerd> {
  const dockerd = await requireCommand('dockerd');
  const dockerCli = await requireCommand('docker');
  const dir = await makeTempDir('regmirror-dockerd');
  const configPath = path.join(dir, 'daemon.json');
  const socket = path.join(dir, 'docker.sock');
  const host = `unix://${socket}`;
  const daemonEnv = hermeticEnv(dir, opts.env);
  // The CLI gets its own config directory: never root's credentials or contexts.
  const cliEnv = hermeticEnv(dir, { DOCKER_HOST: host, DOCKER_CONFIG: path.join(dir, 'cli') });

  const docker = async (args: string[], runOpts: { timeoutMs?: number } = {}): Promise<string> =>
    (await runCommand(dockerCli, args, { env: cliEnv, timeoutMs: runOpts.timeoutMs ?? 60_000 })).stdout;
  const cleanup = async (): Promise<void> => {
    await unmountUnder(dir);
    await removeDir(dir);
  };

  await writeFile(configPath, `${JSON.stringify(dockerdConfig(dir, opts), null, 2)}\n`);
  const etcDocker = path.join(dir, 'etc-docker');
  const certsD = path.join(etcDocker, 'certs.d');
  await mkdir(certsD, { recursive: true });
  // unshare and sh exec into dockerd: one process, so the helper's signals reach dockerd itself.
  const [command, args] = opts.privateCertsD === true
    ? [await requireCommand('unshare'), ['--mount', '--propagation', 'private', 'sh', '-c', 'mount --bind "$0" /etc/docker && exec "$@"', etcDocker, dockerd, '--config-file', configPath]]
    : [dockerd, ['--config-file', configPath]];
  const proc = await startDaemon({
    name: 'dockerd',
    command,
    args,
    env: daemonEnv,
    readyLine: /API listen on /,
    timeoutMs: 60_000,
    check: () => docker(['version'], { timeoutMs: 15_000 }),
    cleanup,
  });
  const stop = (): Promise<void> => proc.stop('SIGTERM', 20_000);

  return {
    dir,
    host,
    configPath,
    certsD,
    lines: () => proc.lines(),
    docker,
    pull: async (ref, pullOpts = {}) => {
      await docker(['pull', ref], { timeoutMs: pullOpts.timeoutMs ?? 120_000 });
    },
    inspectImage: async (ref) => {
      const [image] = JSON.parse(await docker(['image', 'inspect', ref])) as Array<{ Id: string; RepoDigests: string[] | null }>;
      if (image === undefined) throw new Error(`docker image inspect ${ref}: no image`);
      return { id: image.Id, repoDigests: image.RepoDigests ?? [] };
    },
    stop,
    destroy: async () => {
      await stop();
      await cleanup();
    },
  };
}

/** A dockerd on a containerd of its own (started with the same env); destroy() stops dockerd before the containerd under it. */
export async function startDockerdOnOwnContainerd(opts: Omit<DockerdOptions, 'containerdAddress'>): Promise<Dockerd> {
  const containerd = await startContainerd(opts.env === undefined ? {} : { env: opts.env });
  let dockerd: Dockerd;
  try {
    dockerd = await startDockerd({ ...opts, containerdAddress: containerd.address });
  } catch (error) {
    await containerd.destroy();
    throw error;
  }
  return {
    ...dockerd,
    destroy: async () => {
      await dockerd.destroy();
      await containerd.destroy();
    },
  };
}
