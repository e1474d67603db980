// What "verified" means for a v1 layer filled from a source: the size its image json's X-Docker-Size
// announced, and the payload checksum (sha256 of json + "\n" + layer) it recorded, whenever the source sent them.

import { FillError, type ContentCheck } from '../mirror/blob-fill.js';
import { PayloadChecksum, verifiableChecksums } from './grammar.js';

export interface LayerPromise {
  /** The image json exactly as stored: the checksum covers its bytes. */
  json: Uint8Array;
  /** X-Docker-Size from the source's image json answer. */
  size: number | undefined;
  /** X-Docker-Checksum-Payload from the same answer; tarsums cannot be checked and are ignored. */
  checksums: readonly string[];
}

export function layerCheck(promise: LayerPromise): ContentCheck {
  const checksum = new PayloadChecksum(promise.json);
  const expected = verifiableChecksums(promise.checksums);
  return {
    update: (chunk) => checksum.update(chunk),
    finish: (size) => {
      if (promise.size !== undefined && size !== promise.size) {
        throw new FillError(`source layer has ${size} bytes, not the ${promise.size} its X-Docker-Size announced`);
      }
      if (expected.length === 0) return;
      const actual = checksum.digest();
      if (!expected.includes(actual)) throw new FillError(`source layer has payload checksum ${actual}, not ${expected.join(' or ')}`);
    },
  };
}
