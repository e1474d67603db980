// Tests for the freshness decision shared by tags and referrers lists, and for which failures stale answers cover.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { RegistryError } from '../registry/errors.js';
import { freshnessOf, isUpstreamOutage } from './freshness.js';

const settings = { tagFreshnessMs: 1_000, maxStalenessMs: 10_000 };
const NOW = 1_000_000;

describe('freshnessOf', () => {
  const cases: Array<[string, number | undefined, { fresh: boolean; staleAllowed: boolean }]> = [
    ['just fetched', NOW, { fresh: true, staleAllowed: true }],
    ['just within the freshness', NOW - 999, { fresh: true, staleAllowed: true }],
    ['as old as the freshness', NOW - 1_000, { fresh: false, staleAllowed: true }],
    ['as old as the staleness allowed', NOW - 10_000, { fresh: false, staleAllowed: true }],
    ['older than the staleness allowed', NOW - 10_001, { fresh: false, staleAllowed: false }],
    ['never fetched', undefined, { fresh: false, staleAllowed: false }],
  ];
  for (const [what, fetchedAt, expected] of cases) {
    it(what, () => assert.deepEqual(freshnessOf(settings, fetchedAt, NOW), expected));
  }
});

describe('isUpstreamOutage', () => {
  it('covers an upstream that fails, is slow, rate-limits or has its circuit open; not answers nor other errors', () => {
    for (const code of ['UPSTREAM_UNAVAILABLE', 'UPSTREAM_TIMEOUT', 'TOOMANYREQUESTS', 'UNAVAILABLE'] as const) assert.equal(isUpstreamOutage(new RegistryError(code)), true, code);
    for (const code of ['MANIFEST_UNKNOWN', 'DENIED', 'NAME_UNKNOWN'] as const) assert.equal(isUpstreamOutage(new RegistryError(code)), false, code);
    assert.equal(isUpstreamOutage(new Error('UPSTREAM_UNAVAILABLE')), false);
  });
});
