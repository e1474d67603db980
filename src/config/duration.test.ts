// Tests for configuration durations: seconds as numbers, or strings with a unit.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { parseDuration } from './duration.js';

describe('parseDuration', () => {
  const cases: { input: string | number; expected: number | undefined }[] = [
    { input: 0, expected: 0 },
    { input: 30, expected: 30_000 },
    { input: 0.5, expected: 500 },
    { input: 0.0004, expected: 0 },
    { input: -1, expected: undefined },
    { input: Number.NaN, expected: undefined },
    { input: Number.POSITIVE_INFINITY, expected: undefined },
    { input: '30', expected: 30_000 },
    { input: '1.5', expected: 1_500 },
    { input: '0', expected: 0 },
    { input: '500ms', expected: 500 },
    { input: '30s', expected: 30_000 },
    { input: '5m', expected: 300_000 },
    { input: '1.5m', expected: 90_000 },
    { input: '2h', expected: 7_200_000 },
    { input: '7d', expected: 604_800_000 },
    { input: ' 5s ', expected: 5_000 },
    { input: '', expected: undefined },
    { input: 's', expected: undefined },
    { input: 'ms', expected: undefined },
    { input: '5 s', expected: undefined },
    { input: '5S', expected: undefined },
    { input: '5x', expected: undefined },
    { input: '-5s', expected: undefined },
    { input: '+5s', expected: undefined },
    { input: '.5s', expected: undefined },
    { input: '5.s', expected: undefined },
    { input: '1h30m', expected: undefined },
    { input: '5sec', expected: undefined },
    { input: 'soon', expected: undefined },
  ];
  for (const { input, expected } of cases) {
    it(`${JSON.stringify(input) ?? String(input)} → ${String(expected)}`, () => {
      assert.equal(parseDuration(input), expected);
    });
  }
});
