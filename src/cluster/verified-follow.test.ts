// The follower's own check of a fill streamed from another node: whole and right, it passes every byte; the last
// chunk is held back until the end verifies; short, long or wrong, the stream fails instead of ending.

import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { PassThrough, Readable } from 'node:stream';
import { describe, it } from 'node:test';
import type { Digest } from '../oci/digest.js';
import { FollowError, rangeOfFollow, verifiedFollow } from './verified-follow.js';

const chunks = [Buffer.from('first chunk '), Buffer.from('second chunk '), Buffer.from('last chunk')];
const whole = Buffer.concat(chunks);
const digest: Digest = `sha256:${createHash('sha256').update(whole).digest('hex')}`;

async function collect(stream: Readable): Promise<{ bytes: Buffer; error: unknown }> {
  const parts: Buffer[] = [];
  try {
    for await (const part of stream) parts.push(part as Buffer);
    return { bytes: Buffer.concat(parts), error: undefined };
  } catch (error) {
    return { bytes: Buffer.concat(parts), error };
  }
}

describe('verifiedFollow', () => {
  it('passes the whole, right body, with or without a size', async () => {
    for (const size of [whole.length, undefined]) {
      const { bytes, error } = await collect(verifiedFollow(Readable.from(chunks), digest, size));
      assert.equal(error, undefined);
      assert.ok(bytes.equals(whole));
    }
  });

  it('holds back the last chunk until the source ends', async () => {
    const source = new PassThrough();
    const followed = verifiedFollow(source, digest, whole.length);
    const seen: Buffer[] = [];
    followed.on('data', (chunk: Buffer) => seen.push(chunk));
    for (const chunk of chunks) source.write(chunk);
    await new Promise((resolve) => setImmediate(resolve));
    assert.ok(Buffer.concat(seen).equals(whole.subarray(0, whole.length - (chunks[2]?.length ?? 0))), 'all but the last chunk');
    source.end();
    await new Promise((resolve) => followed.once('end', resolve));
    assert.ok(Buffer.concat(seen).equals(whole));
  });

  const bad: { name: string; parts: Buffer[]; size: number | undefined; message: RegExp }[] = [
    { name: 'a short body', parts: chunks.slice(0, 2), size: whole.length, message: /sent \d+ of \d+ bytes/ },
    { name: 'a body longer than announced', parts: [...chunks, Buffer.from('x')], size: whole.length, message: /more than the \d+ bytes/ },
    { name: 'wrong bytes of the right length', parts: [Buffer.from(whole).fill(0x41, 0, 1)], size: whole.length, message: /digest sha256:[0-9a-f]{64}, not/ },
    { name: 'a short body with no size announced', parts: chunks.slice(0, 2), size: undefined, message: /digest/ },
  ];
  for (const { name, parts, size, message } of bad) {
    it(`fails on ${name}, never passing its last chunk`, async () => {
      const { bytes, error } = await collect(verifiedFollow(Readable.from(parts), digest, size));
      assert.ok(error instanceof FollowError, String(error));
      assert.match(error.message, message);
      assert.ok(bytes.length < Buffer.concat(parts).length, 'the last chunk was held back');
    });
  }

  it('fails when the source is cut', async () => {
    const source = new PassThrough();
    const followed = verifiedFollow(source, digest, whole.length);
    const result = collect(followed);
    source.write(chunks[0]);
    source.destroy(new Error('connection reset'));
    const { error } = await result;
    assert.ok(error instanceof Error);
  });
});

describe('rangeOfFollow', () => {
  it('passes exactly the range, for every range of the body, once the body verifies', async () => {
    for (let start = 0; start < whole.length; start += 3) {
      for (const end of [start, start + 1, start + 11, whole.length - 1]) {
        if (end >= whole.length) continue;
        const { bytes, error } = await collect(rangeOfFollow(verifiedFollow(Readable.from(chunks), digest, whole.length), start, end));
        assert.equal(error, undefined);
        assert.ok(bytes.equals(whole.subarray(start, end + 1)), `${start}-${end}`);
      }
    }
  });

  it('holds back the range\'s last byte until the whole body has verified, and fails when it does not', async () => {
    const source = new PassThrough();
    const range = rangeOfFollow(verifiedFollow(source, digest, whole.length), 2, 5);
    const seen: Buffer[] = [];
    range.on('data', (chunk: Buffer) => seen.push(chunk));
    for (const chunk of chunks) source.write(chunk);
    await new Promise((resolve) => setImmediate(resolve));
    assert.equal(Buffer.concat(seen).toString(), whole.subarray(2, 5).toString(), 'all but the last byte while the body is unverified');
    source.end();
    await new Promise((resolve) => range.once('end', resolve));
    assert.equal(Buffer.concat(seen).toString(), whole.subarray(2, 6).toString());

    const wrong = [Buffer.from('first chunk '), Buffer.from('SECOND chunk '), Buffer.from('last chunk')];
    const { bytes, error } = await collect(rangeOfFollow(verifiedFollow(Readable.from(wrong), digest, whole.length), 0, 3));
    assert.ok(error instanceof FollowError);
    assert.ok(bytes.length < 4, 'never the whole range');
  });
});
