// Parses a /v2/ request path into the resource it names, from the right (names contain slashes).
// Pure: validation failures are RegistryErrors with the spec's codes.

import { parseDigest, type Digest } from '../oci/digest.js';
import { isValidRepositoryName, isValidTag, MAX_NAME_LENGTH } from '../oci/name.js';
import { RegistryError } from '../registry/errors.js';
import type { Reference } from '../registry/content-service.js';


export type V2Route =
  | { kind: 'base' }
  | { kind: 'catalog' }
  | { kind: 'manifest'; name: string; reference: Reference }
  | { kind: 'blob'; name: string; digest: Digest }
  /** `/blobs/uploads/` (a new upload) or `/blobs/uploads/<session>` (one in progress). */
  | { kind: 'upload'; name: string; session: string | undefined }
  | { kind: 'tags'; name: string }
  | { kind: 'referrers'; name: string; digest: Digest };

/**
 * `path` is the raw request path without the query, still percent-encoded. `method` decides what a tag that fails
 * the grammar is: a manifest nobody can pull (404), or a push the spec refuses (400 TAG_INVALID).
 */
export function parseV2Path(path: string, method = 'GET'): V2Route | undefined {
  if (path === '/v2' || path === '/v2/') return { kind: 'base' };
  if (!path.startsWith('/v2/')) return undefined;
  const rest = path.slice('/v2/'.length);
  if (rest === '_catalog') return { kind: 'catalog' };
  const segments = rest.split('/');
  const count = segments.length;
  const last = segments[count - 1] ?? '';
  const beforeLast = segments[count - 2];
  if (count >= 3 && beforeLast === 'tags' && last === 'list') {
    return { kind: 'tags', name: repositoryName(segments.slice(0, -2)) };
  }
  if (count >= 3 && beforeLast === 'manifests') {
    return { kind: 'manifest', name: repositoryName(segments.slice(0, -2)), reference: parseReference(last, method) };
  }
  const uploads = segments.lastIndexOf('uploads');
  if (uploads >= 2 && segments[uploads - 1] === 'blobs' && count - uploads <= 2) {
    const session = segments[uploads + 1];
    return { kind: 'upload', name: repositoryName(segments.slice(0, uploads - 1)), session: session === undefined || session === '' ? undefined : session };
  }
  if (count >= 3 && beforeLast === 'blobs') {
    return { kind: 'blob', name: repositoryName(segments.slice(0, -2)), digest: requireDigest(last) };
  }
  if (count >= 3 && beforeLast === 'referrers') {
    return { kind: 'referrers', name: repositoryName(segments.slice(0, -2)), digest: requireDigest(last) };
  }
  return undefined;
}

function repositoryName(segments: string[]): string {
  const name = segments.join('/');
  if (name.length > MAX_NAME_LENGTH) {
    throw new RegistryError('NAME_INVALID', { detail: { reason: `longer than ${MAX_NAME_LENGTH} characters` } });
  }
  if (!isValidRepositoryName(name)) {
    throw new RegistryError('NAME_INVALID', { detail: { name: name.slice(0, 300) } });
  }
  return name;
}

/**
 * A tag that fails the grammar names no manifest: 404 MANIFEST_UNKNOWN, as the distribution spec (and its
 * conformance suite's `.INVALID_MANIFEST_NAME`) asks of a pull or a delete; a push to it is TAG_INVALID (400).
 */
function parseReference(text: string, method: string): Reference {
  if (text.includes(':')) return { kind: 'digest', digest: requireDigest(text) };
  if (!isValidTag(text)) {
    const detail = { tag: text.slice(0, 200) };
    if (method === 'PUT') throw new RegistryError('TAG_INVALID', { message: 'not a valid tag', detail });
    throw new RegistryError('MANIFEST_UNKNOWN', { message: 'manifest unknown: not a valid tag', detail });
  }
  return { kind: 'tag', tag: text };
}

function requireDigest(text: string): Digest {
  const parsed = parseDigest(text);
  if (parsed.ok) return parsed.digest;
  const message = parsed.reason === 'unsupported' ? 'unsupported digest algorithm' : 'invalid digest';
  throw new RegistryError('DIGEST_INVALID', { message, detail: { digest: text.slice(0, 200) } });
}
