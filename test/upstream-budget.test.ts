// Upstream budgets: an upstream answering 429 with Retry-After opens its circuit. Meanwhile cached tags
// are served, uncached requests fail fast with 429 and nothing reaches the upstream; when the window
// ends and the upstream recovers, traffic resumes. Repeated failures open it too (503, fast).

import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
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

describe('upstream budgets and the circuit', () => {
  let upstream: FaultUpstream;
  let mirror: Regmirror;
  const accept = 'application/vnd.oci.image.manifest.v1+json';

  before(async () => {
    upstream = await startFaultUpstream({ blobs: [deterministicBytes(50_000, 1), deterministicBytes(60_000, 2), deterministicBytes(70_000, 3)] });
    mirror = await startRegmirror({
      upstreams: [`faults.example=${upstream.url}`],
      env: {
        REGMIRROR_CACHE_TAG_FRESHNESS: '500ms',
        REGMIRROR_CACHE_MAX_STALENESS: '3s',
        REGMIRROR_CIRCUIT_FAILURE_THRESHOLD: '2',
        REGMIRROR_CIRCUIT_BACKOFF_BASE: '1s',
      },
    });
  });

  after(async () => {
    await mirror?.destroy();
    await upstream?.stop();
  });

  const manifestUrl = (): string => `${mirror.url}/v2/${upstream.repository}/manifests/v1`;
  const blobUrl = (index: number): string => `${mirror.url}/v2/${upstream.repository}/blobs/${upstream.blobDigests[index] ?? ''}`;
  const upstreamRequests = (): number => upstream.count('GET', /^\/v2\/.+/) + upstream.count('HEAD', /^\/v2\/.+/);
  const status = async (): Promise<UpstreamStatus> => {
    const body = (await (await fetch(`${mirror.url}/_regmirror/status`)).json()) as { upstreams: UpstreamStatus[] };
    return body.upstreams[0] as UpstreamStatus;
  };

  it('serves cached tags and fails uncached requests fast while rate-limited, then resumes', async () => {
    assert.equal((await fetch(manifestUrl(), { headers: { accept } })).status, 200);
    assert.equal((await fetch(blobUrl(0))).status, 200);
    upstream.setMode('status-429');
    await sleep(700);

    const stale = await fetch(manifestUrl(), { headers: { accept } });
    assert.equal(stale.status, 200, 'the cached tag is served');
    assert.equal(stale.headers.get('docker-content-digest'), upstream.manifest.digest);
    const opened = await status();
    assert.equal(opened.circuit, 'open');
    assert.equal(opened.reason, 'rate-limited');
    assert.match(opened.lastError?.message ?? '', /429/);

    const requestsWhileOpen = upstreamRequests();
    const started = Date.now();
    const cold = await fetch(blobUrl(1));
    assert.equal(cold.status, 429, 'an uncached blob fails fast');
    const retryAfter = Number(cold.headers.get('retry-after'));
    assert.ok(retryAfter >= 1 && retryAfter <= 7, `Retry-After ${retryAfter} within the upstream's 7 s`);
    const body = (await cold.json()) as { errors: Array<{ code: string }> };
    assert.equal(body.errors[0]?.code, 'TOOMANYREQUESTS');
    assert.ok(Date.now() - started < 2_000, 'no timeout was waited for');
    assert.equal((await fetch(manifestUrl(), { headers: { accept } })).status, 200, 'the tag is still served');
    assert.equal((await fetch(blobUrl(0))).status, 200, 'a cached blob is still served');
    assert.equal(upstreamRequests(), requestsWhileOpen, 'nothing reached the upstream while the circuit was open');
    await mirror.settle();
    assert.ok(mirror.lines().some((line) => line.includes('upstream circuit opened')), 'the opening is logged');
    assert.equal(await mirror.metricValue('regmirror_upstream_circuit_open', { upstream: 'faults.example' }), 1);

    await sleep(Math.max(0, started + 3_000 - Date.now()));
    const tooStale = await fetch(manifestUrl(), { headers: { accept } });
    assert.equal(tooStale.status, 429, 'past max staleness the rate limit wins');
    assert.ok(tooStale.headers.get('retry-after'));
    assert.equal(upstreamRequests(), requestsWhileOpen, 'still nothing reached the upstream');

    upstream.setMode('ok');
    await waitUntil('the Retry-After window to pass', async () => (await fetch(blobUrl(1))).status === 200, 15_000);
    assert.ok(Date.now() - started >= 5_000, 'no request went through before Retry-After passed');
    assert.equal((await status()).circuit, 'closed');
    assert.equal(await mirror.metricValue('regmirror_upstream_circuit_open', { upstream: 'faults.example' }), 0);
  });

  it('opens after repeated failures and answers 503 at once, then probes and recovers', async () => {
    upstream.setMode('status-500');
    assert.equal((await fetch(blobUrl(2))).status, 502);
    assert.equal((await fetch(blobUrl(2))).status, 502);
    const before = upstreamRequests();
    const fast = await fetch(blobUrl(2));
    assert.equal(fast.status, 503);
    assert.ok(fast.headers.get('retry-after'));
    assert.equal(((await fast.json()) as { errors: Array<{ code: string }> }).errors[0]?.code, 'UNAVAILABLE');
    assert.equal(upstreamRequests(), before);
    assert.equal((await status()).reason, 'failing');
    upstream.setMode('ok');
    await waitUntil('the circuit to let a probe through', async () => (await fetch(blobUrl(2))).status === 200, 10_000);
    assert.equal((await status()).circuit, 'closed');
  });
});
