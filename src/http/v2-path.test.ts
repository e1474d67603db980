// Tests for parsing /v2/ request paths from the right: routes, and the spec's error codes for bad input.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { RegistryError, type ErrorCodeName } from '../registry/errors.js';
import { parseV2Path, type V2Route } from './v2-path.js';

const HEX = 'ab'.repeat(32);
const DIGEST = `sha256:${HEX}` as const;

describe('parseV2Path: routes', () => {
  const cases: { path: string; expected: V2Route | undefined }[] = [
    { path: '/v2/', expected: { kind: 'base' } },
    { path: '/v2', expected: { kind: 'base' } },
    { path: '/v2/_catalog', expected: { kind: 'catalog' } },
    { path: '/v2/alpine/manifests/latest', expected: { kind: 'manifest', name: 'alpine', reference: { kind: 'tag', tag: 'latest' } } },
    {
      path: '/v2/library/alpine/manifests/3.19',
      expected: { kind: 'manifest', name: 'library/alpine', reference: { kind: 'tag', tag: '3.19' } },
    },
    { path: '/v2/a/b/c/manifests/latest', expected: { kind: 'manifest', name: 'a/b/c', reference: { kind: 'tag', tag: 'latest' } } },
    {
      path: `/v2/a/b/manifests/${DIGEST}`,
      expected: { kind: 'manifest', name: 'a/b', reference: { kind: 'digest', digest: DIGEST } },
    },
    {
      path: '/v2/a/manifests/manifests/latest',
      expected: { kind: 'manifest', name: 'a/manifests', reference: { kind: 'tag', tag: 'latest' } },
    },
    { path: '/v2/a/tags/list', expected: { kind: 'tags', name: 'a' } },
    { path: '/v2/library/alpine/tags/list', expected: { kind: 'tags', name: 'library/alpine' } },
    { path: '/v2/a/tags/tags/list', expected: { kind: 'tags', name: 'a/tags' } },
    { path: `/v2/a/blobs/${DIGEST}`, expected: { kind: 'blob', name: 'a', digest: DIGEST } },
    { path: `/v2/x/y/z/blobs/${DIGEST}`, expected: { kind: 'blob', name: 'x/y/z', digest: DIGEST } },
    { path: '/v2/a/blobs/uploads/', expected: { kind: 'upload', name: 'a', session: undefined } },
    { path: '/v2/a/blobs/uploads', expected: { kind: 'upload', name: 'a', session: undefined } },
    { path: '/v2/a/blobs/uploads/6d8a4e2c-3f1b-4c59-9a57-0a1b2c3d4e5f', expected: { kind: 'upload', name: 'a', session: '6d8a4e2c-3f1b-4c59-9a57-0a1b2c3d4e5f' } },
    { path: '/v2/org/app/blobs/uploads/uuid', expected: { kind: 'upload', name: 'org/app', session: 'uuid' } },
    { path: `/v2/a/referrers/${DIGEST}`, expected: { kind: 'referrers', name: 'a', digest: DIGEST } },
    { path: `/v2/a/b/referrers/${DIGEST}`, expected: { kind: 'referrers', name: 'a/b', digest: DIGEST } },
  ];
  for (const { path, expected } of cases) {
    it(`${path} → ${expected?.kind ?? 'undefined'}`, () => {
      assert.deepEqual(parseV2Path(path), expected);
    });
  }
});

describe('parseV2Path: shapes it does not know', () => {
  const unknown = [
    '/',
    '',
    '/v1/_ping',
    '/v2x',
    '/v2_catalog',
    '/v3/a/manifests/latest',
    '/v2/a',
    '/v2/a/b',
    '/v2/manifests/latest',
    '/v2/a/tags',
    '/v2/a/tags/lists',
    '/v2/a/list',
    '/v2/a/unknown/thing',
    '/v2/a/blobs/uploads/uuid/extra',
    '/v2/blobs/uploads/',
    '/v2/_catalog/',
  ];
  for (const path of unknown) {
    it(`${JSON.stringify(path)} → undefined`, () => {
      assert.equal(parseV2Path(path), undefined);
    });
  }
});

describe('parseV2Path: invalid input', () => {
  const cases: { name: string; path: string; code: ErrorCodeName; status: number; message?: string }[] = [
    { name: 'capitals in the name', path: '/v2/Library/alpine/manifests/latest', code: 'NAME_INVALID', status: 400 },
    { name: 'capitals in a blob name', path: `/v2/A/blobs/${DIGEST}`, code: 'NAME_INVALID', status: 400 },
    { name: 'a dot-dot component', path: '/v2/a/../b/manifests/latest', code: 'NAME_INVALID', status: 400 },
    { name: 'a dot-dot name', path: '/v2/../manifests/latest', code: 'NAME_INVALID', status: 400 },
    { name: 'a percent-encoded dot-dot', path: '/v2/%2e%2e/manifests/latest', code: 'NAME_INVALID', status: 400 },
    { name: 'a percent-encoded slash', path: '/v2/a%2fb/tags/list', code: 'NAME_INVALID', status: 400 },
    { name: 'an empty component', path: '/v2/a//b/tags/list', code: 'NAME_INVALID', status: 400 },
    { name: 'an empty name', path: '/v2//manifests/latest', code: 'NAME_INVALID', status: 400 },
    { name: 'a 300-character name', path: `/v2/${'a'.repeat(300)}/manifests/latest`, code: 'NAME_INVALID', status: 400 },
    { name: 'a 256-character name of short components', path: `/v2/${'ab/'.repeat(85)}a/tags/list`, code: 'NAME_INVALID', status: 400 },
    { name: 'a bad name on an upload', path: '/v2/A/blobs/uploads/', code: 'NAME_INVALID', status: 400 },
    { name: 'a bad name on referrers', path: `/v2/a_/referrers/${DIGEST}`, code: 'NAME_INVALID', status: 400 },
    { name: 'a tag starting with a dot', path: '/v2/a/manifests/.latest', code: 'MANIFEST_UNKNOWN', status: 404 },
    { name: 'a tag starting with a dash', path: '/v2/a/manifests/-latest', code: 'MANIFEST_UNKNOWN', status: 404 },
    { name: 'a 129-character tag', path: `/v2/a/manifests/${'t'.repeat(129)}`, code: 'MANIFEST_UNKNOWN', status: 404 },
    { name: 'an empty reference', path: '/v2/a/manifests/', code: 'MANIFEST_UNKNOWN', status: 404 },
    { name: 'a percent-encoded tag', path: '/v2/a/manifests/%2e%2e', code: 'MANIFEST_UNKNOWN', status: 404 },
    { name: 'a bad manifest digest', path: '/v2/a/manifests/sha256:abc', code: 'DIGEST_INVALID', status: 400, message: 'invalid digest' },
    {
      name: 'an unsupported manifest digest algorithm',
      path: `/v2/a/manifests/md5:${'a'.repeat(32)}`,
      code: 'DIGEST_INVALID',
      status: 400,
      message: 'unsupported digest algorithm',
    },
    {
      name: 'an uppercase-hex blob digest',
      path: `/v2/a/blobs/sha256:${HEX.toUpperCase()}`,
      code: 'DIGEST_INVALID',
      status: 400,
      message: 'invalid digest',
    },
    { name: 'a short-hex blob digest', path: `/v2/a/blobs/sha256:${HEX.slice(2)}`, code: 'DIGEST_INVALID', status: 400, message: 'invalid digest' },
    { name: 'a blob "digest" without an algorithm', path: `/v2/a/blobs/${HEX}`, code: 'DIGEST_INVALID', status: 400, message: 'invalid digest' },
    {
      name: 'a sha512 blob digest',
      path: `/v2/a/blobs/sha512:${HEX}${HEX}`,
      code: 'DIGEST_INVALID',
      status: 400,
      message: 'unsupported digest algorithm',
    },
    { name: 'a bad referrers digest', path: '/v2/a/referrers/latest', code: 'DIGEST_INVALID', status: 400, message: 'invalid digest' },
  ];
  for (const { name, path, code, status, message } of cases) {
    it(`${name} → ${code}`, () => {
      assert.throws(
        () => parseV2Path(path),
        (error: unknown) => {
          assert.ok(error instanceof RegistryError, `expected a RegistryError, got ${String(error)}`);
          assert.equal(error.code, code);
          assert.equal(error.status, status);
          if (message !== undefined) assert.equal(error.message, message);
          return true;
        },
      );
    });
  }

  it('refuses a push to a tag that fails the grammar as TAG_INVALID (400), a delete of one as unknown (404)', () => {
    for (const [method, code, status] of [
      ['PUT', 'TAG_INVALID', 400],
      ['DELETE', 'MANIFEST_UNKNOWN', 404],
      ['HEAD', 'MANIFEST_UNKNOWN', 404],
    ] as const) {
      assert.throws(
        () => parseV2Path('/v2/a/manifests/.INVALID_MANIFEST_NAME', method),
        (error: unknown) => error instanceof RegistryError && error.code === code && error.status === status,
        method,
      );
    }
  });

  it('keeps the echoed name short in the detail', () => {
    try {
      parseV2Path(`/v2/${'A'.repeat(250)}/manifests/latest`);
      assert.fail('expected NAME_INVALID');
    } catch (error) {
      assert.ok(error instanceof RegistryError);
      assert.equal(error.code, 'NAME_INVALID');
      assert.ok(JSON.stringify(error.detail).length < 400);
    }
  });

  it('accepts a grammatical 255-character name', () => {
    const name = `${'ab/'.repeat(84)}abc`;
    assert.equal(name.length, 255);
    assert.deepEqual(parseV2Path(`/v2/${name}/tags/list`), { kind: 'tags', name });
  });
});
