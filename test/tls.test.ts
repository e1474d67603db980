// regmirror terminating TLS in front of distribution 2.8.2 (plain http on loopback), with a throwaway CA made by
// openssl: skopeo and podman pull through it verifying the certificate; plain http and TLS 1.1 are refused; the
// certificate is reloaded when its files change (a Kubernetes secret volume updated, files renamed over; a directory
// swapped above them, then SIGHUP) while a keep-alive connection opened before keeps working, and broken files keep
// the certificate in use; mutual TLS refuses clients without a certificate of its CA; idle and half-open connections
// are dropped, and a stop does not wait for a handshake that never comes. Everything is proved by what clients see
// and what regmirror logs.

import assert from 'node:assert/strict';
import { mkdir, readFile, rename, symlink, writeFile } from 'node:fs/promises';
import { Agent, request as httpsRequest } from 'node:https';
import { connect, type Socket } from 'node:net';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { connect as connectTls, type ConnectionOptions, type TLSSocket } from 'node:tls';
import { makeTestCa, type IssuedCertificate, type TestCa } from './support/certificates.js';
import { startDistribution, type Distribution } from './support/distribution.js';
import { buildImageLayout, layoutBlobPath, pushLayout, type BuiltImage } from './support/images.js';
import { makePodman } from './support/podman.js';
import { freePort, getText } from './support/ports.js';
import { runRegmirror, startRegmirror, type Regmirror } from './support/regmirror.js';
import { copyToOci, inspectRaw } from './support/skopeo.js';
import { makeTempDir, removeDir } from './support/temp.js';

const CLIENT_TIMEOUT = 180_000;

interface LogLine {
  msg?: string;
  trigger?: string;
  tls?: { serialNumber?: string };
}

function logLines(mirror: Regmirror): LogLine[] {
  return mirror.lines().flatMap((line) => {
    if (!line.startsWith('{')) return [];
    try {
      return [JSON.parse(line) as LogLine];
    } catch {
      return [];
    }
  });
}

/** Waits (bounded) until the mirror has logged `count` lines matching; returns them. */
async function loggedAtLeast(mirror: Regmirror, count: number, matches: (line: LogLine) => boolean): Promise<LogLine[]> {
  const deadline = Date.now() + 15_000;
  for (;;) {
    const found = logLines(mirror).filter(matches);
    if (found.length >= count) return found;
    if (Date.now() > deadline) throw new Error(`regmirror logged ${found.length} of ${count} expected lines:\n${mirror.lines().slice(-20).join('\n')}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

const reloaded = (trigger: string, serialNumber: string) => (line: LogLine) =>
  line.msg === 'TLS certificate reloaded' && line.trigger === trigger && line.tls?.serialNumber === serialNumber;
const reloadFailed = (trigger: string) => (line: LogLine) => line.msg === 'TLS reload failed: the certificate in use stays' && line.trigger === trigger;

/** A new TLS connection (no session to resume): the server certificate's serial number, or the handshake's error. */
function handshake(port: number, options: ConnectionOptions): Promise<{ serialNumber: string; protocol: string | null; alpn: string | false | null } | { error: string }> {
  return new Promise((resolve) => {
    const socket = connectTls({ host: '127.0.0.1', port, servername: 'localhost', ...options }, () => {
      const result = { serialNumber: socket.getPeerCertificate().serialNumber, protocol: socket.getProtocol(), alpn: socket.alpnProtocol };
      socket.end();
      resolve(result);
    });
    socket.once('error', (error: NodeJS.ErrnoException) => resolve({ error: error.code ?? error.message }));
  });
}

/** Sends a request on a new TLS connection and returns all the server sent back before closing ('' for nothing). */
function exchange(port: number, options: ConnectionOptions): Promise<string> {
  return new Promise((resolve) => {
    let received = '';
    const socket = connectTls({ host: '127.0.0.1', port, servername: 'localhost', ...options }, () => {
      socket.write('GET /v2/ HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n');
    });
    socket.on('data', (chunk: Buffer) => (received += chunk.toString('latin1')));
    socket.once('error', () => undefined);
    socket.once('close', () => resolve(received));
  });
}

async function servedSerial(port: number, ca: string): Promise<string> {
  const result = await handshake(port, { ca });
  if ('error' in result) throw new Error(`handshake with 127.0.0.1:${port} failed: ${result.error}`);
  return result.serialNumber;
}

/** GET over one https agent; says which socket carried it and whether it was reused. */
function getOver(agent: Agent, port: number, target: string): Promise<{ status: number; socket: TLSSocket; reused: boolean }> {
  return new Promise((resolve, reject) => {
    const req = httpsRequest({ host: '127.0.0.1', port, path: target, agent, servername: 'localhost', timeout: 30_000 }, (res) => {
      // Taken now: once the response has ended, the socket goes back to the agent and res.socket is null.
      const socket = res.socket as TLSSocket;
      res.resume();
      res.once('end', () => resolve({ status: res.statusCode ?? 0, socket, reused: req.reusedSocket }));
    });
    req.once('timeout', () => req.destroy(new Error(`${target}: no answer`)));
    req.once('error', reject);
    req.end();
  });
}

/** Replaces a file as cert-manager and editors do: a new file renamed over the old one. */
async function replaceByRename(file: string, contents: string): Promise<void> {
  await writeFile(`${file}.new`, contents);
  await rename(`${file}.new`, file);
}

/** Resolves once the server closed the socket (it never sends, so only the server can end it). */
function closedByServer(socket: Socket): Promise<boolean> {
  return new Promise((resolve) => {
    if (socket.destroyed) resolve(true);
    socket.once('close', () => resolve(true));
    socket.on('error', () => undefined);
    setTimeout(() => resolve(false), 20_000).unref();
  });
}

describe('TLS', () => {
  let work: string;
  let ca: TestCa;
  let first: IssuedCertificate;
  let second: IssuedCertificate;
  let third: IssuedCertificate;
  let client: IssuedCertificate;
  let upstream: Distribution;
  let image: BuiltImage;
  let layoutDir: string;
  /** skopeo's certificate directory: ca.crt. */
  let caDir: string;

  before(async () => {
    work = await makeTempDir('regmirror-tls');
    ca = await makeTestCa();
    [first, second, third, client] = await Promise.all([ca.issueServer('first'), ca.issueServer('second'), ca.issueServer('third'), ca.issueClient('client')]);
    upstream = await startDistribution();
    const layout = await buildImageLayout(path.join(work, 'layout'), 'v1', [{ layers: [{ size: 30_000, seed: 1101 }] }]);
    await pushLayout(layout, `127.0.0.1:${upstream.port}/team/app:v1`);
    image = layout.images[0] as BuiltImage;
    layoutDir = layout.dir;
    caDir = path.join(work, 'ca-only');
    await mkdir(caDir);
    await writeFile(path.join(caDir, 'ca.crt'), ca.ca);
  });

  after(async () => {
    await upstream?.destroy();
    await ca?.destroy();
    if (work !== undefined) await removeDir(work);
  });

  describe('a mirror terminating TLS, and its admin listener', () => {
    let mirror: Regmirror;
    let adminPort: number;
    /**
     * The configured files are tls/live/server.{crt,key}. live is a symlink to a directory laid out as a Kubernetes
     * secret volume: server.crt -> ..data/server.crt, and ..data -> a directory of the real files, swapped on update.
     */
    let live: string;
    let keepAlive: Agent;
    let keptSocket: TLSSocket;

    /** What kubelet does for a new version of the secret (cert-manager renewing it): a new directory, ..data swapped by rename. */
    async function secretVolume(volume: string, version: string, issued: IssuedCertificate): Promise<void> {
      const newVolume = (await mkdir(volume, { recursive: true })) !== undefined;
      await mkdir(path.join(volume, version));
      await writeFile(path.join(volume, version, 'server.crt'), issued.certificate);
      await writeFile(path.join(volume, version, 'server.key'), issued.key);
      await symlink(version, path.join(volume, '..data_tmp'));
      await rename(path.join(volume, '..data_tmp'), path.join(volume, '..data'));
      if (newVolume) for (const name of ['server.crt', 'server.key']) await symlink(path.join('..data', name), path.join(volume, name));
    }

    /** The request on the connection opened before every reload: still served, on that same connection. */
    async function keptConnectionServes(): Promise<void> {
      const answer = await getOver(keepAlive, mirror.port, '/v2/');
      assert.equal(answer.status, 200);
      assert.equal(answer.reused, true, 'the keep-alive connection carried it');
      assert.equal(answer.socket, keptSocket);
      assert.equal(answer.socket.getPeerCertificate().serialNumber, first.serialNumber, 'a connection keeps the certificate of its handshake');
    }

    before(async () => {
      await secretVolume(path.join(work, 'tls', 'volume-a'), '..2026_01', first);
      live = path.join(work, 'tls', 'live');
      await symlink('volume-a', live);
      mirror = await startRegmirror({
        upstreams: [upstream.url],
        env: {
          REGMIRROR_TLS_CERTIFICATE: path.join(live, 'server.crt'),
          REGMIRROR_TLS_KEY: path.join(live, 'server.key'),
          REGMIRROR_ADMIN_LISTEN: '127.0.0.1:0',
        },
        tls: { ca: ca.ca },
      });
      const listening = mirror.lines().find((line) => line.includes('"msg":"regmirror listening"')) ?? '{}';
      adminPort = (JSON.parse(listening) as { adminAddress: { port: number } }).adminAddress.port;
      keepAlive = new Agent({ keepAlive: true, maxSockets: 1, ca: ca.ca });
    });

    after(async () => {
      keepAlive?.destroy();
      await mirror?.destroy();
    });

    it('serves skopeo, which verifies the certificate against the CA: byte-identical manifest and layers', { timeout: CLIENT_TIMEOUT }, async () => {
      const reference = `docker://${mirror.host}/team/app:v1`;
      await assert.rejects(inspectRaw(reference, { tlsVerify: true }), /x509|certificate/, 'without the CA, skopeo refuses the certificate');
      const manifest = await inspectRaw(reference, { certDir: caDir });
      assert.ok(manifest.equals(image.manifestBytes), 'the upstream\'s manifest, byte for byte');
      const out = path.join(work, 'skopeo-out');
      await copyToOci(reference, out, 'v1', { srcCertDir: caDir });
      assert.ok((await readFile(layoutBlobPath(out, image.manifestDigest))).equals(image.manifestBytes));
      for (const digest of [image.configDigest, ...image.layerDigests]) {
        assert.ok((await readFile(layoutBlobPath(out, digest))).equals(await readFile(layoutBlobPath(layoutDir, digest))), digest);
      }
    });

    it('serves podman through a registries.conf mirror, trusting the CA from certs.d', { timeout: CLIENT_TIMEOUT }, async (t) => {
      // The registry itself is a loopback port where nothing listens: only the mirror can serve the pull.
      const podman = await makePodman({
        registries: [{ prefix: 'docker.io', location: `127.0.0.1:${await freePort()}`, insecure: true, mirrors: [{ location: mirror.host }] }],
      });
      t.after(() => podman.destroy());
      // containers/image looks in $HOME/.config/containers/certs.d/<host:port>/ (the helper's HOME is its directory).
      const certsD = path.join(podman.dir, '.config', 'containers', 'certs.d', mirror.host);
      await mkdir(certsD, { recursive: true });
      await writeFile(path.join(certsD, 'ca.crt'), ca.ca);
      await podman.pull('docker.io/team/app:v1');
      const pulled = await podman.inspectImage('docker.io/team/app:v1');
      assert.equal(pulled.digest, image.manifestDigest);
      assert.equal(`sha256:${pulled.id}`, image.configDigest);
      await mirror.settle();
      const served = mirror.accessEntries().filter((entry) => entry.path.startsWith('/v2/team/app/') && entry.status === 200);
      assert.ok(served.some((entry) => entry.path === '/v2/team/app/manifests/v1'), 'the mirror served the manifest by tag');
    });

    it('refuses plain http and TLS 1.1 on its port; speaks TLS 1.2 and 1.3, ALPN http/1.1', async () => {
      await assert.rejects(getText(`http://127.0.0.1:${mirror.port}/v2/`, { timeoutMs: 10_000 }), 'plain http gets no answer');
      // OpenSSL 3 offers TLS 1.1 only at security level 0: the client's offer is real, the refusal the server's alert.
      const old = await handshake(mirror.port, { ca: ca.ca, minVersion: 'TLSv1.1', maxVersion: 'TLSv1.1', ciphers: 'DEFAULT@SECLEVEL=0' });
      assert.deepEqual(old, { error: 'ERR_SSL_TLSV1_ALERT_PROTOCOL_VERSION' });
      const twelve = await handshake(mirror.port, { ca: ca.ca, maxVersion: 'TLSv1.2', ALPNProtocols: ['h2', 'http/1.1'] });
      assert.deepEqual(twelve, { serialNumber: first.serialNumber, protocol: 'TLSv1.2', alpn: 'http/1.1' });
      const thirteen = await handshake(mirror.port, { ca: ca.ca });
      assert.equal('protocol' in thirteen && thirteen.protocol, 'TLSv1.3');
      assert.equal(await servedSerial(adminPort, ca.ca), first.serialNumber, 'the admin listener has the same certificate');
      assert.equal((await getText(`https://127.0.0.1:${adminPort}/metrics`, { tls: { ca: ca.ca } })).status, 200);
    });

    it('takes an updated secret volume without a signal, and a directory swapped above the files on SIGHUP, keeping open connections', async () => {
      // Opened here, not before the client tests: a connection idle for timeouts.clientIdle is dropped.
      const opened = await getOver(keepAlive, mirror.port, '/v2/');
      assert.equal(opened.status, 200);
      keptSocket = opened.socket;
      // The file-change path, no signal: the secret volume updated to the second certificate.
      await secretVolume(path.join(work, 'tls', 'volume-a'), '..2026_02', second);
      await loggedAtLeast(mirror, 1, reloaded('file change', second.serialNumber));
      assert.equal(await servedSerial(mirror.port, ca.ca), second.serialNumber, 'a new connection gets the new certificate');
      await keptConnectionServes();

      // The symlink above the files swapped to another directory: nothing the watches see; SIGHUP reads the files again.
      await secretVolume(path.join(work, 'tls', 'volume-b'), '..2026_03', third);
      await symlink('volume-b', `${live}.new`);
      await rename(`${live}.new`, live);
      process.kill(mirror.pid() ?? 0, 'SIGHUP');
      await loggedAtLeast(mirror, 1, reloaded('SIGHUP', third.serialNumber));
      assert.equal(await servedSerial(mirror.port, ca.ca), third.serialNumber);
      assert.equal(await servedSerial(adminPort, ca.ca), third.serialNumber, 'the admin listener follows');
      await keptConnectionServes();
    });

    it('keeps the certificate in use when the files are broken, and takes the next good ones', async () => {
      // SIGHUP re-armed the watches on the directory the link now points to. Files replaced by rename, as editors do.
      await replaceByRename(path.join(live, 'server.crt'), 'not a certificate\n');
      await loggedAtLeast(mirror, 1, reloadFailed('file change'));
      process.kill(mirror.pid() ?? 0, 'SIGHUP');
      await loggedAtLeast(mirror, 1, reloadFailed('SIGHUP'));
      assert.equal(await servedSerial(mirror.port, ca.ca), third.serialNumber, 'still the certificate that was in use');
      // A key of another certificate: refused too.
      await replaceByRename(path.join(live, 'server.crt'), third.certificate);
      await replaceByRename(path.join(live, 'server.key'), second.key);
      await loggedAtLeast(mirror, 2, reloadFailed('file change'));
      assert.equal(await servedSerial(mirror.port, ca.ca), third.serialNumber);
      await replaceByRename(path.join(live, 'server.crt'), second.certificate);
      await loggedAtLeast(mirror, 2, reloaded('file change', second.serialNumber));
      assert.equal(await servedSerial(mirror.port, ca.ca), second.serialNumber);
      await keptConnectionServes();
      assert.equal((await getText(`${mirror.url}/v2/`, { tls: { ca: ca.ca } })).status, 200);
    });

    it('stops without waiting for a client that never finishes its handshake', async () => {
      // One on each listener: the admin one has a single listening descriptor, so its connection is the server's own
      // (the registry's may be taken by a copy of the listening socket, which server.close() does not wait for).
      const silent = [connect({ host: '127.0.0.1', port: mirror.port }), connect({ host: '127.0.0.1', port: adminPort })];
      await Promise.all(silent.map((socket) => new Promise((resolve) => socket.once('connect', resolve))));
      const closed = Promise.all(silent.map(closedByServer));
      // Still in their handshakes when the stop starts; it would wait for them (timeouts.clientIdle, 60 s) but the
      // helper kills regmirror after 10 s, and then it never logs that it stopped.
      await mirror.stop();
      assert.deepEqual(await closed, [true, true]);
      assert.ok(mirror.lines().some((line) => line.includes('"msg":"regmirror stopped"')), 'regmirror stopped by itself');
    });
  });

  describe('mutual TLS', () => {
    let mirror: Regmirror;
    let stranger: TestCa;
    let strangerClient: IssuedCertificate;

    before(async () => {
      stranger = await makeTestCa('another CA');
      strangerClient = await stranger.issueClient('stranger');
      const config = path.join(work, 'mtls.yaml');
      // JSON is YAML.
      await writeFile(config, JSON.stringify({ tls: { certificate: first.certificateFile, key: first.keyFile, clientCA: ca.caFile }, timeouts: { clientIdle: '1s' } }));
      mirror = await startRegmirror({ upstreams: [upstream.url], configFile: config, tls: { ca: ca.ca, cert: client.certificate, key: client.key } });
    });

    after(async () => {
      await mirror?.destroy();
      await stranger?.destroy();
    });

    it('refuses a client without a certificate, or with one of another CA, at the handshake; serves one of its CA', { timeout: CLIENT_TIMEOUT }, async () => {
      const url = `${mirror.url}/v2/`;
      // node checks the client's certificate at the end of the handshake and closes the connection before reading a
      // byte of the request (in TLS 1.3 the client may already have sent it, and sees the connection reset).
      const refused = (error: NodeJS.ErrnoException): boolean => error.code === 'ECONNRESET' || /^ERR_SSL_/.test(error.code ?? '');
      await assert.rejects(getText(url, { tls: { ca: ca.ca } }), refused);
      await assert.rejects(getText(url, { tls: { ca: ca.ca, cert: strangerClient.certificate, key: strangerClient.key } }), refused);
      for (const maxVersion of ['TLSv1.2', 'TLSv1.3'] as const) {
        const withoutCertificate = await exchange(mirror.port, { ca: ca.ca, maxVersion });
        assert.equal(withoutCertificate, '', `${maxVersion}: no answer without a client certificate`);
      }
      assert.equal((await getText(url, { tls: { ca: ca.ca, cert: client.certificate, key: client.key } })).status, 200);
      await mirror.settle();
      assert.equal(mirror.accessEntries().filter((entry) => entry.path === '/v2/').length, 1, 'only the client with a certificate reached a route');
      // skopeo presents client.cert/client.key from its certificate directory.
      const withClient = path.join(work, 'ca-and-client');
      await mkdir(withClient);
      await writeFile(path.join(withClient, 'ca.crt'), ca.ca);
      await writeFile(path.join(withClient, 'client.cert'), client.certificate);
      await writeFile(path.join(withClient, 'client.key'), client.key);
      const reference = `docker://${mirror.host}/team/app:v1`;
      assert.ok((await inspectRaw(reference, { certDir: withClient })).equals(image.manifestBytes));
      await assert.rejects(inspectRaw(reference, { certDir: caDir }), 'skopeo without a client certificate is refused');
    });

    it('drops a connection idle for timeouts.clientIdle, in its handshake or after it', async () => {
      const silent = connect({ host: '127.0.0.1', port: mirror.port });
      const idle = connectTls({ host: '127.0.0.1', port: mirror.port, servername: 'localhost', ca: ca.ca, cert: client.certificate, key: client.key });
      await new Promise((resolve, reject) => idle.once('secureConnect', resolve).once('error', reject));
      assert.deepEqual(await Promise.all([closedByServer(silent), closedByServer(idle)]), [true, true]);
    });
  });

  it('refuses to start with a key of another certificate: status 2, naming tls.key', async () => {
    const data = path.join(work, 'refused-data');
    const outcome = await runRegmirror(['serve', '--listen', '127.0.0.1:0', '--data', data], {
      env: { REGMIRROR_TLS_CERTIFICATE: first.certificateFile, REGMIRROR_TLS_KEY: second.keyFile },
    });
    assert.equal(outcome.code, 2);
    assert.match(outcome.stderr, /tls\.key: .*second\.key does not match the certificate in .*first\.crt/);
  });
});
