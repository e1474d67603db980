// Tests for NotFoundCache: an upstream's 404 remembered for its TTL, nothing else remembered.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { RegistryError } from '../registry/errors.js';
import { NotFoundCache, type SharedNotFound, type SharedNotFoundAnswer } from './not-found-cache.js';

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

  it('shares answers between the caches of a cluster\'s nodes: a 404 one had is answered by the others until it expires', async () => {
    let now = 1_000;
    const table = new Map<string, SharedNotFoundAnswer>();
    // The contract cluster/cluster.ts keeps on PostgreSQL, on a Map: answers by key, read back as they were written.
    const shared: SharedNotFound = {
      recallNotFound: (key) => Promise.resolve(table.get(key)),
      rememberNotFound: (key, answer) => {
        table.set(key, JSON.parse(JSON.stringify(answer)) as SharedNotFoundAnswer);
        return Promise.resolve();
      },
    };
    const nodes = [new NotFoundCache(30_000, () => now, shared), new NotFoundCache(30_000, () => now, shared)];
    let asked = 0;
    const work = (): Promise<string> => {
      asked += 1;
      return Promise.reject(new RegistryError('MANIFEST_UNKNOWN', { message: 'no such tag', detail: { upstream: 'docker.io', tag: 'v9' } }));
    };
    await assert.rejects(nodes[0]!.guard('k', work));
    const answered = await nodes[1]!.guard('k', work).catch((error: unknown) => error);
    assert.equal(asked, 1, 'the second node did not ask');
    assert.ok(answered instanceof RegistryError);
    assert.equal(answered.code, 'MANIFEST_UNKNOWN');
    assert.equal(answered.status, 404);
    assert.equal(answered.message, 'no such tag');
    assert.deepEqual(answered.detail, { upstream: 'docker.io', tag: 'v9' });
    now += 30_001;
    await assert.rejects(nodes[1]!.guard('k', work));
    assert.equal(asked, 2, 'asked again once the shared answer expired');
    assert.equal(await nodes[0]!.guard('other', () => Promise.resolve('found')), 'found');
  });
});
