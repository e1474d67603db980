// Tests for sizes in configuration.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { formatSize, parseSize } from './size.js';

describe('parseSize', () => {
  const cases: [string | number, number | undefined][] = [
    [0, 0],
    [1024, 1024],
    ['1024', 1024],
    ['10MiB', 10 * 1024 * 1024],
    ['10 MiB', 10 * 1024 * 1024],
    ['10GiB', 10 * 1024 ** 3],
    ['1.5KiB', 1536],
    ['200gib', 200 * 1024 ** 3],
    ['5MB', 5_000_000],
    ['7b', 7],
    [-1, undefined],
    [1.5, undefined],
    ['', undefined],
    ['MiB', undefined],
    ['10XB', undefined],
    ['10 MiB extra', undefined],
    ['99999999999TiB', undefined],
  ];
  for (const [input, expected] of cases) {
    it(`${JSON.stringify(input)} → ${String(expected)}`, () => {
      assert.equal(parseSize(input), expected);
    });
  }
});

describe('formatSize', () => {
  const cases: [number, string][] = [
    [0, '0 bytes'],
    [1023, '1023 bytes'],
    [1024, '1.0 KiB'],
    [1536, '1.5 KiB'],
    [10 * 1024 * 1024, '10.0 MiB'],
    [3.25 * 1024 ** 3, '3.3 GiB'],
    [2 * 1024 ** 5, '2048.0 TiB'],
  ];
  for (const [bytes, expected] of cases) {
    it(`${bytes} → ${expected}`, () => {
      assert.equal(formatSize(bytes), expected);
    });
  }
});
