// Tests for exactLength: the announced bytes pass, one more or one fewer fails the stream.

import assert from 'node:assert/strict';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { describe, it } from 'node:test';
import { exactLength, LengthError } from './exact-length.js';

async function through(chunks: Buffer[], length: number): Promise<Buffer> {
  const received: Buffer[] = [];
  await pipeline(Readable.from(chunks), exactLength(length), async (source: AsyncIterable<Buffer>) => {
    for await (const chunk of source) received.push(chunk);
  });
  return Buffer.concat(received);
}

describe('exactLength', () => {
  it('passes exactly the announced bytes', async () => {
    assert.ok((await through([Buffer.from('01234'), Buffer.from('56789')], 10)).equals(Buffer.from('0123456789')));
    assert.equal((await through([], 0)).length, 0);
  });
  it('fails a body longer or shorter than announced', async () => {
    await assert.rejects(through([Buffer.from('0123456789'), Buffer.from('X')], 10), LengthError);
    await assert.rejects(through([Buffer.from('01234567890')], 10), LengthError);
    await assert.rejects(through([Buffer.from('012345678')], 10), LengthError);
  });
});
