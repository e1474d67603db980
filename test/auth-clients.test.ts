// dockerd and containerd log in to a regmirror that terminates TLS with a throwaway CA and enforces access rules
// (htpasswd, a YAML config file), in front of distribution 2.8.2: each client trusts the CA the way its users
// configure it (dockerd's certs.d, containerd's hosts.toml `ca`), fails without it, logs in through the token flow,
// pulls exactly what was pushed, and is refused what the rules do not grant it.
//
// dockerd treats every registry on 127.0.0.0/8 as insecure (it skips verification and never reads certs.d for it,
// whatever the settings), so it reaches the mirror by a DNS name, regmirror.test:PORT, that no resolver knows: through
// a loopback CONNECT proxy that tunnels that name to the mirror and refuses everything else (Docker Hub included).

import assert from 'node:assert/strict';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, it, type TestContext } from 'node:test';
import { makeTestCa, type TestCa } from './support/certificates.js';
import { startConnectProxy, type ConnectProxy } from './support/connect-proxy.js';
import { startContainerd, writeHostsDir } from './support/containerd.js';
import { startDistribution, type Distribution } from './support/distribution.js';
import { startDockerdOnOwnContainerd } from './support/dockerd.js';
import { writeHtpasswd } from './support/htpasswd.js';
import { buildImageLayout, pushLayout, type BuiltImage } from './support/images.js';
import { startRegmirror, type Regmirror } from './support/regmirror.js';
import { makeTempDir, removeDir } from './support/temp.js';

const PASSWORDS = { alice: 'alice-secret-5e1b', bob: 'bob-secret-0c9d' };
const MIRROR_NAME = 'regmirror.test';
const CLIENT_TIMEOUT = 240_000;

describe('docker and containerd log in to a mirror over TLS', () => {
  let work: string;
  let ca: TestCa;
  let upstream: Distribution;
  let mirror: Regmirror;
  let proxy: ConnectProxy;
  /** The mirror as dockerd names it: regmirror.test:PORT. */
  let mirrorName: string;
  let app: BuiltImage;
  let publicImage: BuiltImage;

  before(async () => {
    work = await makeTempDir('auth-clients-');
    ca = await makeTestCa();
    const certificate = await ca.issueServer('mirror', [MIRROR_NAME]);
    upstream = await startDistribution();
    const appLayout = await buildImageLayout(path.join(work, 'app'), 'v1', [{ layers: [{ size: 80_000, seed: 7101 }] }]);
    const publicLayout = await buildImageLayout(path.join(work, 'public'), 'v1', [{ layers: [{ size: 40_000, seed: 7102 }] }]);
    await pushLayout(appLayout, `127.0.0.1:${upstream.port}/team/app:v1`);
    await pushLayout(publicLayout, `127.0.0.1:${upstream.port}/library/public:v1`);
    [app, publicImage] = [appLayout.images[0] as BuiltImage, publicLayout.images[0] as BuiltImage];
    await writeHtpasswd(path.join(work, 'htpasswd'), PASSWORDS);
    // Alice may pull team/*, anyone library/*; nobody anything else.
    const yaml = `
upstreams:
  - url: ${upstream.url}
tls:
  certificate: ${certificate.certificateFile}
  key: ${certificate.keyFile}
auth:
  htpasswd: ${path.join(work, 'htpasswd')}
access:
  - users: [alice]
    repositories: ["team/*"]
    actions: [pull]
  - users: [anonymous]
    repositories: ["library/*"]
    actions: [pull]
`;
    const config = path.join(work, 'regmirror.yaml');
    await writeFile(config, yaml);
    mirror = await startRegmirror({ configFile: config, tls: { ca: ca.ca } });
    mirrorName = `${MIRROR_NAME}:${mirror.port}`;
    proxy = await startConnectProxy({ [mirrorName]: mirror.port });
  });

  after(async () => {
    await proxy?.stop();
    await mirror?.destroy();
    await upstream?.destroy();
    await ca?.destroy();
    if (work !== undefined) await removeDir(work);
  });

  /** The mirror's access log since mark, as `METHOD path status`. */
  async function servedSince(mark: number): Promise<string[]> {
    await mirror.settle();
    return mirror.accessEntries().slice(mark).map((entry) => `${entry.method} ${entry.path} ${entry.status}`);
  }

  /** The mirror answered the manifest by tag and a whole GET of the config and every layer, under repository. */
  function assertServed(served: string[], repository: string, image: BuiltImage): void {
    assert.ok(served.some((line) => new RegExp(`^(GET|HEAD) /v2/${repository}/manifests/v1 200$`).test(line)), served.join('\n'));
    for (const digest of [image.configDigest, ...image.layerDigests]) assert.ok(served.includes(`GET /v2/${repository}/blobs/${digest} 200`), `${digest}:\n${served.join('\n')}`);
  }

  it('dockerd: CA in certs.d, docker login, pulls by the mirror\'s name and through registry-mirrors', { timeout: CLIENT_TIMEOUT }, async (t: TestContext) => {
    const dockerd = await startDockerdOnOwnContainerd({ registryMirrors: [`https://${mirrorName}`], privateCertsD: true, env: proxy.env });
    t.after(() => dockerd.destroy());
    const login = (user: keyof typeof PASSWORDS, password: string = PASSWORDS[user]): Promise<string> =>
      dockerd.docker(['login', '--username', user, '--password', password, mirrorName]);

    await assert.rejects(login('alice'), /x509: certificate signed by unknown authority/, 'without the CA, dockerd refuses the certificate');
    await mkdir(path.join(dockerd.certsD, mirrorName));
    await writeFile(path.join(dockerd.certsD, mirrorName, 'ca.crt'), ca.ca);

    // No login: what an anonymous rule grants, through registry-mirrors and by the mirror's own name; nothing else.
    let mark = mirror.accessEntries().length;
    await dockerd.pull('docker.io/library/public:v1');
    assert.equal((await dockerd.inspectImage('docker.io/library/public:v1')).id, publicImage.configDigest);
    assertServed(await servedSince(mark), 'library/public', publicImage);
    assert.deepEqual(proxy.refused(), [], 'the mirror served it: dockerd did not fall back to Docker Hub');
    await dockerd.pull(`${mirrorName}/library/public:v1`);
    assert.equal((await dockerd.inspectImage(`${mirrorName}/library/public:v1`)).id, publicImage.configDigest);
    await assert.rejects(dockerd.pull(`${mirrorName}/team/app:v1`), /unauthorized: authentication required/);

    await assert.rejects(login('alice', 'wrong'), /unauthorized/);
    await login('alice');
    mark = mirror.accessEntries().length;
    await dockerd.pull(`${mirrorName}/team/app:v1`);
    const pulled = await dockerd.inspectImage(`${mirrorName}/team/app:v1`);
    assert.equal(pulled.id, app.configDigest);
    assert.deepEqual(pulled.repoDigests, [`${mirrorName}/team/app@${app.manifestDigest}`]);
    const served = await servedSince(mark);
    assert.ok(served.some((line) => line.startsWith('GET /auth/token?account=alice&') && line.endsWith(' 200')), served.join('\n'));
    assertServed(served, 'team/app', app);

    // Through registry-mirrors, dockerd sends the mirror the credentials the CLI holds for Docker Hub, not those of
    // `docker login MIRROR`: refused by the mirror, it falls back to Docker Hub (refused by the proxy here).
    mark = mirror.accessEntries().length;
    const refusedMark = proxy.refused().length;
    await assert.rejects(dockerd.pull('docker.io/team/app:v1'), /registry-1\.docker\.io/);
    assert.ok((await servedSince(mark)).includes('GET /v2/team/app/manifests/v1 401'));
    assert.deepEqual(proxy.refused().slice(refusedMark), ['CONNECT registry-1.docker.io:443']);
    // The mirror's credentials stored as Docker Hub's (what `docker login` would store, had Docker Hub accepted them).
    const cliConfig = path.join(dockerd.dir, 'cli', 'config.json');
    const stored = JSON.parse(await readFile(cliConfig, 'utf8')) as { auths: Record<string, unknown> };
    stored.auths['https://index.docker.io/v1/'] = { auth: Buffer.from(`alice:${PASSWORDS.alice}`).toString('base64') };
    await writeFile(cliConfig, JSON.stringify(stored));
    mark = mirror.accessEntries().length;
    await dockerd.pull('docker.io/team/app:v1');
    assert.equal((await dockerd.inspectImage('docker.io/team/app:v1')).id, app.configDigest);
    assert.ok((await servedSince(mark)).includes('HEAD /v2/team/app/manifests/v1 200'));
    assert.equal(proxy.refused().length, refusedMark + 1, 'no further attempt at Docker Hub');
  });

  it('containerd (ctr): hosts.toml with the CA, credentials from --user or a header; wrong ones refused', { timeout: CLIENT_TIMEOUT }, async (t: TestContext) => {
    const containerd = await startContainerd();
    t.after(() => containerd.destroy());
    const ref = `${mirror.host}/team/app:v1`;
    const hostsFile = (extra: string[] = []): string =>
      [`server = "https://${mirror.host}"`, '', `[host."https://${mirror.host}"]`, '  capabilities = ["pull", "resolve"]', ...extra, ''].join('\n');
    const withoutCa = path.join(work, 'hosts-without-ca');
    const withCa = path.join(work, 'hosts-with-ca');
    const withHeader = path.join(work, 'hosts-with-header');
    await writeHostsDir(withoutCa, { [mirror.host]: hostsFile() });
    await writeHostsDir(withCa, { [mirror.host]: hostsFile([`  ca = ${JSON.stringify(ca.caFile)}`]) });
    const basic = Buffer.from(`alice:${PASSWORDS.alice}`).toString('base64');
    await writeHostsDir(withHeader, { [mirror.host]: hostsFile([`  ca = ${JSON.stringify(ca.caFile)}`, '', `  [host."https://${mirror.host}".header]`, `    Authorization = "Basic ${basic}"`]) });
    const pull = (hostsDir: string, args: string[], namespace = 'default'): Promise<string> =>
      containerd.ctr(['images', 'pull', '--hosts-dir', hostsDir, ...args, ref], { namespace, timeoutMs: 120_000 });

    await assert.rejects(pull(withoutCa, ['--user', `alice:${PASSWORDS.alice}`]), /x509: certificate signed by unknown authority/);
    await assert.rejects(pull(withCa, ['--user', 'alice:wrong']), /401 Unauthorized/);
    await assert.rejects(pull(withCa, []), /401 Unauthorized/);

    let mark = mirror.accessEntries().length;
    await pull(withCa, ['--user', `alice:${PASSWORDS.alice}`]);
    assert.equal((await containerd.images()).get(ref)?.digest, app.manifestDigest);
    const content = await containerd.contentDigests();
    for (const digest of [app.manifestDigest, app.configDigest, ...app.layerDigests]) assert.ok(content.has(digest), digest);
    let served = await servedSince(mark);
    assert.ok(served.some((line) => line.startsWith('GET /auth/token?') && line.endsWith(' 200')), `the token flow ran:\n${served.join('\n')}`);
    assertServed(served, 'team/app', app);

    // Basic credentials in every request, set in hosts.toml: no --user, no token.
    mark = mirror.accessEntries().length;
    await pull(withHeader, [], 'header');
    assert.equal((await containerd.images('header')).get(ref)?.digest, app.manifestDigest);
    served = await servedSince(mark);
    assert.ok(!served.some((line) => line.includes('/auth/token')), served.join('\n'));
    assert.ok(served.some((line) => /^(GET|HEAD) \/v2\/team\/app\/manifests\/v1 200$/.test(line)), served.join('\n'));
  });
});
