// regmirror killed (SIGKILL) or stopped (SIGTERM) while blob fills are in progress: no partial object
// is ever visible in blobs/, temporaries are cleaned (at restart, or by the graceful stop itself),
// and after a restart the same blobs are fetched again and served exactly.

import assert from 'node:assert/strict';
import { readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import {
  committedBlobPath,
  fileExists,
  rawGet,
  sha256Of,
  startFaultUpstream,
  temporaryFiles,
  waitUntil,
  type FaultUpstream,
  type RawResponse,
} from './support/fault-upstream.js';
import { filesUnder } from './support/data-dir.js';
import { deterministicBytes } from './support/images.js';
import { startRegmirror, type Regmirror } from './support/regmirror.js';

const MiB = 1024 * 1024;

/** Sizes of the files in tmp/. */
async function temporarySizes(dataDir: string): Promise<number[]> {
  const names = await temporaryFiles(dataDir);
  const sizes = await Promise.all(names.map((name) => stat(join(dataDir, 'tmp', name)).then((info) => info.size, () => 0)));
  return sizes;
}

describe('crash recovery: fills interrupted by SIGKILL or SIGTERM', { timeout: 90_000 }, () => {
  // 4 MiB dripped at 64 KiB per 100 ms takes 6.4 s: plenty of time to interrupt each fill midway.
  const blobs = [deterministicBytes(4 * MiB, 301), deterministicBytes(4 * MiB + 3, 302), deterministicBytes(4 * MiB - 5, 303)];
  const graceful = deterministicBytes(4 * MiB, 304);
  let upstream: FaultUpstream;

  before(async () => {
    upstream = await startFaultUpstream({ blobs: [...blobs, graceful], dripBytes: 64 * 1024, dripIntervalMs: 100 });
  });

  after(async () => {
    await upstream?.stop();
  });

  const blobUrl = (mirror: Regmirror, bytes: Buffer): string => `${mirror.url}/v2/${upstream.repository}/blobs/${sha256Of(bytes)}`;

  /** Waits until `count` fills are running and each has written bytes to its temporary file. */
  async function fillsUnderway(mirror: Regmirror, count: number): Promise<void> {
    await waitUntil(`${count} fills are in progress with bytes in tmp/`, async () => {
      if ((await mirror.metricValue('regmirror_fills_in_progress')) !== count) return false;
      const sizes = await temporarySizes(mirror.dataDir);
      return sizes.length === count && sizes.every((size) => size > 0);
    });
  }

  it('kill -9 mid-fill: nothing partial in blobs/, tmp/ emptied at restart, the blobs then fill exactly', async () => {
    upstream.clearModes();
    upstream.setMode('slow-drip');
    const mirror = await startRegmirror({ upstreams: [upstream.url] });
    try {
      const transfers = blobs.map((bytes) => rawGet(blobUrl(mirror, bytes), { timeoutMs: 30_000 }));
      await fillsUnderway(mirror, blobs.length);
      for (const bytes of blobs) {
        assert.ok(upstream.sentBytes(sha256Of(bytes)) < bytes.length, 'the upstream had not finished when the mirror died');
      }
      await mirror.kill9();

      const interrupted: RawResponse[] = await Promise.all(transfers);
      for (const response of interrupted) {
        assert.equal(response.status, 200);
        assert.equal(response.complete, false, 'a transfer cut by the crash is not mistaken for a whole blob');
      }
      assert.deepEqual(await filesUnder(join(mirror.dataDir, 'blobs')), [], 'no object (partial or not) in blobs/ after the crash');
      assert.equal((await temporaryFiles(mirror.dataDir)).length, blobs.length, 'the crash left its temporaries in tmp/');

      await mirror.start();
      assert.deepEqual(await temporaryFiles(mirror.dataDir), [], 'tmp/ is empty once the restarted mirror is up');
      await waitUntil('the restart logs the temporaries it removed', () =>
        mirror.lines().some((line) => line.includes('removed temporaries left by an earlier run') && line.includes(`"removed":${blobs.length}`)),
      );

      // The restarted mirror does not think it has any of them: with the upstream failing, no bytes.
      upstream.setMode('status-500');
      const probe = await rawGet(blobUrl(mirror, blobs[0] ?? Buffer.alloc(0)), { timeoutMs: 10_000 });
      assert.equal(probe.status, 502, 'not served from a partial object');

      upstream.setMode('ok');
      for (const bytes of blobs) {
        const digest = sha256Of(bytes);
        const response = await rawGet(blobUrl(mirror, bytes), { timeoutMs: 30_000 });
        assert.equal(response.status, 200);
        assert.ok(response.complete, `complete (${String(response.error)})`);
        assert.equal(sha256Of(response.body), digest, 'exact bytes after the restart');
        await waitUntil('the blob is committed', () => fileExists(committedBlobPath(mirror.dataDir, digest)));
        assert.equal(sha256Of(await readFile(committedBlobPath(mirror.dataDir, digest))), digest);
      }
      assert.equal(await mirror.metricValue('regmirror_fills_total', { outcome: 'committed' }), blobs.length);
    } finally {
      await mirror.destroy();
    }
  });

  it('SIGTERM mid-fill: the graceful stop aborts the fill and leaves no partial object and no temporary', async () => {
    upstream.clearModes();
    upstream.setMode('slow-drip');
    const digest = sha256Of(graceful);
    const mirror = await startRegmirror({ upstreams: [upstream.url], env: { REGMIRROR_TIMEOUTS_SHUTDOWN_GRACE: '1s' } });
    try {
      const transfer = rawGet(blobUrl(mirror, graceful), { timeoutMs: 30_000 });
      await fillsUnderway(mirror, 1);
      await mirror.stop();
      assert.ok(upstream.sentBytes(digest) < graceful.length, 'the upstream had not finished when the mirror stopped');
      assert.ok(mirror.lines().some((line) => line.includes('regmirror stopped')), 'the mirror stopped by itself, not by the SIGKILL fallback');

      const response = await transfer;
      assert.equal(response.status, 200);
      assert.equal(response.complete, false, 'the client transfer was cut, not ended as if whole');
      assert.deepEqual(await temporaryFiles(mirror.dataDir), [], 'the stop removed its temporary');
      assert.deepEqual(await filesUnder(join(mirror.dataDir, 'blobs')), [], 'nothing committed');
      assert.ok(
        mirror.lines().some((line) => line.includes('blob fill failed') && line.includes(digest)),
        'the aborted fill is logged',
      );

      await mirror.start();
      upstream.setMode('ok');
      const again = await rawGet(blobUrl(mirror, graceful), { timeoutMs: 30_000 });
      assert.equal(again.status, 200);
      assert.ok(again.complete);
      assert.equal(sha256Of(again.body), digest, 'exact bytes after the restart');
      await waitUntil('the blob is committed', () => fileExists(committedBlobPath(mirror.dataDir, digest)));
    } finally {
      await mirror.destroy();
    }
  });

  it('SIGTERM while a fill still waits for upstream headers: the stop does not wait for the headers timeout', async () => {
    upstream.clearModes();
    upstream.setMode('hang');
    const digest = sha256Of(graceful);
    // Headers would time out only after 60 s; the harness falls back to SIGKILL after 10 s.
    const mirror = await startRegmirror({
      upstreams: [upstream.url],
      env: { REGMIRROR_TIMEOUTS_SHUTDOWN_GRACE: '1s', REGMIRROR_TIMEOUTS_RESPONSE_HEADERS: '60s' },
    });
    try {
      const asked = upstream.count('GET', new RegExp(`/blobs/${digest}$`));
      const transfer = rawGet(blobUrl(mirror, graceful), { timeoutMs: 30_000 }).then(
        (response) => response,
        (error: unknown) => error as Error,
      );
      await waitUntil('the fill asked the upstream', () => upstream.count('GET', new RegExp(`/blobs/${digest}$`)) > asked);
      await mirror.stop();
      assert.ok(mirror.lines().some((line) => line.includes('regmirror stopped')), 'the mirror stopped by itself, not by the SIGKILL fallback');
      const outcome = await transfer;
      // The grace ran out with the client still waiting for the fill's headers: its connection is closed before
      // any status line (rawGet rejects only when no headers came), not answered as if the blob existed.
      assert.ok(outcome instanceof Error, `the waiting client got no answer at all, not ${JSON.stringify(outcome)}`);
      assert.equal((outcome as NodeJS.ErrnoException).code, 'ECONNRESET', `the mirror closed the connection (${outcome.message})`);
      assert.ok(mirror.lines().some((line) => line.includes('shutdown grace over')), 'closed by the end of the grace');
      assert.deepEqual(await temporaryFiles(mirror.dataDir), []);
      assert.deepEqual(await filesUnder(join(mirror.dataDir, 'blobs')), []);
    } finally {
      await mirror.destroy();
    }
  });
});

describe('graceful shutdown', { timeout: 60_000 }, () => {
  it('answers /readyz with 503 while a slow response drains after SIGTERM, and lets that response finish', async (t) => {
    const body = deterministicBytes(MiB, 305);
    const digest = sha256Of(body);
    const upstream = await startFaultUpstream({ blobs: [body] });
    t.after(() => upstream.stop());
    const mirror = await startRegmirror({ upstreams: [upstream.url], env: { REGMIRROR_TIMEOUTS_SHUTDOWN_GRACE: '30s' } });
    t.after(() => mirror.destroy());
    // The upstream holds the second half back: the shutdown lasts until the test lets it go.
    upstream.setMode('held', digest);
    const slow = rawGet(`${mirror.url}/v2/${upstream.repository}/blobs/${digest}`, { timeoutMs: 60_000 });
    await waitUntil('the upstream holds the response open', () => upstream.heldCount() === 1);
    assert.equal((await rawGet(`${mirror.url}/readyz`, { timeoutMs: 10_000 })).status, 200, 'ready before the signal');

    const stopping = mirror.stop();
    try {
      await waitUntil('the mirror began its shutdown', () => mirror.lines().some((line) => line.includes('"msg":"shutting down"')));
      // What a load balancer or kubelet does: a new connection to /readyz.
      const probe = await rawGet(`${mirror.url}/readyz`, { timeoutMs: 10_000 }).catch((error: unknown) => error as Error);
      if (probe instanceof Error) assert.fail(`/readyz during the shutdown got no answer (${probe.message}); it must answer 503`);
      assert.equal(probe.status, 503);
      assert.deepEqual(JSON.parse(probe.body.toString('utf8')), { status: 'not ready' });
      assert.equal(upstream.heldCount(), 1, 'the shutdown was still draining the slow response');
    } finally {
      upstream.release('rest');
    }
    const drained = await slow;
    assert.equal(drained.status, 200);
    assert.ok(drained.complete, `the in-flight response finished (${String(drained.error)})`);
    assert.equal(sha256Of(drained.body), digest);
    await stopping;
    assert.ok(mirror.lines().some((line) => line.includes('regmirror stopped')), 'the mirror stopped by itself');
  });
});
