// UpstreamBudget: rate-limit headers, the circuit opening on 429 / spent budget / repeated failures,
// fail-fast errors while open, one probe when the window ends, exponential backoff.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { RegistryError } from '../registry/errors.js';
import { parseRateLimitValue, parseRetryAfter, UpstreamBudget } from './upstream-budget.js';

function harness(failureThreshold = 3) {
  let now = 1_000_000;
  const events: string[] = [];
  const budget = new UpstreamBudget(
    'docker.io',
    { failureThreshold, backoffBaseMs: 1_000, backoffMaxMs: 8_000 },
    { opened: (reason, waitMs, _cause, seenHere) => events.push(`opened ${reason} ${waitMs}${seenHere ? '' : ' shared'}`), closed: () => events.push('closed') },
    () => now,
  );
  return { budget, events, advance: (ms: number) => (now += ms) };
}

function rejects(budget: UpstreamBudget, code: string, retryAfter: string): void {
  assert.throws(
    () => budget.admit(),
    (error: unknown) => error instanceof RegistryError && error.code === code && error.headers['retry-after'] === retryAfter,
  );
}

describe('parseRateLimitValue and parseRetryAfter', () => {
  it('reads both RateLimit forms', () => {
    assert.deepEqual(parseRateLimitValue('100;w=21600'), { value: 100, window: 21600 });
    assert.deepEqual(parseRateLimitValue('42'), { value: 42, window: undefined });
    assert.equal(parseRateLimitValue('lots'), undefined);
    assert.equal(parseRateLimitValue(undefined), undefined);
  });
  it('reads seconds and HTTP dates', () => {
    assert.equal(parseRetryAfter('7', 0), 7000);
    assert.equal(parseRetryAfter(new Date(10_000).toUTCString(), 4_000), 6_000);
    assert.equal(parseRetryAfter('soon', 0), undefined);
  });
});

describe('UpstreamBudget', () => {
  it('opens on 429 for Retry-After, fails fast with 429, then lets one probe through', () => {
    const { budget, events, advance } = harness();
    assert.equal(budget.admit(), 'normal');
    budget.recordResponse(429, { 'retry-after': '7' });
    assert.deepEqual(events, ['opened rate-limited 7000']);
    rejects(budget, 'TOOMANYREQUESTS', '7');
    advance(6_500);
    rejects(budget, 'TOOMANYREQUESTS', '1');
    advance(600);
    assert.equal(budget.admit(), 'probe');
    rejects(budget, 'TOOMANYREQUESTS', '1');
    budget.recordResponse(200, {});
    assert.deepEqual(events, ['opened rate-limited 7000', 'closed']);
    assert.equal(budget.admit(), 'normal');
    assert.equal(budget.snapshot().circuit, 'closed');
  });

  it('caps a Retry-After at backoffMax: one 429 cannot close an upstream for years', () => {
    for (const retryAfter of ['99999999', new Date(Date.UTC(2099, 0, 1)).toUTCString()]) {
      const { budget, events, advance } = harness();
      budget.recordResponse(429, { 'retry-after': retryAfter });
      assert.deepEqual(events, ['opened rate-limited 8000'], retryAfter);
      rejects(budget, 'TOOMANYREQUESTS', '8');
      advance(8_000);
      assert.equal(budget.admit(), 'probe', 'one probe once backoffMax has passed');
    }
  });

  it('backs off exponentially when a 429 says nothing, and after a failed probe', () => {
    const { budget, events, advance } = harness();
    budget.recordResponse(429, {});
    advance(1_000);
    assert.equal(budget.admit(), 'probe');
    budget.recordResponse(429, {});
    advance(2_000);
    assert.equal(budget.admit(), 'probe');
    budget.recordFailure(new Error('unreachable'));
    assert.deepEqual(events, ['opened rate-limited 1000', 'opened rate-limited 2000', 'opened failing 4000']);
    advance(4_000);
    assert.equal(budget.admit(), 'probe');
    budget.recordResponse(429, {});
    advance(8_000);
    assert.equal(budget.admit(), 'probe');
    budget.recordResponse(429, {});
    assert.equal(events.at(-1), 'opened rate-limited 8000', 'capped at the maximum');
  });

  it('opens after repeated failures with 503 UNAVAILABLE, and a success in between resets the count', () => {
    const { budget, events } = harness(3);
    budget.recordResponse(502, {});
    budget.recordFailure(new Error('reset'));
    budget.recordResponse(404, {});
    budget.recordResponse(500, {});
    budget.recordResponse(500, {});
    assert.deepEqual(events, []);
    budget.recordResponse(503, {});
    assert.deepEqual(events, ['opened failing 1000']);
    rejects(budget, 'UNAVAILABLE', '1');
    const snapshot = budget.snapshot();
    assert.equal(snapshot.circuit, 'open');
    assert.equal(snapshot.reason, 'failing');
    assert.equal(snapshot.lastError?.message, 'answered 503');
  });

  it('keeps the announced rate limit and opens when the budget is spent', () => {
    const { budget, events } = harness();
    budget.recordResponse(200, { 'ratelimit-limit': '100;w=21600', 'ratelimit-remaining': '1;w=21600' });
    assert.deepEqual(budget.snapshot().rateLimit, { limit: 100, remaining: 1, windowSeconds: 21600 });
    assert.deepEqual(events, []);
    budget.recordResponse(200, { 'ratelimit-limit': '100;w=21600', 'ratelimit-remaining': '0;w=21600' });
    assert.deepEqual(events, ['opened rate-limited 1000']);
    rejects(budget, 'TOOMANYREQUESTS', '1');
  });

  it('adopts an opening another node saw: fails fast until its end, then probes; never shortens its own window', () => {
    const { budget, events, advance } = harness();
    budget.adoptOpening('rate-limited', 1_000_000 + 5_000, 'answered 429');
    assert.deepEqual(events, ['opened rate-limited 5000 shared']);
    rejects(budget, 'TOOMANYREQUESTS', '5');
    assert.match(budget.snapshot().lastError?.message ?? '', /seen by another node/);
    budget.adoptOpening('rate-limited', 1_000_000 + 2_000, 'answered 429');
    assert.equal(budget.snapshot().openUntil, 1_005_000, 'a shorter window changes nothing');
    budget.adoptOpening('failing', 1_000_000 - 1, 'old news');
    assert.equal(events.length, 1, 'an opening already over is ignored');
    advance(5_000);
    assert.equal(budget.admit(), 'probe');
    budget.adoptOpening('failing', 1_005_000 + 9_000, 'answered 503');
    assert.equal(budget.snapshot().circuit, 'half-open', 'the probe in flight decides, not another node');
    budget.recordResponse(200, {});
    assert.deepEqual(events, ['opened rate-limited 5000 shared', 'closed']);
  });

  it('does not stretch the window for failures of requests already in flight when it opened', () => {
    const { budget, events } = harness(2);
    for (let i = 0; i < 30; i += 1) budget.recordFailure(new Error('timed out'));
    assert.deepEqual(events, ['opened failing 1000'], 'one opening, at the base wait');
    budget.recordResponse(429, { 'retry-after': '60' });
    assert.deepEqual(events, ['opened failing 1000']);
    rejects(budget, 'UNAVAILABLE', '1');
  });
});
