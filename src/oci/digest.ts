// Content digests: the grammar of `algorithm:hex`, parsing and hashing.
// Only sha256 is stored; sha512 is recognised so a client gets UNSUPPORTED rather than DIGEST_INVALID.

import { createHash, type Hash } from 'node:crypto';

export type Digest = `sha256:${string}`;

export type DigestParse =
  | { ok: true; digest: Digest; hex: string }
  | { ok: false; reason: 'invalid' | 'unsupported' };

const DIGEST_GRAMMAR = /^[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$/;
const SHA256_HEX = /^[a-f0-9]{64}$/;
const SHA512_HEX = /^[a-f0-9]{128}$/;

export function parseDigest(text: string): DigestParse {
  if (!DIGEST_GRAMMAR.test(text)) return { ok: false, reason: 'invalid' };
  const colon = text.indexOf(':');
  const algorithm = text.slice(0, colon);
  const hex = text.slice(colon + 1);
  if (algorithm === 'sha256') {
    return SHA256_HEX.test(hex) ? { ok: true, digest: text as Digest, hex } : { ok: false, reason: 'invalid' };
  }
  if (algorithm === 'sha512') {
    return SHA512_HEX.test(hex) ? { ok: false, reason: 'unsupported' } : { ok: false, reason: 'invalid' };
  }
  return { ok: false, reason: 'unsupported' };
}

export function isDigest(text: string): text is Digest {
  return parseDigest(text).ok;
}

export function digestHex(digest: Digest): string {
  return digest.slice('sha256:'.length);
}

export function digestOf(bytes: Uint8Array): Digest {
  return `sha256:${createHash('sha256').update(bytes).digest('hex')}`;
}

/** An incremental sha256 that also counts bytes, for content that streams. */
export class DigestWriter {
  private readonly hash: Hash = createHash('sha256');
  private count = 0;

  update(chunk: Uint8Array): void {
    this.hash.update(chunk);
    this.count += chunk.length;
  }

  get size(): number {
    return this.count;
  }

  digest(): Digest {
    return `sha256:${this.hash.digest('hex')}`;
  }
}
