// A client that is broken or hostile (issue 9, holes 2 and 8): one that stops reading, one that sends a push body
// byte by byte and then nothing, one that pushes more than the mirror takes. The mirror drops idle clients after
// timeouts.clientIdle (removing what they left), bounds what stalled readers hold with limits.sendBuffers, never lets
// them slow a fill or other clients, and refuses oversized pushes in the protocol's shape, keeping nothing.

import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import { connect, type Socket } from 'node:net';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { committedBlobPath, fileExists, rawGet, temporaryFiles, waitUntil } from './support/fault-upstream.js';
import { deterministicBytes, sha256Digest } from './support/images.js';
import { startRegmirror, type Regmirror } from './support/regmirror.js';
import { sendError, startScriptedUpstream, type ScriptedUpstream } from './support/scripted-upstream.js';
import { makeTempDir, removeDir } from './support/temp.js';
import { makeV1Chain, v1Request, type V1Image } from './support/v1-client.js';

const MiB = 1024 * 1024;
const SEND_BUFFERS = 4 * MiB;
const SMALL_BUFFER = 64 * 1024;

/** Opens a connection, sends a GET and never reads the answer: the mirror's writes back up. */
async function stalledGet(port: number, requestPath: string): Promise<Socket> {
  const socket = connect({ host: '127.0.0.1', port });
  await new Promise<void>((resolve, reject) => {
    socket.once('connect', resolve);
    socket.once('error', reject);
  });
  socket.on('error', () => undefined);
  socket.pause();
  socket.write(`GET ${requestPath} HTTP/1.1\r\nHost: mirror\r\n\r\n`);
  return socket;
}

/**
 * Resumes a stalled client and reads what is left: a paused socket notices nothing, so whether the mirror dropped it
 * shows only now. Resolves with the bytes received (headers included) once the mirror has closed the connection.
 */
async function drain(socket: Socket): Promise<number> {
  let received = 0;
  socket.on('data', (chunk: Buffer) => (received += chunk.length));
  const ended = new Promise<void>((resolve) => socket.once('close', () => resolve()));
  socket.resume();
  await ended;
  return received;
}

/** Waits until the mirror has logged `count` aborted responses for paths ending so (it logs when it drops a client). */
async function abortedResponses(mirror: Regmirror, suffix: string, count: number): Promise<void> {
  await waitUntil(
    `${count} aborted responses for ${suffix}`,
    async () => {
      await mirror.settle();
      return mirror.accessEntries().filter((entry) => entry.path.endsWith(suffix) && entry.aborted === true).length >= count;
    },
    30_000,
  );
}

describe('clients that stop reading (hole 8)', { timeout: 120_000 }, () => {
  // Larger than what the kernel's socket buffers on loopback absorb, so a client that does not read stalls the server.
  const cached = deterministicBytes(48 * MiB, 801);
  const cold = deterministicBytes(48 * MiB, 802);
  const cachedDigest = sha256Digest(cached);
  const coldDigest = sha256Digest(cold);
  let configDir: string;
  let upstream: ScriptedUpstream;
  let mirror: Regmirror;

  before(async () => {
    configDir = await makeTempDir('regmirror-stalled-');
    upstream = await startScriptedUpstream((request, response) => {
      const bytes = request.url?.endsWith(cachedDigest) === true ? cached : request.url?.endsWith(coldDigest) === true ? cold : undefined;
      if (bytes === undefined) {
        sendError(response, 404, 'BLOB_UNKNOWN');
        return;
      }
      response.writeHead(200, { 'content-length': String(bytes.length) });
      response.end(request.method === 'HEAD' ? undefined : bytes);
    });
    const configFile = path.join(configDir, 'config.yaml');
    await writeFile(
      configFile,
      `upstreams:\n  - registry: upstream.test\n    url: ${upstream.url}\nlimits:\n  sendBuffers: 4MiB\ntimeouts:\n  clientIdle: 3s\n`,
    );
    mirror = await startRegmirror({ configFile });
    const warm = await rawGet(`${mirror.url}/v2/team/app/blobs/${cachedDigest}`, { timeoutMs: 60_000 });
    assert.ok(warm.complete && warm.body.equals(cached));
    await waitUntil('the blob is cached', () => fileExists(committedBlobPath(mirror.dataDir, cachedDigest)));
  });

  after(async () => {
    await mirror?.destroy();
    await upstream?.stop();
    if (configDir !== undefined) await removeDir(configDir);
  });

  it('gives 20 stalled readers of a cached blob small buffers past the budget, serves others in full, and drops them when idle', async () => {
    const sockets = await Promise.all(Array.from({ length: 20 }, () => stalledGet(mirror.port, `/v2/team/app/blobs/${cachedDigest}`)));
    await waitUntil('every stalled response has its buffers', async () => (await mirror.metricValue('regmirror_send_buffer_bytes')) > 0);
    const reserved = await mirror.metricValue('regmirror_send_buffer_bytes');
    assert.ok(reserved <= SEND_BUFFERS + 20 * 2 * SMALL_BUFFER, `${reserved} bytes reserved for 20 stalled readers`);
    // Another client is served in full meanwhile.
    const other = await rawGet(`${mirror.url}/v2/team/app/blobs/${cachedDigest}`, { timeoutMs: 60_000 });
    assert.ok(other.complete && other.body.equals(cached), 'a reading client is not held up by the stalled ones');
    await abortedResponses(mirror, cachedDigest, 20);
    await waitUntil('their buffers are given back', async () => (await mirror.metricValue('regmirror_send_buffer_bytes')) === 0);
    for (const received of await Promise.all(sockets.map(drain))) assert.ok(received < cached.length, 'a dropped client never gets a whole body');
  });

  it('lets a fill finish and a reading client get every byte while other clients of the fill never read', async () => {
    const sockets = await Promise.all(Array.from({ length: 4 }, () => stalledGet(mirror.port, `/v2/team/app/blobs/${coldDigest}`)));
    const reader = await rawGet(`${mirror.url}/v2/team/app/blobs/${coldDigest}`, { timeoutMs: 60_000 });
    assert.ok(reader.complete && reader.body.equals(cold), 'the reading client got the whole blob');
    await waitUntil('the fill committed', () => fileExists(committedBlobPath(mirror.dataDir, coldDigest)), 30_000);
    assert.equal(upstream.count('GET', new RegExp(`${coldDigest}$`)), 1, 'one upstream fetch for all five clients');
    await abortedResponses(mirror, coldDigest, 4);
    await waitUntil('nothing is left reserved', async () => (await mirror.metricValue('regmirror_send_buffer_bytes')) === 0);
    for (const received of await Promise.all(sockets.map(drain))) assert.ok(received < cold.length, 'a dropped client never gets a whole body');
    assert.deepEqual(await temporaryFiles(mirror.dataDir), []);
  });
});

describe('pushes without limits (hole 2)', { timeout: 60_000 }, () => {
  let configDir: string;
  let registry: Regmirror;
  const [image] = makeV1Chain('limits', [{ size: 2 * MiB, seed: 803 }]) as [V1Image];

  before(async () => {
    configDir = await makeTempDir('regmirror-limits-');
    const configFile = path.join(configDir, 'config.yaml');
    // A plain registry (no upstream, no source): writable.
    await writeFile(configFile, 'limits:\n  uploadSize: 1MiB\ntimeouts:\n  clientIdle: 2s\n');
    registry = await startRegmirror({ configFile });
    const json = await v1Request(`${registry.url}/v1/images/${image.id}/json`, { method: 'PUT', body: image.json });
    assert.equal(json.status, 200);
  });

  after(async () => {
    await registry?.destroy();
    if (configDir !== undefined) await removeDir(configDir);
  });

  it('refuses a layer larger than limits.uploadSize with 413, announced or streamed, keeping nothing', async () => {
    const layerUrl = `${registry.url}/v1/images/${image.id}/layer`;
    const announced = await v1Request(layerUrl, { method: 'PUT', body: image.layer });
    assert.equal(announced.status, 413);
    assert.match((JSON.parse(announced.body.toString()) as { error: string }).error, /larger than the 1048576 bytes/);
    const chunks = Array.from({ length: 32 }, (_, index) => image.layer.subarray(index * 64 * 1024, (index + 1) * 64 * 1024));
    const streamed = await v1Request(layerUrl, { method: 'PUT', body: chunks });
    assert.equal(streamed.status, 413);
    assert.deepEqual(await temporaryFiles(registry.dataDir), [], 'the temporary is removed');
    assert.equal(await fileExists(path.join(registry.dataDir, 'v1', 'images', image.id, 'layer')), false);
    const state = await v1Request(`${registry.url}/v1/images/${image.id}/json`);
    assert.equal(state.status, 400, 'the image stays in progress, not complete');
  });

  it('drops a client whose push body stops arriving after timeouts.clientIdle, and removes its temporary', async () => {
    const socket = connect({ host: '127.0.0.1', port: registry.port });
    socket.on('error', () => undefined);
    await new Promise<void>((resolve) => socket.once('connect', resolve));
    socket.write(`PUT /v1/images/${image.id}/layer HTTP/1.1\r\nHost: registry\r\nTransfer-Encoding: chunked\r\n\r\n400\r\n${'x'.repeat(1024)}\r\n`);
    await waitUntil('a temporary for the push exists', async () => (await temporaryFiles(registry.dataDir)).length === 1, 10_000);
    // This socket is not paused: it sees the mirror close it.
    await waitUntil('the silent client is dropped', () => socket.closed, 30_000);
    await waitUntil('its temporary is removed', async () => (await temporaryFiles(registry.dataDir)).length === 0, 10_000);
  });
});
