// Smoke test of the test-support helpers against the real things: distribution 2.8.2, skopeo,
// htpasswd basic auth and the token server, with layouts built by images.ts.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { test } from 'node:test';
import { gunzipSync } from 'node:zlib';
import { createServer, type Server } from 'node:net';
import { startDistribution } from './distribution.js';
import { writeHtpasswd } from './htpasswd.js';
import { buildImageLayout, deterministicBytes, layoutBlobPath, MEDIA_TYPES, pushLayout } from './images.js';
import { freePort, isPortConflict, startOnFreePort, waitForHttp } from './ports.js';
import { startProcess } from './processes.js';
import { copyToOci, inspectRaw } from './skopeo.js';
import { makeTempDir, removeDir } from './temp.js';
import { startNginx } from './nginx.js';
import { startTokenServer } from './token-server.js';

const sha256 = (bytes: Buffer): string => `sha256:${createHash('sha256').update(bytes).digest('hex')}`;

void test('deterministicBytes repeats per seed and differs across seeds', () => {
  const a = deterministicBytes(10_001, 42);
  assert.equal(a.length, 10_001);
  assert.deepEqual(a, deterministicBytes(10_001, 42));
  assert.deepEqual(a.subarray(0, 4096), deterministicBytes(4096, 42));
  assert.notDeepEqual(a.subarray(0, 64), deterministicBytes(64, 43).subarray(0, 64));
});

void test('startProcess captures lines, waits for one, and stops with SIGTERM then SIGKILL', { timeout: 30_000 }, async () => {
  const script = "process.on('SIGTERM', () => console.log('ignoring SIGTERM')); console.log('ready'); console.error('on stderr'); setInterval(() => {}, 1000);";
  const proc = startProcess(process.execPath, ['-e', script]);
  assert.equal(await proc.waitForLine(/^ready$/, 10_000), 'ready');
  await proc.waitForLine(/^on stderr$/, 10_000);
  await assert.rejects(proc.waitForLine(/never printed/, 200), /no line matching/);
  await proc.stop('SIGTERM', 500);
  assert.equal(await proc.exited, null);
  assert.ok(proc.lines().includes('ignoring SIGTERM'), 'SIGTERM came first');
  assert.equal(proc.exitSignal(), 'SIGKILL', 'the SIGTERM-ignoring child needed the SIGKILL');
});

void test('images push to distribution unchanged (OCI) and as Docker manifest list (v2s2); pulls show in the access log', { timeout: 300_000 }, async (t) => {
  const work = await makeTempDir('regmirror-support-test');
  t.after(() => removeDir(work));
  const layoutDir = join(work, 'layout');
  const single = await buildImageLayout(layoutDir, 'v1', [{ layers: [{ size: 3 * 1024 * 1024 + 123, seed: 1 }, { size: 4096, seed: 2 }] }]);
  const multi = await buildImageLayout(layoutDir, 'multi', [
    { layers: [{ size: 200_000, seed: 10 }] },
    { layers: [{ size: 210_000, seed: 11 }], platform: { os: 'linux', architecture: 'arm64', variant: 'v8' } },
  ]);

  // The layout itself: a real tar+gzip whose uncompressed sha256 is the config's diff_id.
  const [image] = single.images;
  assert.ok(image);
  assert.equal(single.topDigest, image.manifestDigest);
  assert.equal(image.layerDigests.length, 2);
  const layerBlob = await readFile(layoutBlobPath(layoutDir, image.layerDigests[0] ?? ''));
  assert.equal(sha256(layerBlob), image.layerDigests[0]);
  assert.equal(layerBlob.length, image.layerSizes[0]);
  const tar = gunzipSync(layerBlob);
  const config = JSON.parse(image.configBytes.toString('utf8')) as { os: string; architecture: string; rootfs: { diff_ids: string[] } };
  assert.equal(config.rootfs.diff_ids[0], sha256(tar));
  assert.deepEqual([config.os, config.architecture], ['linux', 'amd64']);
  assert.equal(tar.subarray(0, 11).toString('latin1'), 'layer-1.bin');
  assert.deepEqual(tar.subarray(512, 512 + 1000), deterministicBytes(1000, 1));
  const layoutIndex = JSON.parse(await readFile(join(layoutDir, 'index.json'), 'utf8')) as { manifests: Array<{ digest: string; annotations: Record<string, string> }> };
  assert.deepEqual(
    layoutIndex.manifests.map((entry) => [entry.annotations['org.opencontainers.image.ref.name'], entry.digest]),
    [['v1', single.topDigest], ['multi', multi.indexDigest]],
  );

  const upstream = await startDistribution();
  t.after(() => upstream.destroy());
  const host = `127.0.0.1:${upstream.port}`;

  await pushLayout(single, `${host}/team/app:v1`);
  assert.deepEqual(await inspectRaw(`docker://${host}/team/app:v1`), image.manifestBytes);

  await pushLayout(multi, `${host}/team/multi:oci`);
  assert.deepEqual(await inspectRaw(`docker://${host}/team/multi:oci`), multi.indexBytes);

  await pushLayout(multi, `${host}/team/multi:docker`, { format: 'v2s2' });
  const list = JSON.parse((await inspectRaw(`docker://${host}/team/multi:docker`)).toString('utf8')) as {
    mediaType: string;
    manifests: Array<{ mediaType: string; platform: { architecture: string; variant?: string } }>;
  };
  assert.equal(list.mediaType, MEDIA_TYPES.dockerManifestList);
  assert.deepEqual(list.manifests.map((entry) => [entry.mediaType, entry.platform.architecture, entry.platform.variant]), [
    [MEDIA_TYPES.dockerManifest, 'amd64', undefined],
    [MEDIA_TYPES.dockerManifest, 'arm64', 'v8'],
  ]);

  const blobGets = (digest: string): number => upstream.countRequests('GET', new RegExp(`^/v2/team/app/blobs/${digest}$`));
  await upstream.settle();
  for (const digest of image.layerDigests) assert.equal(blobGets(digest), 0);
  await copyToOci(`docker://${host}/team/app:v1`, join(work, 'pulled'), 'v1');
  await upstream.settle();
  for (const digest of image.layerDigests) assert.equal(blobGets(digest), 1, `one GET of ${digest}`);
  // One GET from the inspect after the push, one from the copy.
  assert.equal(upstream.countRequests('get', /^\/v2\/team\/app\/manifests\/v1$/), 2);
  assert.equal(upstream.bytesSent('GET', new RegExp(`^/v2/team/app/blobs/${image.layerDigests[0]}$`)), image.layerSizes[0]);
  const pulled = await readFile(layoutBlobPath(join(work, 'pulled'), image.layerDigests[0] ?? ''));
  assert.equal(sha256(pulled), image.layerDigests[0]);

  // Restart keeps port, storage and the log.
  const linesBefore = upstream.accessLog().length;
  await upstream.stop();
  await assert.rejects(waitForHttp(`${upstream.url}/v2/`, 300));
  await upstream.start();
  assert.deepEqual(await inspectRaw(`docker://${host}/team/app:v1`), image.manifestBytes);
  assert.ok(upstream.accessLog().length > linesBefore);
  assert.equal(upstream.countRequests('GET', /^\/v2\/$/), upstream.accessEntries().filter((entry) => entry.userAgent.startsWith('skopeo/') && entry.path === '/v2/' && entry.method === 'GET').length, 'readiness probes are not counted');
  await upstream.settle();
  assert.equal(upstream.countRequests('GET', /^\/v2\/team\/app\/manifests\/v1$/), 3, 'the log spans the restart');
});

void test('htpasswd basic auth round trip', { timeout: 120_000 }, async (t) => {
  const work = await makeTempDir('regmirror-support-htpasswd');
  t.after(() => removeDir(work));
  const htpasswdPath = join(work, 'htpasswd');
  await writeHtpasswd(htpasswdPath, { alice: 's3cret', bob: 'hunter2' });
  assert.match(await readFile(htpasswdPath, 'utf8'), /^alice:\$2y\$.+\nbob:\$2y\$.+\n$/);
  const upstream = await startDistribution({ auth: { htpasswd: { path: htpasswdPath } } });
  t.after(() => upstream.destroy());
  const host = `127.0.0.1:${upstream.port}`;
  const layout = await buildImageLayout(join(work, 'layout'), 'v1', [{ layers: [{ size: 50_000, seed: 5 }] }]);

  await assert.rejects(pushLayout(layout, `${host}/private/app:v1`), /unauthorized|authentication required/i);
  await assert.rejects(pushLayout(layout, `${host}/private/app:v1`, { creds: 'alice:wrong' }), /unauthorized|authentication required/i);
  await pushLayout(layout, `${host}/private/app:v1`, { creds: 'alice:s3cret' });
  assert.deepEqual(await inspectRaw(`docker://${host}/private/app:v1`, { creds: 'bob:hunter2' }), layout.images[0]?.manifestBytes);
  await assert.rejects(inspectRaw(`docker://${host}/private/app:v1`), /unauthorized|authentication required/i);
  await upstream.settle();
  assert.ok(upstream.accessEntries().some((entry) => entry.status === 401));
});

void test('token server and distribution token auth round trip', { timeout: 120_000 }, async (t) => {
  const work = await makeTempDir('regmirror-support-token');
  t.after(() => removeDir(work));
  const tokens = await startTokenServer({ dir: work, users: { carol: 'pa55' }, tokenTtlSeconds: 120 });
  t.after(() => tokens.stop());
  const upstream = await startDistribution({
    auth: { token: { realm: tokens.realm, service: tokens.service, issuer: tokens.issuer, rootCertBundle: tokens.certPath } },
  });
  t.after(() => upstream.destroy());
  const host = `127.0.0.1:${upstream.port}`;
  const layout = await buildImageLayout(join(work, 'layout'), 'v1', [{ layers: [{ size: 60_000, seed: 6 }, { size: 70_000, seed: 7 }] }]);

  // Token endpoint itself: no or wrong credentials are refused.
  const anonymous = await fetch(`${tokens.realm}?service=${tokens.service}&scope=repository:secure/app:pull`);
  assert.equal(anonymous.status, 401);
  const wrong = await fetch(`${tokens.realm}?service=${tokens.service}&scope=repository:secure/app:pull`, {
    headers: { authorization: `Basic ${Buffer.from('carol:nope').toString('base64')}` },
  });
  assert.equal(wrong.status, 401);
  const good = await fetch(`${tokens.realm}?service=${tokens.service}&scope=repository:secure/app:pull`, {
    headers: { authorization: `Basic ${Buffer.from('carol:pa55').toString('base64')}` },
  });
  assert.equal(good.status, 200);
  const body = (await good.json()) as { token: string; access_token: string; expires_in: number; issued_at: string };
  assert.equal(body.token, body.access_token);
  assert.equal(body.expires_in, 120);
  const claims = JSON.parse(Buffer.from(body.token.split('.')[1] ?? '', 'base64url').toString('utf8')) as Record<string, unknown>;
  assert.equal(claims.aud, tokens.service);
  assert.equal(claims.sub, 'carol');
  assert.deepEqual(claims.access, [{ type: 'repository', name: 'secure/app', actions: ['pull'] }]);

  await assert.rejects(pushLayout(layout, `${host}/secure/app:v1`), /unauthorized|authentication required/i);
  await pushLayout(layout, `${host}/secure/app:v1`, { creds: 'carol:pa55' });
  assert.deepEqual(await inspectRaw(`docker://${host}/secure/app:v1`, { creds: 'carol:pa55' }), layout.images[0]?.manifestBytes);
  await copyToOci(`docker://${host}/secure/app:v1`, join(work, 'pulled'), 'v1', { creds: 'carol:pa55' });
  await assert.rejects(inspectRaw(`docker://${host}/secure/app:v1`), /unauthorized|authentication required/i);

  const asked = tokens.requests();
  assert.ok(asked.some((record) => record.user === 'carol' && record.scope?.includes('repository:secure/app:pull,push') === true && record.service === tokens.service));
  assert.ok(asked.some((record) => record.user === 'carol' && record.status === 200 && record.scope === 'repository:secure/app:pull'));
  await upstream.settle();
  assert.equal(upstream.countRequests('GET', new RegExp(`^/v2/secure/app/blobs/${layout.images[0]?.layerDigests[1] ?? 'missing'}$`)), 1);
});

void test('freePort gives distinct bindable ports', async () => {
  const [a, b] = [await freePort(), await freePort()];
  assert.ok(a > 0 && b > 0);
  await assert.rejects(waitForHttp(`http://127.0.0.1:${a}/`, 300), /nothing answered/);
});

/** A port held by a listening server of ours until close(): what another process taking freePort's port looks like. */
async function holdPort(): Promise<{ port: number; close(): Promise<void> }> {
  const server: Server = createServer();
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen({ host: '127.0.0.1', port: 0, exclusive: true }, resolve);
  });
  const address = server.address();
  assert.ok(address !== null && typeof address === 'object');
  return { port: address.port, close: () => new Promise<void>((resolve) => server.close(() => resolve())) };
}

void test('startOnFreePort starts again on another port when the first one was taken meanwhile', async (t) => {
  const taken = await holdPort();
  t.after(() => taken.close());
  const picks = [taken.port];
  const tried: number[] = [];
  const server = await startOnFreePort(
    async (port) => {
      tried.push(port);
      const candidate = createServer();
      await new Promise<void>((resolve, reject) => {
        candidate.once('error', reject);
        candidate.listen({ host: '127.0.0.1', port, exclusive: true }, resolve);
      });
      return candidate;
    },
    { pick: async () => picks.shift() ?? freePort() },
  );
  t.after(() => new Promise<void>((resolve) => server.close(() => resolve())));
  assert.equal(tried.length, 2, `tried ${tried.join(', ')}`);
  assert.equal(tried[0], taken.port);
  assert.notEqual(tried[1], taken.port);
  // Any other failure is not retried.
  let calls = 0;
  await assert.rejects(
    startOnFreePort(() => {
      calls += 1;
      return Promise.reject(new Error('config is broken'));
    }),
    /config is broken/,
  );
  assert.equal(calls, 1);
});

void test('distribution and nginx, told a taken port, fail in words startOnFreePort retries on', { timeout: 60_000 }, async (t) => {
  const taken = await holdPort();
  t.after(() => taken.close());
  const work = await makeTempDir('regmirror-support-taken');
  t.after(() => removeDir(work));
  const starts: Record<string, () => Promise<unknown>> = {
    distribution: () => startDistribution({ port: taken.port }),
    nginx: () => startNginx({ upstream: '127.0.0.1:9', dataDir: work, port: taken.port }),
  };
  for (const [name, start] of Object.entries(starts)) {
    const failure = await start().then(
      () => undefined,
      (error: unknown) => error,
    );
    assert.ok(failure instanceof Error, `${name} must not start on a taken port`);
    assert.ok(isPortConflict(failure), `${name}: ${failure.message}`);
  }
});
