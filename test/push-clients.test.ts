// Real clients push to hosted repositories and pull back what they pushed, byte-exact: skopeo (to and from, an
// index with --all), podman push, buildah push, and docker push / pull through a private dockerd; a v1 push
// beside them on the same instance. The registry is a plain regmirror (no upstream: every repository hosted).

import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { requireCommand, runCommand } from './support/commands.js';
import { startContainerd, type Containerd } from './support/containerd.js';
import { startDockerd, type Dockerd } from './support/dockerd.js';
import { buildImageLayout, layoutBlobPath, pushLayout, type BuiltLayout } from './support/images.js';
import { makePodman, type Podman } from './support/podman.js';
import { startRegmirror, type Regmirror } from './support/regmirror.js';
import { inspectRaw, skopeo } from './support/skopeo.js';
import { makeTempDir, removeDir } from './support/temp.js';
import { makeV1Chain, V1Client } from './support/v1-client.js';

const CLIENT_TIMEOUT = 240_000;

describe('real clients push to hosted repositories', { timeout: 900_000 }, () => {
  let work: string;
  let registry: Regmirror;
  let single: BuiltLayout;
  let multi: BuiltLayout;

  before(async () => {
    work = await makeTempDir('push-clients-');
    registry = await startRegmirror();
    single = await buildImageLayout(path.join(work, 'single'), 'v1', [{ layers: [{ size: 300_000, seed: 61 }, { size: 20_000, seed: 62 }] }]);
    multi = await buildImageLayout(path.join(work, 'multi'), 'v1', [
      { platform: { os: 'linux', architecture: 'amd64' }, layers: [{ size: 100_000, seed: 63 }] },
      { platform: { os: 'linux', architecture: 'arm64' }, layers: [{ size: 100_000, seed: 64 }] },
    ]);
  });

  after(async () => {
    await registry?.destroy();
    await removeDir(work);
  });

  it('skopeo copies an image and an index (--all) in and out, every manifest and blob byte-exact', { timeout: CLIENT_TIMEOUT }, async () => {
    for (const [layout, name] of [
      [single, 'team/skopeo-single'],
      [multi, 'team/skopeo-multi'],
    ] as const) {
      await pushLayout(layout, `${registry.host}/${name}:v1`);
      const out = path.join(work, `${name.replace('/', '-')}-out`);
      await skopeo(['copy', '--quiet', '--all', '--preserve-digests', '--src-tls-verify=false', `docker://${registry.host}/${name}:v1`, `oci:${out}:v1`], { timeoutMs: 120_000 });
      const top = layout.indexDigest ?? layout.images[0]?.manifestDigest;
      assert.ok(top !== undefined);
      assert.ok((await inspectRaw(`docker://${registry.host}/${name}:v1`)).equals(await readFile(layoutBlobPath(layout.dir, top))), `${name}: the top manifest as pushed`);
      for (const image of layout.images) {
        for (const digest of [image.manifestDigest, image.configDigest, ...image.layerDigests]) {
          const pushed = await readFile(layoutBlobPath(layout.dir, digest));
          const pulled = await readFile(layoutBlobPath(out, digest));
          assert.ok(pulled.equals(pushed), `${name}: ${digest} round-trips byte for byte`);
        }
      }
    }
  });

  describe('podman and buildah', () => {
    let podman: Podman;
    before(async () => {
      podman = await makePodman({ registries: [] });
    });
    after(async () => {
      await podman?.destroy();
    });

    it('podman pushes an image it holds and pulls it back with the same image ID', { timeout: CLIENT_TIMEOUT }, async () => {
      // An image podman holds: pulled from the registry (pushed there by skopeo above).
      await podman.podman(['pull', '--tls-verify=false', `${registry.host}/team/skopeo-single:v1`], { timeoutMs: 120_000 });
      await podman.podman(['push', '--tls-verify=false', `${registry.host}/team/skopeo-single:v1`, `${registry.host}/team/podman:v1`], { timeoutMs: 120_000 });
      await podman.podman(['rmi', '--all', '--force']);
      await podman.podman(['pull', '--tls-verify=false', `${registry.host}/team/podman:v1`], { timeoutMs: 120_000 });
      const pulled = await podman.inspectImage(`${registry.host}/team/podman:v1`);
      assert.equal(`sha256:${pulled.id}`, single.images[0]?.configDigest, 'the config (image ID) round-trips');
    });

    it('buildah pushes an image it holds, readable back as the same image', { timeout: CLIENT_TIMEOUT }, async () => {
      const buildah = await requireCommand('buildah');
      const root = path.join(work, 'buildah');
      const globalArgs = ['--root', path.join(root, 'root'), '--runroot', path.join(root, 'runroot'), '--storage-driver', 'vfs'];
      const env = { ...process.env, CONTAINERS_REGISTRIES_CONF: podman.registriesConfPath, HOME: root, XDG_RUNTIME_DIR: path.join(root, 'xdg-run') };
      const run = async (args: string[]): Promise<string> => (await runCommand(buildah, [...globalArgs, ...args], { env, cwd: work, timeoutMs: 120_000 })).stdout;
      // The linux/amd64 image of the index skopeo pushed above.
      await run(['pull', '--tls-verify=false', '--arch', 'amd64', `${registry.host}/team/skopeo-multi:v1`]);
      const image = multi.images.find((built) => built.platform.architecture === 'amd64');
      assert.ok(image !== undefined);
      await run(['push', '--tls-verify=false', `${registry.host}/team/skopeo-multi:v1`, `docker://${registry.host}/team/buildah:v1`]);
      const manifest = JSON.parse((await inspectRaw(`docker://${registry.host}/team/buildah:v1`)).toString('utf8')) as { config: { digest: string }; layers: Array<{ digest: string }> };
      assert.equal(manifest.config.digest, image.configDigest, 'the same config');
      assert.equal(manifest.layers.length, image.layerDigests.length);
      for (const layer of manifest.layers) {
        const blob = await fetch(`${registry.url}/v2/team/buildah/blobs/${layer.digest}`);
        assert.equal(blob.status, 200, `layer ${layer.digest} is in the repository`);
        await blob.arrayBuffer();
      }
    });
  });

  describe('docker', () => {
    let containerd: Containerd;
    let dockerd: Dockerd;
    before(async () => {
      containerd = await startContainerd();
      dockerd = await startDockerd({ containerdAddress: containerd.address, registryMirrors: [], insecureRegistries: [registry.host] });
    });
    after(async () => {
      await dockerd?.destroy();
      await containerd?.destroy();
    });

    it('docker pushes an image under a new name (its layers mounted) and pulls it back with the same ID', { timeout: CLIENT_TIMEOUT }, async () => {
      await pushLayout(single, `${registry.host}/team/docker-source:v1`, { format: 'v2s2' });
      await dockerd.pull(`${registry.host}/team/docker-source:v1`);
      const before = await dockerd.inspectImage(`${registry.host}/team/docker-source:v1`);
      await dockerd.docker(['tag', `${registry.host}/team/docker-source:v1`, `${registry.host}/team/docker:v1`]);
      await dockerd.docker(['push', `${registry.host}/team/docker:v1`], { timeoutMs: 120_000 });
      await dockerd.docker(['rmi', `${registry.host}/team/docker:v1`, `${registry.host}/team/docker-source:v1`]);
      await dockerd.pull(`${registry.host}/team/docker:v1`);
      const after = await dockerd.inspectImage(`${registry.host}/team/docker:v1`);
      assert.equal(after.id, before.id);
      const mounts = registry.accessEntries().filter((entry) => entry.method === 'POST' && entry.path.startsWith('/v2/team/docker/blobs/uploads/?') && entry.path.includes('mount='));
      assert.ok(mounts.length > 0, 'docker mounted the layers it already pushed elsewhere');
    });
  });

  it('takes a v1 push beside the v2 pushes, on the same instance', { timeout: CLIENT_TIMEOUT }, async () => {
    const client = new V1Client(registry.url);
    const chain = makeV1Chain('push-clients', [{ size: 2_000, seed: 71 }]);
    await client.push('team/v1app', 'latest', chain);
    const pulled = await client.pull('team/v1app', 'latest');
    assert.deepEqual(
      pulled.images.map((image) => image.id),
      chain.map((image) => image.id),
    );
    assert.ok(pulled.images.every((image, index) => image.layer.equals(chain[index]?.layer ?? Buffer.alloc(0))), 'every layer byte-exact');
    // And the v2 side is unaffected.
    assert.equal((await fetch(`${registry.url}/v2/team/skopeo-single/tags/list`)).status, 200);
  });

  it('lists every repository pushed above in the catalog', async () => {
    const catalog = (await (await fetch(`${registry.url}/v2/_catalog`)).json()) as { repositories: string[] };
    for (const name of ['team/skopeo-single', 'team/skopeo-multi', 'team/podman', 'team/buildah', 'team/docker']) assert.ok(catalog.repositories.includes(name), name);
  });
});
