// A fill streamed from another node, checked again on this one: hashed as it passes, its last chunk held back until
// the whole body has the digest (and the announced size), and cut otherwise, so that a client never mistakes a short
// or wrong body for a whole one, whatever happens to the filling node or the network between.

import { createHash } from 'node:crypto';
import { pipeline, Transform, type Readable, type TransformCallback } from 'node:stream';
import type { Digest } from '../oci/digest.js';

export class FollowError extends Error {
  override readonly name = 'FollowError';
}

/** source's bytes as they come, less the last chunk, which is passed only once they verify; destroyed with an error otherwise. */
export function verifiedFollow(source: Readable, digest: Digest, size: number | undefined): Readable {
  const hash = createHash('sha256');
  let received = 0;
  let held: Buffer | undefined;
  const check = new Transform({
    transform(chunk: Buffer, _encoding, callback: TransformCallback) {
      received += chunk.length;
      if (size !== undefined && received > size) {
        callback(new FollowError(`the filling node sent more than the ${size} bytes it announced`));
        return;
      }
      hash.update(chunk);
      const previous = held;
      held = chunk;
      callback(null, previous);
    },
    flush(callback: TransformCallback) {
      const actual = `sha256:${hash.digest('hex')}`;
      if (size !== undefined && received !== size) callback(new FollowError(`the filling node sent ${received} of ${size} bytes`));
      else if (actual !== digest) callback(new FollowError(`the filling node sent content with digest ${actual}, not ${digest}`));
      else callback(null, held);
    },
  });
  // An error on either side destroys both: a client reading this is cut.
  pipeline(source, check, () => undefined);
  return check;
}

/**
 * Bytes start to end (inclusive) of a verified follow, as they pass, but for the last one, which is passed only once
 * the whole body has verified (the follow ended without an error): a range of a fill in progress is never complete
 * before the blob is, as on a single node. The rest of the body is read (it must be, to verify) and dropped.
 */
export function rangeOfFollow(verified: Readable, start: number, end: number): Readable {
  let offset = 0;
  let last: Buffer | undefined;
  const slice = new Transform({
    transform(chunk: Buffer, _encoding, callback: TransformCallback) {
      const from = Math.max(start, offset);
      const to = Math.min(end, offset + chunk.length - 1);
      offset += chunk.length;
      if (from > to) {
        callback();
        return;
      }
      const part = chunk.subarray(from - (offset - chunk.length), to - (offset - chunk.length) + 1);
      if (to < end) {
        callback(null, part);
        return;
      }
      // The range's last byte: held until the whole verifies.
      last = part.subarray(part.length - 1);
      callback(null, part.length > 1 ? part.subarray(0, part.length - 1) : undefined);
    },
    flush(callback: TransformCallback) {
      if (last === undefined) callback(new FollowError(`the followed body ended before byte ${end}`));
      else callback(null, last);
    },
  });
  pipeline(verified, slice, () => undefined);
  return slice;
}
