// Upstream budgets: an upstream answering 429 with Retry-After opens its circuit. Meanwhile cached tags
// are served, uncached requests fail fast with 429 and nothing reaches the upstream; when the window
// ends and the upstream recovers, traffic resumes. Repeated failures open it too (503, fast).
// Each test has its own upstream and mirror, so each runs alone or in any order.

import assert from 'node:assert/strict';
import { describe, it, type TestContext } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { startFaultUpstream, waitUntil, type FaultUpstream } from './support/fault-upstream.js';
import { deterministicBytes } from './support/images.js';
import { startRegmirror, type Regmirror } from './support/regmirror.js';

interface UpstreamStatus {
  registry: string;
  circuit: string;
  reason?: string;
  rateLimit: { limit?: number; remaining?: number; windowSeconds?: number };
  lastError?: { message: string };
}

const accept = 'application/vnd.oci.image.manifest.v1+json';
/** What the fault upstream's 429 says in Retry-After. */
const RETRY_AFTER_MS = 7_000;

/** One GET, its body read to the end: a response left unread would keep the mirror's graceful stop waiting. */
async function get(url: string, headers: Record<string, string> = {}): Promise<{ status: number; headers: Headers; text: string }> {
  const response = await fetch(url, { headers });
  return { status: response.status, headers: response.headers, text: await response.text() };
}

async function setUp(t: TestContext, env: Record<string, string>): Promise<{ upstream: FaultUpstream; mirror: Regmirror }> {
  const upstream = await startFaultUpstream({ blobs: [deterministicBytes(50_000, 1), deterministicBytes(60_000, 2), deterministicBytes(70_000, 3)] });
  t.after(() => upstream.stop());
  const mirror = await startRegmirror({ upstreams: [`faults.example=${upstream.url}`], env });
  t.after(() => mirror.destroy());
  return { upstream, mirror };
}

describe('upstream budgets and the circuit', () => {
  const manifestUrl = (mirror: Regmirror, upstream: FaultUpstream): string => `${mirror.url}/v2/${upstream.repository}/manifests/v1`;
  const blobUrl = (mirror: Regmirror, upstream: FaultUpstream, index: number): string =>
    `${mirror.url}/v2/${upstream.repository}/blobs/${upstream.blobDigests[index] ?? ''}`;
  const status = async (mirror: Regmirror): Promise<UpstreamStatus> => {
    const body = (await (await fetch(`${mirror.url}/_regmirror/status`)).json()) as { upstreams: UpstreamStatus[] };
    return body.upstreams[0] as UpstreamStatus;
  };

  it('serves cached tags and fails uncached requests fast while rate-limited, then resumes', async (t) => {
    // Max staleness an hour: the cached tag stays servable however slow this machine is.
    const { upstream, mirror } = await setUp(t, { REGMIRROR_CACHE_TAG_FRESHNESS: '500ms', REGMIRROR_CACHE_MAX_STALENESS: '1h' });
    assert.equal((await get(manifestUrl(mirror, upstream), { accept })).status, 200);
    const cachedAt = Date.now();
    assert.equal((await get(blobUrl(mirror, upstream, 0))).status, 200);
    upstream.setMode('status-429');
    await sleep(Math.max(0, cachedAt + 700 - Date.now())); // past the tag's freshness

    const beforeOpening = upstream.requests().length;
    const stale = await get(manifestUrl(mirror, upstream), { accept });
    assert.equal(stale.status, 200, 'the cached tag is served');
    assert.equal(stale.headers.get('docker-content-digest'), upstream.manifest.digest);
    const opening = upstream.requests().slice(beforeOpening);
    assert.deepEqual(opening.map((request) => request.method), ['HEAD'], 'one revalidation, answered 429');
    const rateLimitedAt = opening[0]?.at ?? 0;
    const opened = await status(mirror);
    assert.equal(opened.circuit, 'open');
    assert.equal(opened.reason, 'rate-limited');
    assert.match(opened.lastError?.message ?? '', /429/);

    const cold = await get(blobUrl(mirror, upstream, 1));
    assert.equal(cold.status, 429, 'an uncached blob fails with 429');
    const retryAfter = Number(cold.headers.get('retry-after'));
    assert.ok(retryAfter >= 1 && retryAfter <= 7, `Retry-After ${retryAfter} within the upstream's 7 s`);
    const body = JSON.parse(cold.text) as { errors: Array<{ code: string }> };
    assert.equal(body.errors[0]?.code, 'TOOMANYREQUESTS');
    assert.equal((await get(manifestUrl(mirror, upstream), { accept })).status, 200, 'the tag is still served');
    assert.equal((await get(blobUrl(mirror, upstream, 0))).status, 200, 'a cached blob is still served');
    await mirror.settle();
    assert.ok(mirror.lines().some((line) => line.includes('upstream circuit opened')), 'the opening is logged');
    assert.equal(await mirror.metricValue('regmirror_upstream_circuit_open', { upstream: 'faults.example' }), 1);

    upstream.setMode('ok');
    await waitUntil('the Retry-After window to pass', async () => (await get(blobUrl(mirror, upstream, 1))).status === 200, 20_000);
    // Proof by the upstream's own record: whatever the mirror answered meanwhile, it asked nothing during the window.
    const later = upstream.requests().slice(beforeOpening + 1);
    assert.ok(later.length > 0, 'the upstream was asked again once the window ended');
    const early = later.filter((request) => request.at < rateLimitedAt + RETRY_AFTER_MS);
    assert.deepEqual(early, [], 'nothing reached the upstream before its Retry-After passed');
    assert.equal((await status(mirror)).circuit, 'closed');
    assert.equal(await mirror.metricValue('regmirror_upstream_circuit_open', { upstream: 'faults.example' }), 0);
  });

  it('past max staleness, a rate-limited upstream\'s 429 reaches the client', async (t) => {
    const { upstream, mirror } = await setUp(t, { REGMIRROR_CACHE_TAG_FRESHNESS: '500ms', REGMIRROR_CACHE_MAX_STALENESS: '1s' });
    assert.equal((await get(manifestUrl(mirror, upstream), { accept })).status, 200);
    const cachedAt = Date.now();
    upstream.setMode('status-429');
    // The tag's fetch was recorded before its answer: from here it is older than the 1 s max staleness.
    await sleep(Math.max(0, cachedAt + 1_300 - Date.now()));
    const tooStale = await get(manifestUrl(mirror, upstream), { accept });
    assert.equal(tooStale.status, 429, 'past max staleness the rate limit wins');
    assert.ok(Number(tooStale.headers.get('retry-after')) >= 1);
    assert.equal((JSON.parse(tooStale.text) as { errors: Array<{ code: string }> }).errors[0]?.code, 'TOOMANYREQUESTS');
    assert.equal(upstream.count('HEAD', /\/manifests\/v1$/), 1, 'the revalidation was tried');
  });

  it('opens after repeated failures and answers 503 at once, then probes and recovers', async (t) => {
    const backoffMs = 3_000;
    const { upstream, mirror } = await setUp(t, { REGMIRROR_CIRCUIT_FAILURE_THRESHOLD: '2', REGMIRROR_CIRCUIT_BACKOFF_BASE: `${backoffMs}ms` });
    upstream.setMode('status-500');
    assert.equal((await get(blobUrl(mirror, upstream, 2))).status, 502);
    assert.equal((await get(blobUrl(mirror, upstream, 2))).status, 502);
    const failures = upstream.requests();
    assert.equal(failures.length, 2, 'two upstream failures');
    const openedAt = failures[1]?.at ?? 0;
    const fast = await get(blobUrl(mirror, upstream, 2));
    assert.equal(fast.status, 503);
    assert.ok(Number(fast.headers.get('retry-after')) >= 1);
    assert.equal((JSON.parse(fast.text) as { errors: Array<{ code: string }> }).errors[0]?.code, 'UNAVAILABLE');
    assert.equal(upstream.requests().length, 2, 'the 503 cost the upstream nothing');
    assert.equal((await status(mirror)).reason, 'failing');
    upstream.setMode('ok');
    await waitUntil('the circuit to let a probe through', async () => (await get(blobUrl(mirror, upstream, 2))).status === 200, 15_000);
    const probe = upstream.requests()[2];
    assert.ok(probe !== undefined && probe.at >= openedAt + backoffMs, 'the probe waited for the backoff');
    assert.equal(upstream.requests().length, 3, 'one probe, and it succeeded');
    assert.equal((await status(mirror)).circuit, 'closed');
  });
});
