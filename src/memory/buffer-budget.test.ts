// Tests for BufferBudget: large reservations while they fit, the minimum past the limit, releases counted once.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { BufferBudget } from './buffer-budget.js';

describe('BufferBudget', () => {
  it('grants what is wanted while it fits, then the minimum, and takes releases back once', () => {
    const budget = new BufferBudget(10);
    const first = budget.reserve(6, 1);
    const second = budget.reserve(6, 1);
    assert.equal(first.bytes, 6);
    assert.equal(second.bytes, 1, 'past the limit: the minimum');
    assert.equal(budget.used, 7);
    const third = budget.reserve(3, 1);
    assert.equal(third.bytes, 3, 'what still fits is granted');
    first.release();
    first.release();
    assert.equal(budget.used, 4);
    assert.equal(budget.reserve(6, 1).bytes, 6);
    second.release();
    third.release();
    assert.equal(budget.used, 6);
  });

  it('never grants more than wanted, even as a minimum', () => {
    const budget = new BufferBudget(0);
    assert.equal(budget.reserve(100, 1000).bytes, 100);
  });
});
