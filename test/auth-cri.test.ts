// Kubernetes imagePullSecrets through containerd's CRI plugin: containerd 1.6 runs with the CRI plugin on, its registries
// in hosts.toml (docker.io mirrored by a regmirror that terminates TLS with a throwaway CA and lets only alice pull
// team/*, nobody anything anonymously), and the test makes the calls kubelet makes over the CRI socket: PullImage with
// the AuthConfig kubelet builds from a pod's imagePullSecrets, then ImageStatus.
//
// What kubelet sends (pkg/kubelet/kuberuntime/kuberuntime_image.go PullImage; pkg/credentialprovider/keyring.go
// BasicDockerKeyring.Add and Lookup): the secrets' entries whose key matches the image's registry as the pod names it
// (docker.io/team/app: a key `docker.io`, or `https://index.docker.io/v1/` through the Docker Hub default), one
// AuthConfig{username, password} per entry, server_address empty; no entry matching: no AuthConfig at all. A key
// naming the mirror (`mirror.example:5000`) therefore never reaches a pull of docker.io/…, only of images the pod names
// by the mirror. containerd (pkg/cri/server/image_pull.go registryHosts, ParseAuth) hands that AuthConfig to every host
// hosts.toml lists for the registry, the mirror included, unless server_address is set and names another host.

import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { stringify as stringifyYaml } from 'yaml';
import { makeTestCa, type TestCa } from './support/certificates.js';
import { hostsToml, startContainerd, writeHostsDir, type Containerd } from './support/containerd.js';
import { connectCriImageService, type CriAuthConfig, type CriImageService } from './support/cri.js';
import { startDistribution, type Distribution } from './support/distribution.js';
import { writeHtpasswd } from './support/htpasswd.js';
import { buildImageLayout, pushLayout, type BuiltImage } from './support/images.js';
import { startRegmirror, type Regmirror } from './support/regmirror.js';
import { makeTempDir, removeDir } from './support/temp.js';

const PASSWORD = 'alice-secret-83d1';
const WRONG_PASSWORD = 'alice-wrong-5b20';
const CLIENT_TIMEOUT = 240_000;
/** containerd's error when the mirror refused it a manifest and it had no credentials to log in with. */
const REFUSED_WITHOUT_CREDENTIALS = /pulling from host 127\.0\.0\.1:\d+ failed with status code \[manifests v1\]: 401 Unauthorized/;

describe('Kubernetes imagePullSecrets: kubelet\'s CRI calls to containerd, through a mirror with logins', () => {
  let work: string;
  let ca: TestCa;
  let upstream: Distribution;
  /** Docker Hub's stand-in: hosts.toml's `server`, where containerd goes when the mirror fails; alice has the same password there. */
  let hub: Distribution;
  let mirror: Regmirror;
  let containerd: Containerd;
  let cri: CriImageService;
  /** Private images (team/*): one per pull that succeeds, so each pull fetches its own blobs from the mirror. */
  const images = new Map<string, BuiltImage>();

  before(async () => {
    work = await makeTempDir('auth-cri-');
    ca = await makeTestCa();
    const certificate = await ca.issueServer('mirror');
    upstream = await startDistribution();
    for (const [name, seed] of [['app', 7301], ['tool', 7302], ['direct', 7303]] as const) {
      const layout = await buildImageLayout(path.join(work, name), 'v1', [{ layers: [{ size: 60_000, seed }] }]);
      await pushLayout(layout, `127.0.0.1:${upstream.port}/team/${name}:v1`);
      images.set(name, layout.images[0] as BuiltImage);
    }
    await writeHtpasswd(path.join(work, 'htpasswd'), { alice: PASSWORD });
    hub = await startDistribution({ auth: { htpasswd: { path: path.join(work, 'htpasswd') } } });
    const hubOnly = await buildImageLayout(path.join(work, 'hub-only'), 'v1', [{ layers: [{ size: 60_000, seed: 7304 }] }]);
    await pushLayout(hubOnly, `127.0.0.1:${hub.port}/team/hub-only:v1`, { creds: `alice:${PASSWORD}` });
    images.set('hub-only', hubOnly.images[0] as BuiltImage);
    const config = path.join(work, 'regmirror.yaml');
    const settings = {
      upstreams: [{ registry: 'docker.io', url: upstream.url }],
      tls: { certificate: certificate.certificateFile, key: certificate.keyFile },
      auth: { htpasswd: path.join(work, 'htpasswd') },
      access: [{ users: ['alice'], repositories: ['team/*'], actions: ['pull'] }],
    };
    await writeFile(config, stringifyYaml(settings));
    mirror = await startRegmirror({ configFile: config, tls: { ca: ca.ca } });
    // docker.io through the mirror, falling back to the hub; and the mirror by its own name, for images a pod names by it.
    const hostsDir = path.join(work, 'certs.d');
    await writeHostsDir(hostsDir, {
      'docker.io': hostsToml({ server: hub.url, mirror: `https://${mirror.host}`, ca: ca.caFile }),
      [mirror.host]: hostsToml({ server: `https://${mirror.host}`, mirror: `https://${mirror.host}`, ca: ca.caFile }),
    });
    containerd = await startContainerd({ criHostsDir: hostsDir });
    cri = await connectCriImageService(containerd.address);
  });

  after(async () => {
    cri?.close();
    await containerd?.destroy();
    await mirror?.destroy();
    await hub?.destroy();
    await upstream?.destroy();
    await ca?.destroy();
    if (work !== undefined) await removeDir(work);
  });

  function image(name: string): BuiltImage {
    const found = images.get(name);
    if (found === undefined) throw new Error(`no image ${name}`);
    return found;
  }

  /** The mirror's access log since mark, as `METHOD path status`. */
  async function servedSince(mark: number): Promise<string[]> {
    await mirror.settle();
    return mirror.accessEntries().slice(mark).map((entry) => `${entry.method} ${entry.path} ${entry.status}`);
  }

  /**
   * A pull of docker.io/team/app:v1 the mirror refuses: containerd asked it (401), got no manifest or blob, went on to
   * the hub (which lacks the image), and holds nothing.
   */
  async function assertRefused(auth: CriAuthConfig | undefined, message: RegExp): Promise<string[]> {
    const mark = mirror.accessEntries().length;
    const hubMark = hub.accessEntries().length;
    await assert.rejects(cri.pullImage('docker.io/team/app:v1', auth), message);
    await hub.settle();
    assert.ok(hub.accessEntries().slice(hubMark).some((entry) => entry.method === 'HEAD' && entry.path === '/v2/team/app/manifests/v1'), 'containerd went on to the hub');
    const served = await servedSince(mark);
    assert.ok(served.includes('HEAD /v2/team/app/manifests/v1?ns=docker.io 401'), `containerd asked the mirror:\n${served.join('\n')}`);
    assert.deepEqual(served.filter((line) => line.startsWith('GET /v2/') || (line.endsWith(' 200') && !line.startsWith('GET /auth/token?'))), [], 'no manifest, no blob');
    assert.equal(await cri.imageStatus('docker.io/team/app:v1'), undefined);
    return served;
  }

  /**
   * containerd had no credentials for the mirror: it fetched an anonymous token (granting nothing here), and never
   * POSTed to the realm, which it does first whenever it holds a password (remotes/docker/authorizer.go, doBearerAuth).
   */
  function assertAnonymous(served: string[]): void {
    assert.ok(served.includes('GET /auth/token?scope=repository%3Ateam%2Fapp%3Apull&service=regmirror 200'), served.join('\n'));
    assert.ok(!served.some((line) => line.startsWith('POST /auth/token')), served.join('\n'));
  }

  /**
   * A pull the mirror served: image_ref is the config digest, ImageStatus and `ctr -n k8s.io images ls` show it under
   * reference, and the mirror answered the manifest and every blob (query: `?ns=docker.io` when mirrored, none when
   * the pod names the mirror) after a token from its realm: no rule grants team/* to a caller without alice's password.
   */
  async function assertPulled(reference: string, repository: string, pulled: BuiltImage, query: string, auth: CriAuthConfig): Promise<void> {
    const mark = mirror.accessEntries().length;
    const hubMark = hub.accessEntries().length;
    assert.equal(await cri.pullImage(reference, auth), pulled.configDigest);
    const status = await cri.imageStatus(reference);
    assert.equal(status?.id, pulled.configDigest);
    assert.deepEqual(status?.repo_tags, [reference]);
    assert.deepEqual(status?.repo_digests, [`${reference.slice(0, reference.lastIndexOf(':'))}@${pulled.manifestDigest}`]);
    assert.equal((await containerd.images('k8s.io')).get(reference)?.digest, pulled.manifestDigest);
    const served = await servedSince(mark);
    // The OAuth POST first (404 here): containerd held a password for the mirror; then the GET with it.
    assert.ok(served.includes('POST /auth/token 404'), served.join('\n'));
    assert.ok(served.includes(`GET /auth/token?scope=repository%3A${encodeURIComponent(repository)}%3Apull&service=regmirror 200`), `the token flow ran:\n${served.join('\n')}`);
    assert.ok(served.some((line) => line === `HEAD /v2/${repository}/manifests/v1${query} 200`), served.join('\n'));
    for (const digest of [pulled.configDigest, ...pulled.layerDigests]) assert.ok(served.includes(`GET /v2/${repository}/blobs/${digest}${query} 200`), `${digest}:\n${served.join('\n')}`);
    await hub.settle();
    assert.deepEqual(hub.accessEntries().slice(hubMark), [], 'no fallback to the hub');
  }

  // The refusals come first: they ask for docker.io/team/app:v1, which a later case pulls.
  it('no AuthConfig (no imagePullSecret, or one keyed by the mirror\'s name, for a docker.io image): refused, nothing served', { timeout: CLIENT_TIMEOUT }, async () => {
    assertAnonymous(await assertRefused(undefined, REFUSED_WITHOUT_CREDENTIALS));
  });

  it('a docker.io secret with a wrong password: refused at the mirror\'s login, nothing served, the failed login logged', { timeout: CLIENT_TIMEOUT }, async () => {
    const served = await assertRefused({ username: 'alice', password: WRONG_PASSWORD }, /failed to fetch oauth token: unexpected status: 401 Unauthorized/);
    // The OAuth POST regmirror does not serve (404), then the GET with Basic credentials.
    assert.deepEqual(served.slice(1), ['POST /auth/token 404', 'GET /auth/token?scope=repository%3Ateam%2Fapp%3Apull&service=regmirror 401']);
    assert.ok(mirror.lines().some((line) => line.includes('"failed login"') && line.includes('"user":"alice"')), 'the failed login is logged with the user name');
  });

  it('server_address naming Docker Hub (not something kubelet sends): containerd withholds the credentials from the mirror', { timeout: CLIENT_TIMEOUT }, async () => {
    assertAnonymous(await assertRefused({ username: 'alice', password: PASSWORD, server_address: 'https://index.docker.io/v1/' }, REFUSED_WITHOUT_CREDENTIALS));
  });

  it('server_address without a scheme names no host: a name withholds the credentials, an address with a port fails the pull', { timeout: CLIENT_TIMEOUT }, async () => {
    // Go's url.Parse reads `docker.io` as a path and `localhost:PORT` as scheme `localhost`: no host either way.
    for (const serverAddress of ['docker.io', `localhost:${mirror.port}`]) {
      assertAnonymous(await assertRefused({ username: 'alice', password: PASSWORD, server_address: serverAddress }, REFUSED_WITHOUT_CREDENTIALS));
    }
    await assertRefused({ username: 'alice', password: PASSWORD, server_address: mirror.host }, /parse server address: .*first path segment in URL cannot contain colon/);
  });

  it('a docker.io secret (username and password, no server_address): pulled through the mirror, logged in', { timeout: CLIENT_TIMEOUT }, async () => {
    await assertPulled('docker.io/team/app:v1', 'team/app', image('app'), '?ns=docker.io', { username: 'alice', password: PASSWORD });
  });

  it('the docker.io secret reaches the fallback too: an image the mirror lacks comes from the hub, with the mirror\'s password', { timeout: CLIENT_TIMEOUT }, async () => {
    const pulled = image('hub-only');
    const mark = mirror.accessEntries().length;
    assert.equal(await cri.pullImage('docker.io/team/hub-only:v1', { username: 'alice', password: PASSWORD }), pulled.configDigest);
    const served = await servedSince(mark);
    assert.ok(served.includes('HEAD /v2/team/hub-only/manifests/v1?ns=docker.io 404'), served.join('\n'));
    await hub.settle();
    // The hub serves nothing without alice's password: it had it.
    for (const digest of [pulled.configDigest, ...pulled.layerDigests]) assert.equal(hub.countRequests('GET', new RegExp(`^/v2/team/hub-only/blobs/${digest}$`)), 1, digest);
  });

  it('a docker config `auth` (base64 user:password, as `crictl pull --auth` sends it) with server_address naming the mirror: pulled', { timeout: CLIENT_TIMEOUT }, async () => {
    const auth = Buffer.from(`alice:${PASSWORD}`).toString('base64');
    await assertPulled('docker.io/team/tool:v1', 'team/tool', image('tool'), '?ns=docker.io', { auth, server_address: `https://${mirror.host}` });
  });

  it('an image the pod names by the mirror, with a secret keyed by the mirror\'s name: pulled', { timeout: CLIENT_TIMEOUT }, async () => {
    await assertPulled(`${mirror.host}/team/direct:v1`, 'team/direct', image('direct'), '', { username: 'alice', password: PASSWORD });
  });

  it('no password in any log line', () => {
    const leaked = mirror.lines().filter((line) => line.includes(PASSWORD) || line.includes(WRONG_PASSWORD));
    assert.deepEqual(leaked, []);
  });
});
