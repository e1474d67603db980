// One process per data directory (issue 9, hole 12): a second server on the same directory refuses to start,
// naming the holder, and leaves the first one's fill in progress alone (it used to delete its temporary);
// verify refuses beside a server; after kill -9 of the holder the directory is free at once.

import assert from 'node:assert/strict';
import { stat } from 'node:fs/promises';
import os from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { committedBlobPath, fileExists, rawGet, sha256Of, startFaultUpstream, temporaryFiles, waitUntil, type FaultUpstream } from './support/fault-upstream.js';
import { deterministicBytes } from './support/images.js';
import { freePort } from './support/ports.js';
import { runRegmirror, startRegmirror } from './support/regmirror.js';

const MiB = 1024 * 1024;

function escaped(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&');
}

describe('the data directory lock', { timeout: 120_000 }, () => {
  // 4 MiB dripped at 64 KiB per 100 ms: a fill that runs for about 6 s, long enough to start a second server beside it.
  const blob = deterministicBytes(4 * MiB, 951);
  let upstream: FaultUpstream;

  before(async () => {
    upstream = await startFaultUpstream({ blobs: [blob], dripBytes: 64 * 1024, dripIntervalMs: 100 });
  });

  after(async () => {
    await upstream?.stop();
  });

  it("refuses a second server, naming the holder (pid, host, since when), and leaves the first one's fill alone", async () => {
    upstream.clearModes();
    upstream.setMode('slow-drip');
    const first = await startRegmirror({ upstreams: [upstream.url] });
    try {
      const digest = sha256Of(blob);
      const transfer = rawGet(`${first.url}/v2/${upstream.repository}/blobs/${digest}`, { timeoutMs: 60_000 });
      await waitUntil('the fill has written to its temporary', async () => {
        const [name] = await temporaryFiles(first.dataDir);
        return name !== undefined && (await stat(join(first.dataDir, 'tmp', name))).size > 0;
      });
      const temporaries = await temporaryFiles(first.dataDir);

      // A server that does not refuse is killed after 20 s, and the test fails.
      const second = await runRegmirror(['serve', '--listen', `127.0.0.1:${await freePort()}`, '--data', first.dataDir, '--upstream', upstream.url], { timeoutMs: 20_000 });
      assert.equal(second.code, 2, second.stderr);
      const holder = `data directory ${escaped(first.dataDir)} is in use by regmirror serve \\(pid ${first.pid() ?? 0} on ${escaped(os.hostname())}, since \\d{4}-\\d\\d-\\d\\dT[\\d:.]+Z\\)`;
      assert.match(second.stderr, new RegExp(`^regmirror: ${holder}`));
      assert.equal(second.stdout, '', 'it refused before it logged anything, or listened');
      assert.deepEqual(await temporaryFiles(first.dataDir), temporaries, "the first server's fill still has its temporary");

      const response = await transfer;
      assert.equal(upstream.sentBytes(digest), blob.length);
      assert.equal(response.status, 200);
      assert.ok(response.complete, `the fill went on to the end (${String(response.error)})`);
      assert.equal(sha256Of(response.body), digest);
      // The client has its last byte a moment before the commit (sync, rename, record, count) ends.
      await first.fillsSettled();
      assert.ok(await fileExists(committedBlobPath(first.dataDir, digest)));
      assert.equal(await first.metricValue('regmirror_fills_total', { outcome: 'committed' }), 1);
    } finally {
      await first.destroy();
    }
  });

  it('refuses verify while a server runs, naming the server', async () => {
    const server = await startRegmirror();
    try {
      const verify = await runRegmirror(['verify', '--data', server.dataDir]);
      assert.equal(verify.code, 2);
      assert.match(verify.stderr, new RegExp(`is in use by regmirror serve \\(pid ${server.pid() ?? 0} on .*\\); verify needs it to itself`));
      assert.equal(verify.stdout, '', 'nothing was checked');
    } finally {
      await server.destroy();
    }
  });

  it('is free at once after kill -9 of its holder: verify runs, then a server starts and holds it in turn', async () => {
    const server = await startRegmirror();
    try {
      const killed = server.pid();
      await server.kill9();
      // No waiting, no retry: the kernel released the lock with the process.
      const verify = await runRegmirror(['verify', '--data', server.dataDir]);
      assert.equal(verify.code, 0, verify.stdout + verify.stderr);
      assert.match(verify.stdout, /all well/);
      await server.start();
      assert.notEqual(server.pid(), killed);
      const refused = await runRegmirror(['verify', '--data', server.dataDir]);
      assert.equal(refused.code, 2);
      assert.match(refused.stderr, new RegExp(`\\(pid ${server.pid() ?? 0} on `), 'the new holder is named, not the killed one');
    } finally {
      await server.destroy();
    }
  });
});
