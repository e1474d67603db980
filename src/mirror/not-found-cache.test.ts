// Tests for NotFoundCache: an upstream's 404 remembered for its TTL, nothing else remembered.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { RegistryError } from '../registry/errors.js';
import { NotFoundCache } from './not-found-cache.js';

const upstream404 = (): RegistryError => new RegistryError('MANIFEST_UNKNOWN', { detail: { upstream: 'docker.io' } });

describe('NotFoundCache', () => {
  it('answers a remembered 404 without asking again until the TTL passes', async () => {
    let now = 1_000;
    const cache = new NotFoundCache(30_000, () => now);
    let asked = 0;
    const work = (): Promise<string> => {
      asked += 1;
      return Promise.reject(upstream404());
    };
    for (let attempt = 0; attempt < 5; attempt++) await assert.rejects(cache.guard('k', work), (error: unknown) => error instanceof RegistryError && error.code === 'MANIFEST_UNKNOWN');
    assert.equal(asked, 1);
    now += 30_001;
    await assert.rejects(cache.guard('k', work));
    assert.equal(asked, 2, 'asked again once the TTL passed');
  });

  it('remembers only the upstream\'s own 404s, and nothing with a TTL of 0', async () => {
    const cache = new NotFoundCache(30_000);
    let asked = 0;
    const failing = (error: Error) => (): Promise<never> => {
      asked += 1;
      return Promise.reject(error);
    };
    for (const error of [new RegistryError('UPSTREAM_UNAVAILABLE'), new RegistryError('MANIFEST_UNKNOWN'), new Error('bug')]) {
      asked = 0;
      await assert.rejects(cache.guard(error.message, failing(error)));
      await assert.rejects(cache.guard(error.message, failing(error)));
      assert.equal(asked, 2, `${error.message} is not remembered`);
    }
    const off = new NotFoundCache(0);
    asked = 0;
    await assert.rejects(off.guard('k', failing(upstream404())));
    await assert.rejects(off.guard('k', failing(upstream404())));
    assert.equal(asked, 2);
    assert.equal(await cache.guard('ok', () => Promise.resolve('found')), 'found');
  });
});
