// Tests for the single-range Range grammar resolved against a known size, and Content-Range formatting.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { contentRange, parseRangeSpec, resolveRange, unsatisfiedRange, type RangeRequest } from './range.js';

const NONE: RangeRequest = { kind: 'none' };
const UNSATISFIABLE: RangeRequest = { kind: 'unsatisfiable' };
const range = (start: number, end: number): RangeRequest => ({ kind: 'range', start, end });

describe('resolveRange against size 100', () => {
  const cases: { header: string | undefined; expected: RangeRequest }[] = [
    { header: undefined, expected: NONE },
    { header: '', expected: NONE },
    { header: 'bytes=0-9', expected: range(0, 9) },
    { header: 'bytes=0-0', expected: range(0, 0) },
    { header: 'bytes=0-99', expected: range(0, 99) },
    { header: 'bytes=0-', expected: range(0, 99) },
    { header: 'bytes=10-', expected: range(10, 99) },
    { header: 'bytes=99-', expected: range(99, 99) },
    { header: 'bytes=99-99', expected: range(99, 99) },
    { header: 'bytes=-10', expected: range(90, 99) },
    { header: 'bytes=-1', expected: range(99, 99) },
    { header: 'bytes=-100', expected: range(0, 99) },
    { header: 'bytes=-1000', expected: range(0, 99) },
    { header: 'bytes=90-200', expected: range(90, 99) },
    // Positions beyond Number.MAX_SAFE_INTEGER are ignored (a 200), which HTTP allows.
    { header: 'bytes=0-99999999999999999999', expected: NONE },
    { header: 'bytes=99999999999999999999-', expected: NONE },
    { header: ' bytes=5-6 ', expected: range(5, 6) },
    { header: 'bytes=100-', expected: UNSATISFIABLE },
    { header: 'bytes=100-200', expected: UNSATISFIABLE },
    { header: 'bytes=150-160', expected: UNSATISFIABLE },
    { header: 'bytes=-0', expected: UNSATISFIABLE },
    { header: 'bytes=9-0', expected: NONE },
    { header: 'bytes=0-1,5-6', expected: NONE },
    { header: 'bytes=0-1, 5-6', expected: NONE },
    { header: 'items=0-1', expected: NONE },
    { header: 'Bytes=0-1', expected: NONE },
    { header: 'bytes=', expected: NONE },
    { header: 'bytes=-', expected: NONE },
    { header: 'bytes=a-b', expected: NONE },
    { header: 'bytes=1-2-3', expected: NONE },
    { header: 'bytes=--1', expected: NONE },
    { header: 'bytes=+1-2', expected: NONE },
    { header: 'bytes=1.5-2', expected: NONE },
    { header: 'bytes = 0-1', expected: NONE },
    { header: 'garbage', expected: NONE },
  ];
  for (const { header, expected } of cases) {
    it(`${JSON.stringify(header)} → ${JSON.stringify(expected)}`, () => {
      assert.deepEqual(resolveRange(header, 100), expected);
    });
  }
});

describe('resolveRange against size 0', () => {
  const unsatisfiable = ['bytes=0-', 'bytes=0-0', 'bytes=0-9', 'bytes=-1', 'bytes=-10', 'bytes=-0', 'bytes=5-'];
  for (const header of unsatisfiable) {
    it(`${header} is unsatisfiable`, () => {
      assert.deepEqual(resolveRange(header, 0), UNSATISFIABLE);
    });
  }
  const ignored = [undefined, 'bytes=9-0', 'bytes=0-1,2-3', 'items=0-1', 'garbage'];
  for (const header of ignored) {
    it(`${JSON.stringify(header)} is ignored`, () => {
      assert.deepEqual(resolveRange(header, 0), NONE);
    });
  }
});

describe('resolveRange against size 1', () => {
  const cases: { header: string; expected: RangeRequest }[] = [
    { header: 'bytes=0-', expected: range(0, 0) },
    { header: 'bytes=0-5', expected: range(0, 0) },
    { header: 'bytes=-5', expected: range(0, 0) },
    { header: 'bytes=1-', expected: UNSATISFIABLE },
  ];
  for (const { header, expected } of cases) {
    it(`${header} → ${JSON.stringify(expected)}`, () => {
      assert.deepEqual(resolveRange(header, 1), expected);
    });
  }
});

describe('parseRangeSpec (size not known yet)', () => {
  const cases: { header: string | undefined; expected: ReturnType<typeof parseRangeSpec> }[] = [
    { header: undefined, expected: undefined },
    { header: 'bytes=0-9', expected: { start: 0, end: 9 } },
    { header: 'bytes=10-', expected: { start: 10, end: undefined } },
    { header: 'bytes=-10', expected: { suffix: 10 } },
    { header: 'bytes=9-0', expected: undefined },
    { header: 'bytes=0-1,5-6', expected: undefined },
    { header: 'items=0-1', expected: undefined },
  ];
  for (const { header, expected } of cases) {
    it(`${JSON.stringify(header)} → ${JSON.stringify(expected)}`, () => {
      assert.deepEqual(parseRangeSpec(header), expected);
    });
  }
});

describe('contentRange and unsatisfiedRange', () => {
  it('formats a satisfied range with the total size', () => {
    assert.equal(contentRange(0, 9, 100), 'bytes 0-9/100');
    assert.equal(contentRange(99, 99, 100), 'bytes 99-99/100');
  });
  it('formats a range of unknown total', () => {
    assert.equal(contentRange(10, 19, '*'), 'bytes 10-19/*');
  });
  it('formats an unsatisfied range', () => {
    assert.equal(unsatisfiedRange(100), 'bytes */100');
    assert.equal(unsatisfiedRange(0), 'bytes */0');
  });
  it('round-trips resolveRange into a Content-Range', () => {
    const resolved = resolveRange('bytes=-10', 100);
    assert.equal(resolved.kind, 'range');
    if (resolved.kind === 'range') assert.equal(contentRange(resolved.start, resolved.end, 100), 'bytes 90-99/100');
  });
});
