// The one place that names storage keys: content by digest, spread over 256 folders.
// No other code builds a storage key or path by hand.

import { digestHex, type Digest } from '../oci/digest.js';

export function contentKey(digest: Digest): string {
  const hex = digestHex(digest);
  return `blobs/sha256/${hex.slice(0, 2)}/${hex}`;
}

/** Folder of temporaries, on the same filesystem as content so commit is a rename. */
export const TEMPORARY_FOLDER = 'tmp';
