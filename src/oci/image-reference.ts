// Image references as people write them: [REGISTRY/]NAME[:TAG][@DIGEST], read with the name, tag and digest
// grammars of name.ts and digest.ts. A pure function: what a reference means (which upstream) is the mirror's to say.

import { parseDigest, type Digest } from './digest.js';
import { isValidRepositoryName, isValidTag, MAX_NAME_LENGTH } from './name.js';

export interface ImageReference {
  /** The repository as written, any registry prefix included (`docker.io/library/alpine`): the mirror routes by it. */
  name: string;
  /** The tag as written; `latest` when neither a tag nor a digest was given, as docker and skopeo read it. */
  tag: string | undefined;
  /** When given, the image is this digest (a tag beside it is only a label). */
  digest: Digest | undefined;
}

export type ImageReferenceParse = { ok: true; reference: ImageReference } | { ok: false; reason: string };

export const DEFAULT_TAG = 'latest';

export function parseImageReference(text: string): ImageReferenceParse {
  if (text === '') return { ok: false, reason: 'empty reference' };
  let rest = text;
  let digest: Digest | undefined;
  const at = rest.lastIndexOf('@');
  if (at !== -1) {
    const parsed = parseDigest(rest.slice(at + 1));
    if (!parsed.ok) {
      return { ok: false, reason: parsed.reason === 'unsupported' ? 'unsupported digest algorithm (only sha256)' : 'invalid digest' };
    }
    digest = parsed.digest;
    rest = rest.slice(0, at);
  }
  let tag: string | undefined;
  // A colon after the last slash starts the tag; one before it belongs to a registry's port.
  const colon = rest.lastIndexOf(':');
  if (colon > rest.lastIndexOf('/')) {
    tag = rest.slice(colon + 1);
    if (!isValidTag(tag)) return { ok: false, reason: 'invalid tag' };
    rest = rest.slice(0, colon);
  }
  const name = rest;
  if (name === '') return { ok: false, reason: 'no repository name' };
  const first = name.split('/', 1)[0] ?? '';
  if (name.includes('/') && first.includes(':')) {
    return { ok: false, reason: `a registry with a port (${first}) cannot be named in a repository path; give it a registry name or alias in the mirror's configuration` };
  }
  if (name.length > MAX_NAME_LENGTH) return { ok: false, reason: `repository name longer than ${MAX_NAME_LENGTH} characters` };
  if (!isValidRepositoryName(name)) return { ok: false, reason: 'invalid repository name (lower-case letters, digits and separators . _ __ - between /-separated components)' };
  return { ok: true, reference: { name, tag: tag ?? (digest === undefined ? DEFAULT_TAG : undefined), digest } };
}

/** What the manifests endpoint is asked for: the digest when there is one, else the tag. */
export function manifestReference(reference: ImageReference): string {
  return reference.digest ?? reference.tag ?? DEFAULT_TAG;
}
