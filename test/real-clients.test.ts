// Real clients pull through one regmirror that mirrors two distribution 2.8.2 upstreams, configured as
// docker.io and ghcr.io, which hold different images under the same name (team/app:v1), plus
// library/alpine:3 on the docker.io one. Each client runs for real on loopback and unix sockets in temp
// dirs: a private containerd driven by ctr with hosts.toml mirrors, podman with a registries.conf mirror,
// a private dockerd (on its own containerd) with registry-mirrors, and skopeo with path prefixes.
//
// A client may fall back to the registry itself, so success alone proves nothing: each test proves the
// mirror served the pull from the mirror's access log (ns, upstream, status of every manifest and blob
// request) and each upstream's own access log (one blob GET per blob, from the mirror's fill). Every
// client also runs with HTTP(S)_PROXY set to a trap on loopback: a fallback to a registry off this
// machine (Docker Hub, quay.io…) reaches the trap, is recorded, and fails at once, never the network.
// Each test starts its own mirror (a cold cache), so its upstream counts are its own.

import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { after, before, describe, it, type TestContext } from 'node:test';
import { fileURLToPath } from 'node:url';
import { startConnectProxy, type ConnectProxy } from './support/connect-proxy.js';
import { containerdConfig, criPluginConfig, criRegistryConfig, hostsToml, startContainerd, writeHostsDir } from './support/containerd.js';
import { startDistribution, type Distribution } from './support/distribution.js';
import { dockerdConfig, registryMirrorSettings, startDockerdOnOwnContainerd } from './support/dockerd.js';
import { buildImageLayout, layoutBlobPath, pushLayout, type BuiltImage } from './support/images.js';
import { makePodman, PODMAN_CONTAINERS_CONF, podmanStorageConf, registriesConf } from './support/podman.js';
import { freePort } from './support/ports.js';
import { startRegmirror, type AccessEntry, type Regmirror } from './support/regmirror.js';
import { copyToOci, inspectRaw } from './support/skopeo.js';
import { makeTempDir, removeDir } from './support/temp.js';

const CLIENT_TEST_TIMEOUT = 240_000;

/** One mirror access-log entry, its v2 path taken apart. */
interface Served extends AccessEntry {
  name: string;
  kind: string;
  reference: string;
  /** containerd's `?ns=`; undefined when the request had none. */
  ns: string | undefined;
}

function servedRequests(mirror: Regmirror): Served[] {
  return mirror.accessEntries().flatMap((entry) => {
    const url = new URL(entry.path, 'http://mirror');
    const match = /^\/v2\/(.+)\/(manifests|blobs)\/([^/]+)$/.exec(url.pathname);
    if (match === null) return [];
    const [, name = '', kind = '', reference = ''] = match;
    return [{ ...entry, name, kind, reference, ns: url.searchParams.get('ns') ?? undefined }];
  });
}

interface ServedExpectation {
  /** The repository name as the client sent it to the mirror. */
  name: string;
  /** The `ns` every one of these requests carried (undefined: none did). */
  ns: string | undefined;
  /** The configured registry name the mirror must have routed them to. */
  upstream: string;
  tag: string;
  image: BuiltImage;
}

/** The mirror answered the client's manifest request for the tag and a 200 GET for the config and every layer, all routed as expected. */
function assertMirrorServed(served: Served[], expect: ServedExpectation): void {
  const mine = served.filter((entry) => entry.name === expect.name && entry.ns === expect.ns);
  const label = `${expect.name}${expect.ns === undefined ? '' : `?ns=${expect.ns}`}`;
  assert.ok(mine.length > 0, `the mirror logged no request for ${label}; it logged:\n${served.map((entry) => `${entry.method} ${entry.path} ${entry.status}`).join('\n')}`);
  for (const entry of mine) assert.equal(entry.upstream, expect.upstream, `${entry.method} ${entry.path} went to ${String(entry.upstream)}`);
  assert.ok(
    mine.some((entry) => entry.kind === 'manifests' && entry.reference === expect.tag && entry.status === 200),
    `${label}: no 200 for the manifest by tag ${expect.tag}`,
  );
  for (const digest of [expect.image.configDigest, ...expect.image.layerDigests]) {
    assert.ok(
      mine.some((entry) => entry.method === 'GET' && entry.kind === 'blobs' && entry.reference === digest && entry.status === 200 && entry.aborted !== true),
      `${label}: no complete 200 GET of blob ${digest}`,
    );
  }
}

/** The upstream's log since `mark` holds exactly one 200 GET of each of the image's blobs under repo (the mirror's one fill). */
function assertUpstreamFilled(upstream: Distribution, mark: number, repo: string, image: BuiltImage): void {
  const since = upstream.accessEntries().slice(mark);
  for (const digest of [image.configDigest, ...image.layerDigests]) {
    const gets = since.filter((entry) => entry.method === 'GET' && entry.path === `/v2/${repo}/blobs/${digest}`);
    assert.equal(gets.length, 1, `${upstream.url}: expected one GET of ${repo} blob ${digest}, saw ${gets.length}`);
    assert.equal(gets[0]?.status, 200);
  }
}

function requestsSince(upstream: Distribution, mark: number): number {
  return upstream.accessEntries().slice(mark).length;
}

async function timed<T>(t: TestContext, what: string, work: () => Promise<T>): Promise<T> {
  const started = performance.now();
  const result = await work();
  t.diagnostic(`${what}: ${Math.round(performance.now() - started)} ms`);
  return result;
}

describe('real clients through one regmirror with docker.io and ghcr.io upstreams', () => {
  let work: string;
  let hub: Distribution;
  let ghcr: Distribution;
  let hubApp: BuiltImage;
  let ghcrApp: BuiltImage;
  let alpine: BuiltImage;
  /** Routes nothing: every client's HTTP(S)_PROXY, where a request for a registry off this machine is recorded and refused. */
  let trap: ConnectProxy;

  before(async () => {
    work = await makeTempDir('real-clients');
    [hub, ghcr] = await Promise.all([startDistribution(), startDistribution()]);
    const hubLayout = await buildImageLayout(path.join(work, 'hub-app'), 'v1', [{ layers: [{ size: 300_000, seed: 4101 }, { size: 2_000, seed: 4102 }] }]);
    const ghcrLayout = await buildImageLayout(path.join(work, 'ghcr-app'), 'v1', [{ layers: [{ size: 250_000, seed: 4201 }] }]);
    const alpineLayout = await buildImageLayout(path.join(work, 'alpine'), '3', [{ layers: [{ size: 120_000, seed: 4301 }] }]);
    await pushLayout(hubLayout, `127.0.0.1:${hub.port}/team/app:v1`);
    await pushLayout(ghcrLayout, `127.0.0.1:${ghcr.port}/team/app:v1`);
    await pushLayout(alpineLayout, `127.0.0.1:${hub.port}/library/alpine:3`);
    const [first, second, third] = [hubLayout.images[0], ghcrLayout.images[0], alpineLayout.images[0]];
    assert.ok(first !== undefined && second !== undefined && third !== undefined);
    [hubApp, ghcrApp, alpine] = [first, second, third];
    // The same name on both upstreams, different images: a pull routed to the wrong one shows.
    assert.notEqual(hubApp.manifestDigest, ghcrApp.manifestDigest);
    trap = await startConnectProxy({});
  });

  after(async () => {
    await trap?.stop();
    await hub?.destroy();
    await ghcr?.destroy();
    if (work !== undefined) await removeDir(work);
  });

  /** A fresh regmirror (cold cache) with docker.io (the default) and ghcr.io; destroyed after the test. */
  async function startMirror(t: TestContext): Promise<Regmirror> {
    const mirror = await startRegmirror({ upstreams: [`docker.io=${hub.url}`, `ghcr.io=${ghcr.url}`] });
    t.after(async () => {
      if (process.env.DEBUG_MIRROR !== undefined) console.log(mirror.lines().join('\n'));
      await mirror.destroy();
    });
    return mirror;
  }

  /** Upstream log positions now, and the trap's: what follows belongs to this test. */
  function marks(): { hub: number; ghcr: number; trap: number } {
    return { hub: hub.accessEntries().length, ghcr: ghcr.accessEntries().length, trap: trap.refused().length };
  }

  async function settleAll(mirror: Regmirror): Promise<void> {
    await Promise.all([mirror.settle(), hub.settle(), ghcr.settle()]);
  }

  it('containerd (ctr) pulls each registry’s own image through hosts.toml mirrors for docker.io and ghcr.io', { timeout: CLIENT_TEST_TIMEOUT }, async (t) => {
    const mirror = await startMirror(t);
    const mark = marks();
    const containerd = await timed(t, 'containerd start', () => startContainerd({ env: trap.env }));
    t.after(() => containerd.destroy());
    const hostsDir = path.join(containerd.dir, 'certs.d');
    // Fallback servers: loopback ports nothing listens on, so a pull the mirror did not serve fails.
    await writeHostsDir(hostsDir, {
      'docker.io': hostsToml({ server: `http://127.0.0.1:${await freePort()}`, mirror: mirror.url }),
      'ghcr.io': hostsToml({ server: `http://127.0.0.1:${await freePort()}`, mirror: mirror.url }),
    });

    await timed(t, 'ctr pull docker.io/team/app:v1', () => containerd.pull('docker.io/team/app:v1', hostsDir));
    await timed(t, 'ctr pull ghcr.io/team/app:v1', () => containerd.pull('ghcr.io/team/app:v1', hostsDir));
    await timed(t, 'ctr pull docker.io/alpine:3', () => containerd.pull('docker.io/alpine:3', hostsDir));

    // Each reference resolved to the image its own upstream holds, and every blob of it is in the content store.
    const images = await containerd.images();
    assert.equal(images.get('docker.io/team/app:v1')?.digest, hubApp.manifestDigest);
    assert.equal(images.get('ghcr.io/team/app:v1')?.digest, ghcrApp.manifestDigest);
    assert.equal(images.get('docker.io/alpine:3')?.digest, alpine.manifestDigest);
    const content = await containerd.contentDigests();
    for (const image of [hubApp, ghcrApp, alpine]) {
      for (const digest of [image.manifestDigest, image.configDigest, ...image.layerDigests]) assert.ok(content.has(digest), `content store lacks ${digest}`);
    }

    await settleAll(mirror);
    const served = servedRequests(mirror);
    // containerd names the registry in every request, and the mirror routes by it (and says so).
    assert.ok(served.length > 0);
    for (const entry of served) {
      assert.ok(entry.ns === 'docker.io' || entry.ns === 'ghcr.io', `${entry.method} ${entry.path} carries no known ns`);
      assert.equal(entry.upstream, entry.ns, `${entry.method} ${entry.path} went to ${String(entry.upstream)}`);
    }
    assertMirrorServed(served, { name: 'team/app', ns: 'docker.io', upstream: 'docker.io', tag: 'v1', image: hubApp });
    assertMirrorServed(served, { name: 'team/app', ns: 'ghcr.io', upstream: 'ghcr.io', tag: 'v1', image: ghcrApp });
    // ctr sends `alpine` as it was written; the mirror asked Docker Hub's upstream for library/alpine.
    const alpineName = served.find((entry) => entry.name.endsWith('alpine'))?.name ?? 'alpine';
    assert.match(alpineName, /^(library\/)?alpine$/);
    assertMirrorServed(served, { name: alpineName, ns: 'docker.io', upstream: 'docker.io', tag: '3', image: alpine });
    assertUpstreamFilled(hub, mark.hub, 'team/app', hubApp);
    assertUpstreamFilled(ghcr, mark.ghcr, 'team/app', ghcrApp);
    assertUpstreamFilled(hub, mark.hub, 'library/alpine', alpine);
    assert.equal(hub.accessEntries().slice(mark.hub).filter((entry) => /^\/v2\/alpine\//.test(entry.path)).length, 0, 'the upstream never saw alpine without library/');
    assert.equal(ghcr.accessEntries().slice(mark.ghcr).filter((entry) => entry.path.includes('alpine')).length, 0, 'alpine never reached ghcr.io');
    assert.deepEqual(trap.refused().slice(mark.trap), [], 'no request left for a registry off this machine');
  });

  it('containerd (ctr) uses a _default hosts.toml for every registry, and falls back to the registry itself for one the mirror lacks', { timeout: CLIENT_TEST_TIMEOUT }, async (t) => {
    const mirror = await startMirror(t);
    const mark = marks();
    const containerd = await startContainerd({ env: trap.env });
    t.after(() => containerd.destroy());
    const hostsDir = path.join(containerd.dir, 'certs.d');
    // Exactly the documented _default: no server, so the fallback is the registry named in the reference.
    await writeHostsDir(hostsDir, { _default: hostsToml({ mirror: mirror.url }) });

    await timed(t, 'ctr pull ghcr.io/team/app:v1 (_default)', () => containerd.pull('ghcr.io/team/app:v1', hostsDir));
    await containerd.pull('docker.io/team/app:v1', hostsDir);
    const images = await containerd.images();
    assert.equal(images.get('ghcr.io/team/app:v1')?.digest, ghcrApp.manifestDigest);
    assert.equal(images.get('docker.io/team/app:v1')?.digest, hubApp.manifestDigest);

    // quay.io is not mirrored: the mirror answers 404 and containerd tries quay.io itself (here: the trap).
    await assert.rejects(containerd.pull('quay.io/team/app:v1', hostsDir, { timeoutMs: 60_000 }), /quay\.io/);

    await settleAll(mirror);
    const served = servedRequests(mirror);
    assertMirrorServed(served, { name: 'team/app', ns: 'ghcr.io', upstream: 'ghcr.io', tag: 'v1', image: ghcrApp });
    assertMirrorServed(served, { name: 'team/app', ns: 'docker.io', upstream: 'docker.io', tag: 'v1', image: hubApp });
    const quay = served.filter((entry) => entry.ns === 'quay.io');
    assert.ok(quay.length > 0 && quay.every((entry) => entry.status === 404), 'the mirror answered quay.io with 404');
    assertUpstreamFilled(ghcr, mark.ghcr, 'team/app', ghcrApp);
    assertUpstreamFilled(hub, mark.hub, 'team/app', hubApp);
    assert.deepEqual(
      trap.refused().slice(mark.trap).filter((line, index, all) => all.indexOf(line) === index),
      ['CONNECT quay.io:443'],
      'only the unmirrored registry was tried directly',
    );
  });

  it('podman pulls docker.io (no prefix) and ghcr.io (by path prefix) through registries.conf mirrors', { timeout: CLIENT_TEST_TIMEOUT }, async (t) => {
    const mirror = await startMirror(t);
    const mark = marks();
    const podman = await makePodman({
      // Primary locations are loopback ports nothing listens on: podman's fallback after a mirror error fails.
      registries: [
        { prefix: 'docker.io', location: `127.0.0.1:${await freePort()}`, mirrors: [{ location: mirror.host, insecure: true }] },
        { prefix: 'ghcr.io', location: `127.0.0.1:${await freePort()}`, mirrors: [{ location: `${mirror.host}/ghcr.io`, insecure: true }] },
      ],
      env: trap.env,
    });
    t.after(() => podman.destroy());

    await timed(t, 'podman pull docker.io/team/app:v1', () => podman.pull('docker.io/team/app:v1'));
    await timed(t, 'podman pull ghcr.io/team/app:v1', () => podman.pull('ghcr.io/team/app:v1'));
    const fromHub = await podman.inspectImage('docker.io/team/app:v1');
    assert.equal(fromHub.digest, hubApp.manifestDigest);
    assert.equal(`sha256:${fromHub.id}`, hubApp.configDigest);
    const fromGhcr = await podman.inspectImage('ghcr.io/team/app:v1');
    assert.equal(fromGhcr.digest, ghcrApp.manifestDigest);
    assert.equal(`sha256:${fromGhcr.id}`, ghcrApp.configDigest);

    await settleAll(mirror);
    const served = servedRequests(mirror);
    // podman rewrites the path to the mirror's location and sends no ns: without a prefix the default
    // upstream (docker.io) serves it; `mirror/ghcr.io` puts the registry in the path.
    assert.ok(served.every((entry) => entry.ns === undefined));
    assertMirrorServed(served, { name: 'team/app', ns: undefined, upstream: 'docker.io', tag: 'v1', image: hubApp });
    assertMirrorServed(served, { name: 'ghcr.io/team/app', ns: undefined, upstream: 'ghcr.io', tag: 'v1', image: ghcrApp });
    assertUpstreamFilled(hub, mark.hub, 'team/app', hubApp);
    assertUpstreamFilled(ghcr, mark.ghcr, 'team/app', ghcrApp);
    assert.deepEqual(trap.refused().slice(mark.trap), []);
  });

  it('dockerd pulls docker.io through registry-mirrors', { timeout: CLIENT_TEST_TIMEOUT }, async (t) => {
    const mirror = await startMirror(t);
    const mark = marks();
    const dockerd = await timed(t, 'dockerd start', () =>
      startDockerdOnOwnContainerd({ registryMirrors: [mirror.url], insecureRegistries: [mirror.host], env: trap.env }),
    );
    t.after(() => dockerd.destroy());

    await timed(t, 'docker pull docker.io/team/app:v1', () => dockerd.pull('docker.io/team/app:v1'));
    const image = await dockerd.inspectImage('docker.io/team/app:v1');
    assert.equal(image.id, hubApp.configDigest);
    assert.deepEqual(image.repoDigests, [`team/app@${hubApp.manifestDigest}`]);

    await settleAll(mirror);
    const served = servedRequests(mirror);
    // dockerd sends no hint of the registry: the default upstream (docker.io) serves it.
    assert.ok(served.every((entry) => entry.ns === undefined));
    assertMirrorServed(served, { name: 'team/app', ns: undefined, upstream: 'docker.io', tag: 'v1', image: hubApp });
    assertUpstreamFilled(hub, mark.hub, 'team/app', hubApp);
    assert.equal(requestsSince(ghcr, mark.ghcr), 0, 'nothing reached ghcr.io');
    // dockerd did not (also) go to Docker Hub: its fallback would have reached the trap.
    assert.deepEqual(trap.refused().slice(mark.trap), []);

    // What the mirror cannot serve, dockerd fetches from Docker Hub itself (here: the trap).
    const trapMark = trap.refused().length;
    await assert.rejects(dockerd.pull('docker.io/team/absent:v1', { timeoutMs: 60_000 }));
    await mirror.settle();
    assert.ok(servedRequests(mirror).some((entry) => entry.name === 'team/absent' && entry.kind === 'manifests' && entry.status === 404));
    assert.ok(
      trap.refused().slice(trapMark).includes('CONNECT registry-1.docker.io:443'),
      `dockerd did not fall back to Docker Hub: ${trap.refused().slice(trapMark).join('; ')}`,
    );
  });

  it('skopeo reaches each upstream by path prefix, and docker.io/alpine reaches library/alpine', { timeout: CLIENT_TEST_TIMEOUT }, async (t) => {
    const mirror = await startMirror(t);
    const mark = marks();
    const out = path.join(work, 'skopeo-out');
    t.after(() => removeDir(out));
    const cases = [
      { ref: `${mirror.host}/docker.io/team/app:v1`, tag: 'hub', image: hubApp },
      { ref: `${mirror.host}/ghcr.io/team/app:v1`, tag: 'ghcr', image: ghcrApp },
      { ref: `${mirror.host}/docker.io/alpine:3`, tag: 'alpine', image: alpine },
    ];
    for (const { ref, tag, image } of cases) {
      assert.ok((await inspectRaw(`docker://${ref}`)).equals(image.manifestBytes), `${ref}: not the manifest its upstream holds`);
      await timed(t, `skopeo copy ${ref}`, () => copyToOci(`docker://${ref}`, out, tag));
      for (const digest of [image.configDigest, ...image.layerDigests]) await readFile(layoutBlobPath(out, digest));
    }

    await settleAll(mirror);
    const served = servedRequests(mirror);
    assertMirrorServed(served, { name: 'docker.io/team/app', ns: undefined, upstream: 'docker.io', tag: 'v1', image: hubApp });
    assertMirrorServed(served, { name: 'ghcr.io/team/app', ns: undefined, upstream: 'ghcr.io', tag: 'v1', image: ghcrApp });
    assertMirrorServed(served, { name: 'docker.io/alpine', ns: undefined, upstream: 'docker.io', tag: '3', image: alpine });
    assertUpstreamFilled(hub, mark.hub, 'team/app', hubApp);
    assertUpstreamFilled(ghcr, mark.ghcr, 'team/app', ghcrApp);
    assertUpstreamFilled(hub, mark.hub, 'library/alpine', alpine);
  });

  it('docs/clients.md shows exactly the configuration these tests write', async () => {
    const docs = await readFile(path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'docs', 'clients.md'), 'utf8');
    const mirror = 'mirror.example:5000';
    const expected: Record<string, string> = {
      'containerd docker.io': hostsToml({ server: 'https://registry-1.docker.io', mirror: `http://${mirror}` }),
      'containerd ghcr.io': hostsToml({ server: 'https://ghcr.io', mirror: `http://${mirror}` }),
      'containerd _default': hostsToml({ mirror: `http://${mirror}` }),
      // Kubernetes nodes (test/auth-cri.test.ts): the CRI plugin's hosts directory, and docker.io mirrored over TLS.
      'kubernetes containerd config.toml': ['version = 2', '', ...criRegistryConfig('/etc/containerd/certs.d')].join('\n'),
      'kubernetes docker.io hosts.toml': hostsToml({ server: 'https://registry-1.docker.io', mirror: `https://${mirror}`, ca: '/etc/containerd/certs.d/docker.io/mirror-ca.crt' }),
      'podman registries.conf': registriesConf([
        { prefix: 'docker.io', location: 'registry-1.docker.io', mirrors: [{ location: mirror, insecure: true }] },
        { prefix: 'ghcr.io', location: 'ghcr.io', mirrors: [{ location: `${mirror}/ghcr.io`, insecure: true }] },
      ]),
      'dockerd daemon.json': `${JSON.stringify(registryMirrorSettings([`http://${mirror}`], [mirror]), null, 2)}\n`,
      // How the suite runs each daemon (DIR: the test's temp dir, M: the mirror's port).
      'test containerd config.toml': containerdConfig('DIR'),
      'test containerd config.toml with CRI': criPluginConfig('DIR', 'DIR/certs.d').join('\n'),
      'test dockerd daemon.json': `${JSON.stringify(
        dockerdConfig('DIR', { containerdAddress: 'CONTAINERD_DIR/containerd.sock', registryMirrors: ['http://127.0.0.1:M'], insecureRegistries: ['127.0.0.1:M'] }),
        null,
        2,
      )}\n`,
      'test podman storage.conf': podmanStorageConf('DIR'),
      'test podman containers.conf': PODMAN_CONTAINERS_CONF,
    };
    const snippets = new Map<string, string>();
    for (const match of docs.matchAll(/<!-- tested: ([^>]+?) -->\n```[a-z]*\n([\s\S]*?)```/g)) snippets.set(match[1] ?? '', match[2] ?? '');
    assert.deepEqual([...snippets.keys()].sort(), Object.keys(expected).sort());
    for (const [name, text] of Object.entries(expected)) assert.equal(snippets.get(name), text, `docs/clients.md: the "${name}" snippet`);
  });
});
