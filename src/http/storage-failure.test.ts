// Storage failures on the wire: a 503 in each protocol's shape, whether the store threw it or a fill failed
// because of it; never a 500, never a 502 that blames the upstream, never a file name.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { MetadataError } from '../meta/metadata-error.js';
import { FillError } from '../mirror/blob-fill.js';
import { RegistryError } from '../registry/errors.js';
import { StorageError } from '../store/storage-error.js';
import { toV1Error } from './v1-errors.js';
import { toRegistryError, wireBody } from './wire-errors.js';

const diskFull = new StorageError('write', 'blobs/sha256/ab/abcd', Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC', errno: -28 }));
const databaseFull = new MetadataError('putTag', Object.assign(new Error('database or disk is full'), { code: 'SQLITE_FULL' }));

const failures: Array<[string, unknown]> = [
  ['a StorageError', diskFull],
  ['a MetadataError', databaseFull],
  ['a fill that failed on a full disk', new FillError('the upstream transfer failed', { cause: diskFull })],
  ['a follower of that fill, told the upstream failed', new RegistryError('UPSTREAM_UNAVAILABLE', { cause: new FillError('x', { cause: databaseFull }) })],
];

describe('storage failures on the wire', () => {
  for (const [name, error] of failures) {
    it(`v2: ${name} is 503 UNAVAILABLE, saying storage and nothing of files`, () => {
      const mapped = toRegistryError(error);
      assert.ok(mapped !== undefined);
      assert.equal(mapped.status, 503);
      assert.equal(mapped.code, 'UNAVAILABLE');
      const body = JSON.parse(wireBody(mapped)) as { errors: Array<{ code: string; message: string }> };
      assert.deepEqual(body, { errors: [{ code: 'UNAVAILABLE', message: 'storage unavailable; retry later' }] });
    });

    it(`v1: ${name} is 503, in the v1 shape`, () => {
      const mapped = toV1Error(error);
      assert.ok(mapped !== undefined);
      assert.equal(mapped.status, 503);
      assert.equal(mapped.code, 'UNAVAILABLE');
      assert.equal(mapped.message, 'storage unavailable; retry later');
    });
  }

  it('leaves other failures as they were: a failed fill is the upstream, a bug is a 500', () => {
    assert.equal(toRegistryError(new FillError('cut', { cause: new Error('socket hang up') }))?.code, 'UPSTREAM_UNAVAILABLE');
    assert.equal(toV1Error(new FillError('cut'))?.code, 'SOURCE_UNAVAILABLE');
    assert.equal(toRegistryError(new TypeError('a bug')), undefined);
    assert.equal(toV1Error(new TypeError('a bug')), undefined);
  });
});
