// Tests for BoundedCache: least recently used out first, bounded by size, oversized values not kept.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { BoundedCache } from './bounded-cache.js';

const cacheOf = (maxSize: number): BoundedCache<string, string> => new BoundedCache<string, string>(maxSize, (value) => value.length);

describe('BoundedCache', () => {
  it('returns what was set, and undefined for what was not', () => {
    const cache = cacheOf(10);
    cache.set('a', 'xyz');
    assert.equal(cache.get('a'), 'xyz');
    assert.equal(cache.get('b'), undefined);
    assert.equal(cache.totalSize, 3);
  });

  it('drops the least recently used entries once over its size, a get counting as a use', () => {
    const cache = cacheOf(6);
    cache.set('a', 'aa');
    cache.set('b', 'bb');
    cache.set('c', 'cc');
    assert.equal(cache.get('a'), 'aa');
    cache.set('d', 'dd');
    assert.equal(cache.get('b'), undefined, 'b was the least recently used');
    assert.deepEqual(['a', 'c', 'd'].map((key) => cache.get(key)), ['aa', 'cc', 'dd']);
    assert.equal(cache.totalSize, 6);
  });

  it('replaces a value under the same key without counting it twice', () => {
    const cache = cacheOf(6);
    cache.set('a', 'aaaa');
    cache.set('a', 'aa');
    assert.equal(cache.totalSize, 2);
    assert.equal(cache.get('a'), 'aa');
  });

  it('does not keep a value larger than the whole cache, nor evict for it', () => {
    const cache = cacheOf(4);
    cache.set('a', 'aa');
    cache.set('big', 'xxxxx');
    assert.equal(cache.get('big'), undefined);
    assert.equal(cache.get('a'), 'aa');
  });

  it('forgets a deleted key', () => {
    const cache = cacheOf(4);
    cache.set('a', 'aa');
    cache.delete('a');
    cache.delete('never-set');
    assert.equal(cache.get('a'), undefined);
    assert.equal(cache.totalSize, 0);
  });
});
