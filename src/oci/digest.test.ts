// Tests for the digest grammar (parseDigest) and the two ways of hashing content (digestOf, DigestWriter).

import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { describe, it } from 'node:test';
import { digestHex, digestOf, DigestWriter, isDigest, parseDigest, type DigestParse } from './digest.js';

const HEX64 = 'a'.repeat(32) + '0123456789abcdef'.repeat(2);
const EMPTY_SHA256 = 'sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855';

describe('parseDigest', () => {
  const cases: { name: string; input: string; expected: DigestParse }[] = [
    { name: 'valid sha256', input: `sha256:${HEX64}`, expected: { ok: true, digest: `sha256:${HEX64}`, hex: HEX64 } },
    { name: 'the empty-content digest', input: EMPTY_SHA256, expected: { ok: true, digest: EMPTY_SHA256, hex: EMPTY_SHA256.slice(7) } },
    { name: 'uppercase hex', input: `sha256:${HEX64.toUpperCase()}`, expected: { ok: false, reason: 'invalid' } },
    { name: 'one uppercase hex digit', input: `sha256:${HEX64.slice(0, 63)}F`, expected: { ok: false, reason: 'invalid' } },
    { name: 'short hex (63)', input: `sha256:${HEX64.slice(1)}`, expected: { ok: false, reason: 'invalid' } },
    { name: 'short hex (4)', input: 'sha256:abcd', expected: { ok: false, reason: 'invalid' } },
    { name: 'long hex (65)', input: `sha256:${HEX64}0`, expected: { ok: false, reason: 'invalid' } },
    { name: 'non-hex letters of the right length', input: `sha256:${'g'.repeat(64)}`, expected: { ok: false, reason: 'invalid' } },
    { name: 'md5 (well-formed, unsupported)', input: 'md5:d41d8cd98f00b204e9800998ecf8427e', expected: { ok: false, reason: 'unsupported' } },
    { name: 'sha512 with 128 hex (unsupported)', input: `sha512:${HEX64}${HEX64}`, expected: { ok: false, reason: 'unsupported' } },
    { name: 'sha512 with 64 hex (invalid)', input: `sha512:${HEX64}`, expected: { ok: false, reason: 'invalid' } },
    { name: 'sha512 with uppercase hex (invalid)', input: `sha512:${(HEX64 + HEX64).toUpperCase()}`, expected: { ok: false, reason: 'invalid' } },
    { name: 'empty', input: '', expected: { ok: false, reason: 'invalid' } },
    { name: 'missing colon', input: `sha256${HEX64}`, expected: { ok: false, reason: 'invalid' } },
    { name: 'algorithm alone', input: 'sha256:', expected: { ok: false, reason: 'invalid' } },
    { name: 'hex alone', input: `:${HEX64}`, expected: { ok: false, reason: 'invalid' } },
    { name: 'two colons', input: `sha256:${HEX64}:`, expected: { ok: false, reason: 'invalid' } },
    { name: 'uppercase algorithm', input: `SHA256:${HEX64}`, expected: { ok: false, reason: 'invalid' } },
    { name: 'whitespace around', input: ` sha256:${HEX64}`, expected: { ok: false, reason: 'invalid' } },
    { name: 'trailing newline', input: `sha256:${HEX64}\n`, expected: { ok: false, reason: 'invalid' } },
    { name: 'algorithm with + separator', input: 'multihash+base58:QmRZxt2b1FVZPNqd8hsiykDL3TdBDeTSPX9Kv46HmX4Gx8', expected: { ok: false, reason: 'unsupported' } },
    { name: 'algorithm with . separator', input: `sha256.v2:${HEX64}`, expected: { ok: false, reason: 'unsupported' } },
    { name: 'algorithm with _ and - separators', input: `a_b-c:${HEX64}`, expected: { ok: false, reason: 'unsupported' } },
    { name: 'algorithm with a leading separator', input: `+sha256:${HEX64}`, expected: { ok: false, reason: 'invalid' } },
    { name: 'algorithm with a trailing separator', input: `sha256+:${HEX64}`, expected: { ok: false, reason: 'invalid' } },
    { name: 'algorithm with doubled separators', input: `sha..256:${HEX64}`, expected: { ok: false, reason: 'invalid' } },
    { name: 'encoded part with a forbidden character', input: 'md5:abc/def', expected: { ok: false, reason: 'invalid' } },
    { name: 'percent-encoded colon', input: `sha256%3A${HEX64}`, expected: { ok: false, reason: 'invalid' } },
  ];
  for (const { name, input, expected } of cases) {
    it(name, () => {
      assert.deepEqual(parseDigest(input), expected);
      assert.equal(isDigest(input), expected.ok);
    });
  }
});

describe('digestHex', () => {
  it('drops the algorithm', () => {
    assert.equal(digestHex(`sha256:${HEX64}`), HEX64);
  });
});

describe('digestOf and DigestWriter', () => {
  const contents: { name: string; chunks: Uint8Array[] }[] = [
    { name: 'empty content', chunks: [] },
    { name: 'one empty chunk', chunks: [new Uint8Array(0)] },
    { name: 'one chunk', chunks: [Buffer.from('hello world')] },
    { name: 'several chunks', chunks: [Buffer.from('hel'), Buffer.from(''), Buffer.from('lo wor'), Buffer.from('ld')] },
    { name: 'binary content', chunks: [Uint8Array.from({ length: 70_000 }, (_, i) => (i * 31) % 256)] },
  ];
  for (const { name, chunks } of contents) {
    it(`agree on ${name} and count its bytes`, () => {
      const whole = Buffer.concat(chunks);
      const writer = new DigestWriter();
      for (const chunk of chunks) writer.update(chunk);
      assert.equal(writer.size, whole.length);
      const expected = `sha256:${createHash('sha256').update(whole).digest('hex')}`;
      assert.equal(digestOf(whole), expected);
      assert.equal(writer.digest(), expected);
      assert.ok(isDigest(expected));
    });
  }

  it('digestOf of nothing is the well-known empty digest', () => {
    assert.equal(digestOf(new Uint8Array(0)), EMPTY_SHA256);
  });

  it('DigestWriter starts at size 0', () => {
    assert.equal(new DigestWriter().size, 0);
  });
});
