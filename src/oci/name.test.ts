// Tests for the repository name and tag grammars, and Docker Hub's library/ convention.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { dockerHubName, isDockerHub, isValidRepositoryName, isValidTag, MAX_NAME_LENGTH } from './name.js';

/** A name of exactly `length` characters that matches the grammar: components of `a` joined by `/`. */
function nameOfLength(length: number): string {
  const parts: string[] = [];
  let remaining = length;
  while (remaining > 0) {
    const component = Math.min(remaining, 50);
    parts.push('a'.repeat(component));
    remaining -= component + 1;
  }
  const name = parts.join('/');
  // Pad or trim the last component so the total is exact (never leaving a trailing slash).
  return name.length === length ? name : name + 'b'.repeat(length - name.length);
}

describe('isValidRepositoryName', () => {
  const valid = [
    'a',
    'alpine',
    'library/alpine',
    'a/b/c/d',
    'my.registry/ns',
    'a.b',
    'a_b',
    'a__b',
    'a-b',
    'a---b',
    'a-b_c.d__e',
    '0',
    '9abc/0def',
    'org/team-1/app_2.x',
  ];
  for (const name of valid) {
    it(`accepts ${name}`, () => {
      assert.equal(isValidRepositoryName(name), true);
    });
  }

  const invalid: { name: string; why: string }[] = [
    { name: '', why: 'empty' },
    { name: 'Alpine', why: 'capitals' },
    { name: 'library/Alpine', why: 'capitals in a later component' },
    { name: 'a..b', why: 'two dots' },
    { name: 'a___b', why: 'three underscores' },
    { name: 'a_.b', why: 'mixed separators' },
    { name: '..', why: 'dot-dot' },
    { name: 'a/../b', why: 'a dot-dot component' },
    { name: 'a/./b', why: 'a dot component' },
    { name: '.a', why: 'leading dot' },
    { name: 'a.', why: 'trailing dot' },
    { name: '-a', why: 'leading dash' },
    { name: 'a-', why: 'trailing dash' },
    { name: '_a', why: 'leading underscore' },
    { name: 'a_', why: 'trailing underscore' },
    { name: '/a', why: 'leading slash' },
    { name: 'a/', why: 'trailing slash' },
    { name: 'a//b', why: 'empty component' },
    { name: '%2e%2e', why: 'percent-encoded dot-dot' },
    { name: 'a%2fb', why: 'percent-encoded slash' },
    { name: 'a b', why: 'space' },
    { name: 'a:b', why: 'colon' },
    { name: 'a@b', why: 'at sign' },
    { name: 'a\\b', why: 'backslash' },
    { name: 'a\nb', why: 'newline' },
    { name: 'é', why: 'non-ASCII' },
  ];
  for (const { name, why } of invalid) {
    it(`rejects ${JSON.stringify(name)} (${why})`, () => {
      assert.equal(isValidRepositoryName(name), false);
    });
  }

  it(`accepts a grammatical name of exactly ${MAX_NAME_LENGTH} characters`, () => {
    const name = nameOfLength(MAX_NAME_LENGTH);
    assert.equal(name.length, 255);
    assert.equal(isValidRepositoryName(name), true);
  });

  it('accepts one component of 255 characters', () => {
    assert.equal(isValidRepositoryName('a'.repeat(255)), true);
  });

  it('rejects 256 characters, however grammatical', () => {
    assert.equal(isValidRepositoryName(nameOfLength(256)), false);
    assert.equal(isValidRepositoryName('a'.repeat(256)), false);
  });

  it('rejects a 255-character name that breaks the grammar', () => {
    assert.equal(isValidRepositoryName(`${'a'.repeat(253)}..`), false);
  });
});

describe('isValidTag', () => {
  const cases: { tag: string; valid: boolean }[] = [
    { tag: 'latest', valid: true },
    { tag: 'v1.2.3', valid: true },
    { tag: '3.19', valid: true },
    { tag: 'UPPER_lower-1.0', valid: true },
    { tag: '_leading_underscore', valid: true },
    { tag: 'a', valid: true },
    { tag: 'A', valid: true },
    { tag: 'x'.repeat(128), valid: true },
    { tag: 'x'.repeat(129), valid: false },
    { tag: '', valid: false },
    { tag: '.hidden', valid: false },
    { tag: '-dash', valid: false },
    { tag: 'a/b', valid: false },
    { tag: 'a:b', valid: false },
    { tag: 'sha256:abc', valid: false },
    { tag: 'a b', valid: false },
    { tag: 'a+b', valid: false },
    { tag: '%2e%2e', valid: false },
    { tag: 'latest\n', valid: false },
  ];
  for (const { tag, valid } of cases) {
    it(`${valid ? 'accepts' : 'rejects'} ${JSON.stringify(tag.length > 20 ? `${tag.slice(0, 8)}…(${tag.length})` : tag)}`, () => {
      assert.equal(isValidTag(tag), valid);
    });
  }
});

describe('dockerHubName', () => {
  const cases: { input: string; expected: string }[] = [
    { input: 'alpine', expected: 'library/alpine' },
    { input: 'library/alpine', expected: 'library/alpine' },
    { input: 'bitnami/redis', expected: 'bitnami/redis' },
    { input: 'a/b/c', expected: 'a/b/c' },
  ];
  for (const { input, expected } of cases) {
    it(`${input} → ${expected}`, () => {
      assert.equal(dockerHubName(input), expected);
    });
  }
});

describe('isDockerHub', () => {
  const cases: { registry: string; expected: boolean }[] = [
    { registry: 'docker.io', expected: true },
    { registry: 'registry-1.docker.io', expected: true },
    { registry: 'index.docker.io', expected: true },
    { registry: 'ghcr.io', expected: false },
    { registry: 'docker.io.evil.example', expected: false },
  ];
  for (const { registry, expected } of cases) {
    it(`${registry} → ${expected}`, () => {
      assert.equal(isDockerHub(registry), expected);
    });
  }
});
