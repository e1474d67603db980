// What counts as a storage failure: errors the operating system reports, not bugs.

import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { describe, it } from 'node:test';
import { asStorageError, StorageError, storageOperation, systemErrorCode } from './storage-error.js';

describe('StorageError', () => {
  it('wraps what the system refused, keeping the code, the operation, the key and the cause', async () => {
    const error = await storageOperation('read', 'blobs/none', () => readFile('/nonexistent/regmirror/file')).then(
      () => assert.fail('read a file that does not exist'),
      (caught: unknown) => caught,
    );
    assert.ok(error instanceof StorageError);
    assert.equal(error.code, 'ENOENT');
    assert.equal(error.operation, 'read');
    assert.equal(error.key, 'blobs/none');
    assert.equal(systemErrorCode(error.cause), 'ENOENT');
    assert.equal(error.message, 'storage read of blobs/none failed (ENOENT)');
  });

  it('leaves bugs alone: an error without an errno is not the storage failing', () => {
    const bug = new TypeError('undefined is not a function');
    assert.equal(asStorageError('write', 'k', bug), bug);
    const nodeArgument = Object.assign(new TypeError('bad argument'), { code: 'ERR_INVALID_ARG_TYPE' });
    assert.equal(asStorageError('write', 'k', nodeArgument), nodeArgument);
    assert.equal(asStorageError('write', 'k', 'a string'), 'a string');
  });

  it('is not wrapped twice', () => {
    const failure = new StorageError('write', 'k', Object.assign(new Error('no space'), { code: 'ENOSPC', errno: -28 }));
    assert.equal(asStorageError('commit', 'k', failure), failure);
    assert.equal(failure.code, 'ENOSPC');
  });
});
