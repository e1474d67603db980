// The check a mirrored v1 layer must pass before it is committed, and what of a client's headers may reach the source.

import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { describe, it } from 'node:test';
import { FillError } from '../mirror/blob-fill.js';
import { layerCheck, type LayerPromise } from './layer-check.js';
import { forwardedHeaders } from './source-client.js';

const json = Buffer.from('{"id": "0123456789abcdef"}');
const layer = Buffer.from('the layer bytes');
const checksum = `sha256:${createHash('sha256').update(json).update('\n').update(layer).digest('hex')}`;
const other = `sha256:${'0'.repeat(64)}`;

function run(promise: LayerPromise, bytes: Buffer): Error | undefined {
  const check = layerCheck(promise);
  for (let offset = 0; offset < bytes.length; offset += 4) check.update(bytes.subarray(offset, offset + 4));
  try {
    check.finish(bytes.length);
    return undefined;
  } catch (error) {
    assert.ok(error instanceof FillError, 'a FillError, so the fill fails');
    return error;
  }
}

describe('v1 layer check', () => {
  const flipped = Buffer.from(layer);
  flipped[3] = (flipped[3] ?? 0) ^ 1;
  const cases: Array<[string, LayerPromise, Buffer, RegExp | undefined]> = [
    ['size and checksum as announced', { json, size: layer.length, checksums: [checksum] }, layer, undefined],
    ['nothing announced', { json, size: undefined, checksums: [] }, layer, undefined],
    ['one of several checksums matching', { json, size: undefined, checksums: [other, checksum] }, layer, undefined],
    ['only a tarsum, which cannot be checked', { json, size: layer.length, checksums: [`tarsum+sha256:${'1'.repeat(64)}`] }, layer, undefined],
    ['a size other than announced', { json, size: layer.length + 1, checksums: [checksum] }, layer, /X-Docker-Size/],
    ['a flipped byte', { json, size: layer.length, checksums: [checksum] }, flipped, /payload checksum/],
    ['a checksum of other json', { json: Buffer.from('{}'), size: undefined, checksums: [checksum] }, layer, /payload checksum/],
    ['an empty layer where one was promised', { json, size: undefined, checksums: [checksum] }, Buffer.alloc(0), /payload checksum/],
  ];
  for (const [name, promise, bytes, failure] of cases) {
    it(`${failure === undefined ? 'passes' : 'fails'}: ${name}`, () => {
      const error = run(promise, bytes);
      if (failure === undefined) assert.equal(error, undefined);
      else assert.match(error?.message ?? '', failure);
    });
  }
});

describe('headers forwarded to a v1 source', () => {
  it('are only User-Agent and Accept: never Authorization, cookies or anything else', () => {
    assert.deepEqual(
      forwardedHeaders({
        'user-agent': 'docker/1.3.2',
        accept: '*/*',
        authorization: 'Basic Y2xpZW50OnNlY3JldA==',
        cookie: 'session=secret',
        'x-docker-token': 'true',
        'x-forwarded-for': '10.0.0.1',
        host: 'mirror',
        range: 'bytes=0-1',
      }),
      { 'user-agent': 'docker/1.3.2', accept: '*/*' },
    );
    assert.deepEqual(forwardedHeaders({}), {});
    assert.deepEqual(forwardedHeaders({ accept: ['a', 'b'] }), { accept: 'a' });
  });
});
