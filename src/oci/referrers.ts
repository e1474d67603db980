// The referrers list of the OCI distribution spec 1.1: the image index of descriptors of the manifests whose
// `subject` is a digest, read from bytes an upstream sent (validated field by field), filtered by artifactType,
// and the referrers tag (`sha256-<hex>`) that registries without the referrers API use instead.

import { parseDigest, digestHex, type Digest } from './digest.js';
import { MediaType } from './manifest.js';

/** One referrer, as the list names it: only these fields reach a client. */
export interface ReferrerDescriptor {
  mediaType: string;
  digest: Digest;
  size: number;
  artifactType?: string;
  annotations?: Record<string, string>;
}

export type ReferrersParse = { ok: true; referrers: ReferrerDescriptor[] } | { ok: false; reason: string };

/** RFC 6838: `type/subtype`, each a restricted-name of at most 127 characters, no parameters. */
const MEDIA_TYPE = /^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}\/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}$/;

export function isMediaType(text: string): boolean {
  return MEDIA_TYPE.test(text);
}

/**
 * The tag a referrers list is pushed to where the registry has no referrers API: the digest's algorithm, `-`, its
 * hex (the spec truncates both and replaces characters a tag cannot hold; a sha256 digest needs neither).
 */
export function referrersTag(subject: Digest): string {
  return `sha256-${digestHex(subject)}`;
}

/**
 * Reads an image index as a referrers list: an OCI index (by its `mediaType`, or by the Content-Type it came with
 * when it has none) whose every descriptor has a media type, a digest and a size, and, when present, an artifactType
 * that is a media type and annotations of strings. Descriptors of a digest algorithm the mirror does not store are
 * left out: no client could fetch them through it.
 */
export function parseReferrersIndex(bytes: Uint8Array, contentType: string | undefined): ReferrersParse {
  let document: unknown;
  try {
    document = JSON.parse(Buffer.from(bytes).toString('utf8'));
  } catch {
    return { ok: false, reason: 'not valid JSON' };
  }
  if (!isRecord(document)) return { ok: false, reason: 'not a JSON object' };
  const declared = document.mediaType;
  const headerType = contentType?.split(';')[0]?.trim().toLowerCase();
  if (declared !== undefined ? declared !== MediaType.ociIndex : headerType !== MediaType.ociIndex) {
    return { ok: false, reason: 'not an OCI image index' };
  }
  if (document.schemaVersion !== 2) return { ok: false, reason: 'schemaVersion is not 2' };
  if (!Array.isArray(document.manifests)) return { ok: false, reason: 'no manifests array' };
  const referrers: ReferrerDescriptor[] = [];
  for (const entry of document.manifests as unknown[]) {
    const read = readReferrer(entry);
    if (read === 'invalid') return { ok: false, reason: 'a malformed descriptor' };
    if (read !== 'unsupported') referrers.push(read);
  }
  return { ok: true, referrers };
}

function readReferrer(entry: unknown): ReferrerDescriptor | 'invalid' | 'unsupported' {
  if (!isRecord(entry)) return 'invalid';
  const { mediaType, digest, size, artifactType, annotations } = entry;
  if (typeof mediaType !== 'string' || !isMediaType(mediaType)) return 'invalid';
  if (typeof size !== 'number' || !Number.isSafeInteger(size) || size < 0) return 'invalid';
  if (typeof digest !== 'string') return 'invalid';
  const parsed = parseDigest(digest);
  if (!parsed.ok) return parsed.reason;
  const referrer: ReferrerDescriptor = { mediaType, digest: parsed.digest, size };
  if (artifactType !== undefined) {
    if (typeof artifactType !== 'string' || !isMediaType(artifactType)) return 'invalid';
    referrer.artifactType = artifactType;
  }
  if (annotations !== undefined) {
    if (!isRecord(annotations) || !Object.values(annotations).every((value) => typeof value === 'string')) return 'invalid';
    referrer.annotations = { ...(annotations as Record<string, string>) };
  }
  return referrer;
}

/**
 * The descriptor of a stored manifest in its subject's referrers list: its artifactType is the manifest's own, or
 * else its config's media type (the spec's rule); its annotations are copied when they are all strings.
 */
export function referrerDescriptor(manifest: { digest: Digest; mediaType: string; bytes: Uint8Array }): ReferrerDescriptor {
  const descriptor: ReferrerDescriptor = { mediaType: manifest.mediaType, digest: manifest.digest, size: manifest.bytes.length };
  let document: unknown;
  try {
    document = JSON.parse(Buffer.from(manifest.bytes).toString('utf8'));
  } catch {
    return descriptor;
  }
  if (!isRecord(document)) return descriptor;
  const { artifactType, config, annotations } = document;
  const configType = isRecord(config) ? config.mediaType : undefined;
  const type = typeof artifactType === 'string' ? artifactType : configType;
  if (typeof type === 'string' && isMediaType(type)) descriptor.artifactType = type;
  if (isRecord(annotations) && Object.values(annotations).every((value) => typeof value === 'string')) {
    descriptor.annotations = { ...(annotations as Record<string, string>) };
  }
  return descriptor;
}

/** The referrers list as served: an OCI image index of the descriptors, those of one artifactType when it is given. */
export function referrersIndex(referrers: readonly ReferrerDescriptor[], artifactType?: string): string {
  const manifests = artifactType === undefined ? referrers : referrers.filter((referrer) => referrer.artifactType === artifactType);
  return JSON.stringify({ schemaVersion: 2, mediaType: MediaType.ociIndex, manifests });
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}
