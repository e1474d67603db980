// An unverified body passed through from an upstream (a cold Range) must be exactly as long as announced: a
// longer one would put the upstream's extra bytes on the client's keep-alive connection as if they were the next
// response; a shorter one would look complete. Either way the stream fails, and the HTTP layer cuts the connection.

import { Transform, type TransformCallback } from 'node:stream';

export class LengthError extends Error {
  override readonly name = 'LengthError';
}

export function exactLength(length: number): Transform {
  let seen = 0;
  return new Transform({
    transform(chunk: Buffer, _encoding, callback: TransformCallback) {
      seen += chunk.length;
      if (seen > length) {
        callback(new LengthError(`the upstream sent more than the ${length} bytes it announced`));
        return;
      }
      callback(null, chunk);
    },
    flush(callback: TransformCallback) {
      callback(seen === length ? null : new LengthError(`the upstream sent ${seen} of the ${length} bytes it announced`));
    },
  });
}
