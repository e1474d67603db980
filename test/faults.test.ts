// regmirror against an upstream that fails in every way it can: cut or lying blob bodies and manifests,
// 500s, a slow upstream, hung connections, a dead upstream. Clients get an error (never a body that looks
// whole), nothing partial is committed, and the next request after the upstream recovers succeeds.

import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
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
import { filesUnder, metadataRows } from './support/data-dir.js';
import { deterministicBytes } from './support/images.js';
import { freePort } from './support/ports.js';
import { startRegmirror, type AccessEntry, type Regmirror } from './support/regmirror.js';

const MiB = 1024 * 1024;
const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

interface OciErrorBody {
  errors: Array<{ code: string; message: string; detail?: unknown }>;
}

function parseErrors(response: RawResponse): OciErrorBody {
  const body = JSON.parse(response.body.toString('utf8')) as OciErrorBody;
  assert.ok(Array.isArray(body.errors) && body.errors.length > 0, `an OCI error body: ${response.body.toString('utf8')}`);
  return body;
}

describe('faults: regmirror in front of a failing upstream', { timeout: 120_000 }, () => {
  // One blob per scenario, so no scenario sees another's cache.
  const blobs = {
    cut: deterministicBytes(3 * MiB, 101),
    wrong: deterministicBytes(3 * MiB, 102),
    chunked: deterministicBytes(3 * MiB + 17, 103),
    broken: deterministicBytes(MiB, 105),
    slow: deterministicBytes(2 * MiB, 106),
    hang: deterministicBytes(MiB, 107),
    hangBody: deterministicBytes(2 * MiB, 108),
  };
  const digests = Object.fromEntries(Object.entries(blobs).map(([name, bytes]) => [name, sha256Of(bytes)])) as Record<keyof typeof blobs, string>;
  let upstream: FaultUpstream;
  let mirror: Regmirror;

  const blobUrl = (digest: string): string => `${mirror.url}/v2/${upstream.repository}/blobs/${digest}`;
  const blobPathRe = (digest: string): RegExp => new RegExp(`/blobs/${digest}$`);

  /** The access-log entries for GETs of a path ending so, once there are at least `count` (the log line may trail the response). */
  async function loggedGets(suffix: string, count: number): Promise<AccessEntry[]> {
    const matching = (): AccessEntry[] => mirror.accessEntries().filter((entry) => entry.method === 'GET' && entry.path.endsWith(suffix));
    await waitUntil(`${count} access-log lines for ${suffix}`, () => matching().length >= count, 5_000);
    return matching();
  }

  /** Waits until no fill runs and tmp/ is empty, then asserts the blob is not committed. */
  async function assertNothingCommitted(digest: string): Promise<void> {
    await waitUntil('no fill is in progress and tmp/ is empty', async () => {
      const running = await mirror.metricValue('regmirror_fills_in_progress');
      return running === 0 && (await temporaryFiles(mirror.dataDir)).length === 0;
    });
    assert.equal(await fileExists(committedBlobPath(mirror.dataDir, digest)), false, 'no committed blob file');
  }

  /** Switches the blob to 'ok' and proves the next GET returns exactly its bytes and commits them. */
  async function assertRecovers(digest: string, bytes: Buffer): Promise<void> {
    upstream.setMode('ok', digest);
    const response = await rawGet(blobUrl(digest), { timeoutMs: 30_000 });
    assert.equal(response.status, 200);
    assert.ok(response.complete, `complete body (${String(response.error)})`);
    assert.equal(response.body.length, bytes.length);
    assert.equal(sha256Of(response.body), digest, 'exact bytes after recovery');
    assert.equal(response.headers['docker-content-digest'], digest);
    await waitUntil('the recovered blob is committed', () => fileExists(committedBlobPath(mirror.dataDir, digest)));
    assert.equal(sha256Of(await readFile(committedBlobPath(mirror.dataDir, digest))), digest, 'committed file has the right content');
  }

  before(async () => {
    upstream = await startFaultUpstream({ blobs: Object.values(blobs), tags: ['stale-500', 'too-stale'] });
    mirror = await startRegmirror({
      upstreams: [upstream.url],
      env: {
        REGMIRROR_TIMEOUTS_BODY_IDLE: '2s',
        REGMIRROR_TIMEOUTS_RESPONSE_HEADERS: '2s',
        REGMIRROR_TIMEOUTS_CONNECT: '2s',
        REGMIRROR_CACHE_TAG_FRESHNESS: '1s',
        REGMIRROR_CACHE_MAX_STALENESS: '1h',
        // Each scenario breaks one object of one upstream: keep its circuit out of the way (upstream-budget.test.ts covers it).
        REGMIRROR_CIRCUIT_FAILURE_THRESHOLD: '1000',
      },
    });
  });

  after(async () => {
    if (process.env.DEBUG_MIRROR) console.log(mirror?.lines().join('\n'));
    await mirror?.destroy();
    await upstream?.stop();
  });

  it('cut mid-blob: the client transfer fails, nothing is committed, the next GET succeeds', async () => {
    const digest = digests.cut;
    const failedBefore = await mirror.metricValue('regmirror_fills_total', { outcome: 'failed' });
    upstream.setMode('cut', digest);
    const response = await rawGet(blobUrl(digest), { timeoutMs: 20_000 });
    assert.equal(response.status, 200, 'headers were sent before the cut');
    assert.equal(response.headers['content-length'], String(blobs.cut.length));
    assert.equal(response.complete, false, 'the client sees a failed transfer, not a clean end');
    assert.ok(response.body.length < blobs.cut.length, `short body: ${response.body.length}`);
    const [logged] = await loggedGets(digest, 1);
    assert.equal(logged?.aborted, true, 'the cut transfer is in the access log, marked aborted');
    assert.equal(logged?.cache, 'miss');
    await assertNothingCommitted(digest);
    assert.equal(await mirror.metricValue('regmirror_fills_total', { outcome: 'failed' }), failedBefore + 1);
    await assertRecovers(digest, blobs.cut);
    assert.equal(upstream.count('GET', blobPathRe(digest)), 2, 'one upstream GET per attempt');
  });

  it('wrong bytes with the right length: the client never gets a whole-looking body, nothing is committed', async () => {
    const digest = digests.wrong;
    upstream.setMode('wrong-bytes', digest);
    const response = await rawGet(blobUrl(digest), { timeoutMs: 20_000 });
    assert.equal(response.status, 200);
    assert.equal(response.complete, false, 'the transfer is cut when the digest does not match');
    // The last byte is held back until verification, so even a full-length lie never reaches the end.
    assert.ok(response.body.length < blobs.wrong.length, `held back: got ${response.body.length} of ${blobs.wrong.length}`);
    await assertNothingCommitted(digest);
    await assertRecovers(digest, blobs.wrong);
  });

  it('a short body without Content-Length that ends cleanly: the client transfer fails, nothing is committed', async () => {
    const digest = digests.chunked;
    upstream.setMode('chunked-short', digest);
    const response = await rawGet(blobUrl(digest), { timeoutMs: 20_000 });
    assert.equal(response.status, 200);
    assert.equal(response.headers['content-length'], undefined, 'the mirror cannot announce a size it was not told');
    assert.equal(response.complete, false, 'no clean end of a chunked body that failed verification');
    assert.ok(response.body.length < blobs.chunked.length);
    await assertNothingCommitted(digest);
    await assertRecovers(digest, blobs.chunked);
  });

  it('500 upstream: the client gets 502 naming no internal address, port or stack', async () => {
    const digest = digests.broken;
    upstream.setMode('status-500', digest);
    for (const method of ['GET', 'HEAD'] as const) {
      const response = await rawGet(blobUrl(digest), { method, timeoutMs: 10_000 });
      assert.equal(response.status, 502, `${method}: 502 Bad Gateway`);
      if (method === 'HEAD') continue;
      const text = response.body.toString('utf8');
      const body = parseErrors(response);
      assert.equal(body.errors[0]?.code, 'UPSTREAM_UNAVAILABLE');
      assert.ok(!text.includes('127.0.0.1'), `no internal address in ${text}`);
      assert.ok(!text.includes(String(upstream.port)), `no upstream port in ${text}`);
      assert.ok(!/\n\s+at |stack|upstream\.js/.test(text), `no stack trace in ${text}`);
    }
    await assertNothingCommitted(digest);
    await assertRecovers(digest, blobs.broken);
  });

  it('slow upstream: the client streams while the upstream is still sending, one upstream GET for two clients', async () => {
    const digest = digests.slow;
    // Half the blob, then nothing until released: whatever this machine's speed, bytes that reach a client
    // before the release reached it while the upstream was still sending.
    upstream.setMode('held', digest);
    let firstBytes: () => void = () => undefined;
    const firstGotBytes = new Promise<void>((resolve) => {
      firstBytes = resolve;
    });
    const first = rawGet(blobUrl(digest), { timeoutMs: 30_000, onChunk: () => firstBytes() });
    await firstGotBytes;
    assert.equal(upstream.heldCount(), 1, 'the first client had bytes while the upstream was still sending');
    let followerBytes: () => void = () => undefined;
    const followerGotBytes = new Promise<void>((resolve) => {
      followerBytes = resolve;
    });
    const follower = rawGet(blobUrl(digest), { timeoutMs: 30_000, onChunk: () => followerBytes() });
    await followerGotBytes;
    assert.equal(upstream.heldCount(), 1, 'the follower streamed from the fill in progress');
    assert.equal(upstream.release('rest'), 1);
    for (const response of await Promise.all([first, follower])) {
      assert.equal(response.status, 200);
      assert.ok(response.complete, `complete (${String(response.error)})`);
      assert.equal(sha256Of(response.body), digest, 'exact bytes');
    }
    assert.equal(upstream.count('GET', blobPathRe(digest)), 1, 'one upstream GET for both clients');
    const caches = (await loggedGets(digest, 2)).map((entry) => entry.cache).sort();
    assert.deepEqual(caches, ['fill', 'miss'], 'one client started the fill, the other followed it');
    await waitUntil('the blob is committed', () => fileExists(committedBlobPath(mirror.dataDir, digest)));
  });

  it('hung upstream (no headers): 504 after the response-headers timeout, then recovery', async () => {
    const digest = digests.hang;
    upstream.setMode('hang', digest);
    const response = await rawGet(blobUrl(digest), { timeoutMs: 15_000 });
    assert.equal(response.status, 504, 'a bounded wait, then 504 Gateway Timeout (not a hang)');
    const body = parseErrors(response);
    assert.equal(body.errors[0]?.code, 'UPSTREAM_TIMEOUT');
    assert.match(body.errors[0]?.message ?? '', /in time/);
    await assertNothingCommitted(digest);
    await assertRecovers(digest, blobs.hang);
  });

  it('upstream stalls mid-body: the client transfer fails after the body-idle timeout, nothing is committed', async () => {
    const digest = digests.hangBody;
    upstream.setMode('hang-body', digest);
    const response = await rawGet(blobUrl(digest), { timeoutMs: 15_000 });
    assert.equal(response.status, 200);
    assert.equal(response.complete, false);
    assert.doesNotMatch(String(response.error), /no complete answer within/, 'the mirror cut the transfer, not our own timeout');
    assert.ok(response.body.length < blobs.hangBody.length);
    assert.equal((await loggedGets(digest, 1))[0]?.aborted, true, 'the stalled transfer is logged as aborted');
    await assertNothingCommitted(digest);
    await assertRecovers(digest, blobs.hangBody);
  });

  it('a cached tag is served stale while the upstream fails; the manifest by digest stays', async () => {
    const tag = 'stale-500';
    const tagUrl = (reference: string): string => `${mirror.url}/v2/${upstream.repository}/manifests/${reference}`;
    const accept = { accept: upstream.manifest.mediaType };
    const asks = (): number => upstream.count('HEAD', new RegExp(`/manifests/${tag}$`)) + upstream.count('GET', new RegExp(`/manifests/${tag}$`));
    const fresh = await rawGet(tagUrl(tag), { headers: accept, timeoutMs: 10_000 });
    const answeredAt = Date.now();
    assert.equal(fresh.status, 200);
    assert.ok(fresh.body.equals(upstream.manifest.bytes));
    assert.equal((await loggedGets(`/manifests/${tag}`, 1)).at(-1)?.cache, 'miss');
    upstream.setMode('status-500', tag);
    // Past the 1 s freshness (max staleness is an hour: however slow this machine, the tag stays servable).
    await sleep(Math.max(0, answeredAt + 1_300 - Date.now()));
    const asked = asks();
    const stale = await rawGet(tagUrl(tag), { headers: accept, timeoutMs: 10_000 });
    assert.equal(stale.status, 200, 'served stale');
    assert.ok(stale.body.equals(upstream.manifest.bytes), 'same bytes');
    assert.equal(stale.headers['docker-content-digest'], upstream.manifest.digest);
    assert.ok(asks() > asked, 'revalidation was tried');
    assert.equal((await loggedGets(`/manifests/${tag}`, 2)).at(-1)?.cache, 'stale', 'access log says stale');
    // The manifest by digest is content: kept for good whatever the tag's upstream says.
    const byDigest = await rawGet(tagUrl(upstream.manifest.digest), { headers: accept, timeoutMs: 10_000 });
    assert.equal(byDigest.status, 200);
    assert.ok(byDigest.body.equals(upstream.manifest.bytes));
  });

  it('a cached tag older than max staleness is not served: the upstream error wins', async () => {
    const tag = 'too-stale';
    // Its own mirror: a max staleness short enough to outwait (a wait past it holds on any machine).
    const strict = await startRegmirror({
      upstreams: [upstream.url],
      env: { REGMIRROR_CACHE_TAG_FRESHNESS: '500ms', REGMIRROR_CACHE_MAX_STALENESS: '1s', REGMIRROR_CIRCUIT_FAILURE_THRESHOLD: '1000' },
    });
    try {
      const tagUrl = (reference: string): string => `${strict.url}/v2/${upstream.repository}/manifests/${reference}`;
      const accept = { accept: upstream.manifest.mediaType };
      const fresh = await rawGet(tagUrl(tag), { headers: accept, timeoutMs: 10_000 });
      const answeredAt = Date.now();
      assert.equal(fresh.status, 200);
      upstream.setMode('status-500', tag);
      // The mirror recorded the tag's fetch before it answered: from here its age exceeds 1 s.
      await sleep(Math.max(0, answeredAt + 1_300 - Date.now()));
      const failed = await rawGet(tagUrl(tag), { headers: accept, timeoutMs: 10_000 });
      assert.equal(failed.status, 502, 'too stale: the upstream error wins');
      assert.equal(parseErrors(failed).errors[0]?.code, 'UPSTREAM_UNAVAILABLE');
      assert.equal(upstream.count('HEAD', new RegExp(`/manifests/${tag}$`)), 1, 'the revalidation was tried');
      const byDigest = await rawGet(tagUrl(upstream.manifest.digest), { headers: accept, timeoutMs: 10_000 });
      assert.equal(byDigest.status, 200, 'the manifest by digest is still served');
    } finally {
      await strict.destroy();
    }
  });
});

describe('faults: manifests are verified before anything is cached', { timeout: 60_000 }, () => {
  let upstream: FaultUpstream;

  before(async () => {
    upstream = await startFaultUpstream({ blobs: [deterministicBytes(1000, 401)], tags: ['v1'] });
  });

  after(async () => {
    await upstream?.stop();
  });

  const lies = [
    ['a manifest body that does not match its Docker-Content-Digest', 'wrong-bytes'],
    ['a Docker-Content-Digest that names other bytes', 'wrong-digest'],
  ] as const;
  for (const [lie, mode] of lies) {
    it(`${lie}: 502 by tag and by digest, nothing stored, the right manifest once the upstream is fixed`, async (t) => {
      // A mirror of its own: nothing cached before, whatever other tests did.
      const mirror = await startRegmirror({ upstreams: [upstream.url] });
      t.after(() => mirror.destroy());
      t.after(() => upstream.clearModes());
      const url = (reference: string): string => `${mirror.url}/v2/${upstream.repository}/manifests/${reference}`;
      const accept = { accept: upstream.manifest.mediaType };
      const asked = upstream.count('GET', /\/manifests\/v1$/);
      upstream.setMode(mode, 'v1');
      upstream.setMode(mode, upstream.manifest.digest);
      for (const reference of ['v1', upstream.manifest.digest]) {
        const refused = await rawGet(url(reference), { headers: accept, timeoutMs: 10_000 });
        assert.equal(refused.status, 502, `${reference}: refused`);
        const error = parseErrors(refused).errors[0];
        assert.equal(error?.code, 'UPSTREAM_UNAVAILABLE');
        assert.match(error?.message ?? '', /does not match its digest/);
      }
      assert.deepEqual(await filesUnder(join(mirror.dataDir, 'blobs')), [], 'no manifest file, right or wrong');
      assert.deepEqual(metadataRows(mirror.dataDir), { blobs: [], manifests: [], tags: {} }, 'no record of a manifest or the tag');

      upstream.clearModes();
      const fixed = await rawGet(url('v1'), { headers: accept, timeoutMs: 10_000 });
      assert.equal(fixed.status, 200);
      assert.ok(fixed.body.equals(upstream.manifest.bytes), 'the upstream manifest, byte for byte');
      assert.equal(fixed.headers['docker-content-digest'], upstream.manifest.digest);
      assert.equal(upstream.count('GET', /\/manifests\/v1$/), asked + 2, 'asked again once fixed: nothing was cached from the lie');
      const manifestFile = committedBlobPath(mirror.dataDir, upstream.manifest.digest);
      assert.deepEqual(await filesUnder(join(mirror.dataDir, 'blobs')), [manifestFile], 'only the right manifest stored');
      assert.ok((await readFile(manifestFile)).equals(upstream.manifest.bytes));
      assert.deepEqual(metadataRows(mirror.dataDir), { blobs: [], manifests: [upstream.manifest.digest], tags: { [`${upstream.repository}:v1`]: upstream.manifest.digest } });
    });
  }
});

describe('faults: the upstream is down', { timeout: 60_000 }, () => {
  it('a stopped upstream: cached blobs still served, a cold blob gets a quick 502, the process keeps running', async () => {
    const warm = deterministicBytes(MiB, 201);
    const cold = deterministicBytes(MiB, 202);
    const upstream = await startFaultUpstream({ blobs: [warm, cold] });
    const mirror = await startRegmirror({ upstreams: [upstream.url], env: { REGMIRROR_TIMEOUTS_CONNECT: '2s' } });
    try {
      const url = (bytes: Buffer): string => `${mirror.url}/v2/${upstream.repository}/blobs/${sha256Of(bytes)}`;
      const first = await rawGet(url(warm), { timeoutMs: 10_000 });
      assert.equal(first.status, 200);
      await upstream.stop();

      const cached = await rawGet(url(warm), { timeoutMs: 10_000 });
      assert.equal(cached.status, 200);
      assert.ok(cached.complete);
      assert.equal(sha256Of(cached.body), sha256Of(warm), 'cached blob served with the upstream down');

      const missing = await rawGet(url(cold), { timeoutMs: 5_000 });
      assert.equal(missing.status, 502);
      const body = parseErrors(missing);
      assert.equal(body.errors[0]?.code, 'UPSTREAM_UNAVAILABLE');
      assert.match(body.errors[0]?.message ?? '', /unreachable/, 'a clear message');
      assert.ok(!missing.body.toString().includes(String(upstream.port)), 'no upstream port in the message');

      const health = await rawGet(`${mirror.url}/healthz`, { timeoutMs: 5_000 });
      assert.equal(health.status, 200, 'the mirror process keeps running');
      assert.equal(await fileExists(committedBlobPath(mirror.dataDir, sha256Of(cold))), false);
    } finally {
      await mirror.destroy();
      await upstream.stop();
    }
  });

  it('starts with its upstream down: /v2/ and /healthz answer, content gets 502', async () => {
    const closedPort = await freePort();
    const mirror = await startRegmirror({ upstreams: [`http://127.0.0.1:${closedPort}`], env: { REGMIRROR_TIMEOUTS_CONNECT: '2s' } });
    try {
      const base = await rawGet(`${mirror.url}/v2/`, { timeoutMs: 5_000 });
      assert.equal(base.status, 200);
      assert.equal(base.headers['docker-distribution-api-version'], 'registry/2.0');
      assert.equal((await rawGet(`${mirror.url}/healthz`, { timeoutMs: 5_000 })).status, 200);
      const manifest = await rawGet(`${mirror.url}/v2/some/repo/manifests/latest`, { timeoutMs: 5_000 });
      assert.equal(manifest.status, 502);
      assert.equal(parseErrors(manifest).errors[0]?.code, 'UPSTREAM_UNAVAILABLE');
      const blob = await rawGet(`${mirror.url}/v2/some/repo/blobs/sha256:${'0'.repeat(64)}`, { timeoutMs: 5_000 });
      assert.equal(blob.status, 502);
      assert.ok(!blob.body.toString().includes(String(closedPort)), 'no upstream port in the message');
    } finally {
      await mirror.destroy();
    }
  });
});
