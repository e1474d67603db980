// Manifest media types, Accept negotiation and the few facts the mirror reads from a manifest:
// its media type, its children (for indexes), what it references (the content graph) with the sizes of its
// blobs, and which child serves linux/amd64.

import { isDigest, type Digest } from './digest.js';

export const MediaType = {
  ociManifest: 'application/vnd.oci.image.manifest.v1+json',
  ociIndex: 'application/vnd.oci.image.index.v1+json',
  dockerManifest: 'application/vnd.docker.distribution.manifest.v2+json',
  dockerManifestList: 'application/vnd.docker.distribution.manifest.list.v2+json',
} as const;

/** Every manifest type the mirror stores; sent upstream as Accept so it resolves a tag as the upstream has it. */
export const MANIFEST_MEDIA_TYPES: readonly string[] = [
  MediaType.ociIndex,
  MediaType.dockerManifestList,
  MediaType.ociManifest,
  MediaType.dockerManifest,
];

export const UPSTREAM_MANIFEST_ACCEPT = MANIFEST_MEDIA_TYPES.join(', ');

/** Largest manifest accepted, as distribution (4 MiB). */
export const MAX_MANIFEST_BYTES = 4 * 1024 * 1024;

export function isIndexMediaType(mediaType: string): boolean {
  return mediaType === MediaType.ociIndex || mediaType === MediaType.dockerManifestList;
}

export interface Platform {
  os?: string;
  architecture?: string;
  variant?: string;
}

export interface ChildManifest {
  digest: Digest;
  mediaType: string;
  size: number;
  platform?: Platform;
}

/** How a manifest refers to content: its config and layers, an index's child manifests, or its subject. */
export type ReferenceRole = 'config' | 'layer' | 'manifest' | 'subject';

export interface ContentReference {
  digest: Digest;
  role: ReferenceRole;
}

/** A blob an image manifest lists, with the size it declares (undefined when it declares none), for a client fetching it. */
export interface BlobDescriptor {
  digest: Digest;
  role: 'config' | 'layer';
  size: number | undefined;
}

export type ManifestParse =
  | { ok: true; mediaType: string; children: ChildManifest[]; references: ContentReference[]; blobs: BlobDescriptor[] }
  | { ok: false; reason: string };

/**
 * Reads a manifest's media type: its `mediaType` field if present, else the Content-Type it came with
 * (OCI manifests may omit the field). Children are read only from indexes.
 */
export function parseManifest(bytes: Uint8Array, contentType: string | undefined): ManifestParse {
  let document: unknown;
  try {
    document = JSON.parse(Buffer.from(bytes).toString('utf8'));
  } catch {
    return { ok: false, reason: 'manifest is not valid JSON' };
  }
  if (typeof document !== 'object' || document === null || Array.isArray(document)) {
    return { ok: false, reason: 'manifest is not a JSON object' };
  }
  const fields = document as Record<string, unknown>;
  const declared = typeof fields.mediaType === 'string' ? fields.mediaType : undefined;
  const headerType = contentType?.split(';')[0]?.trim();
  const mediaType = declared ?? (headerType && MANIFEST_MEDIA_TYPES.includes(headerType) ? headerType : inferMediaType(fields));
  if (mediaType === undefined || !MANIFEST_MEDIA_TYPES.includes(mediaType)) {
    return { ok: false, reason: `unsupported manifest media type ${mediaType ?? '(none)'}` };
  }
  const subjectReferences: ContentReference[] = [];
  if (fields.subject !== undefined) {
    const subject = digestOfDescriptor(fields.subject);
    if (subject === undefined) return { ok: false, reason: 'manifest has a malformed subject' };
    subjectReferences.push({ digest: subject, role: 'subject' });
  }
  if (!isIndexMediaType(mediaType)) {
    const config = fields.config === undefined ? undefined : digestOfDescriptor(fields.config);
    if (fields.config !== undefined && config === undefined) return { ok: false, reason: 'manifest has a malformed config descriptor' };
    const layers = fields.layers === undefined ? [] : Array.isArray(fields.layers) ? fields.layers.map(digestOfDescriptor) : [undefined];
    if (layers.some((layer) => layer === undefined)) return { ok: false, reason: 'manifest has a malformed layer descriptor' };
    const layerEntries = Array.isArray(fields.layers) ? (fields.layers as unknown[]) : [];
    const blobs: BlobDescriptor[] = [
      ...(config === undefined ? [] : [{ digest: config, role: 'config' as const, size: sizeOfDescriptor(fields.config) }]),
      ...layers.flatMap((digest, index) => (digest === undefined ? [] : [{ digest, role: 'layer' as const, size: sizeOfDescriptor(layerEntries[index]) }])),
    ];
    const references: ContentReference[] = [...blobs.map(({ digest, role }) => ({ digest, role })), ...subjectReferences];
    return { ok: true, mediaType, children: [], references, blobs };
  }
  if (!Array.isArray(fields.manifests)) return { ok: false, reason: 'index has no manifests array' };
  const children: ChildManifest[] = [];
  for (const entry of fields.manifests as unknown[]) {
    const child = readDescriptor(entry);
    if (!child) return { ok: false, reason: 'index has a malformed descriptor' };
    children.push(child);
  }
  const references = [...children.map((child) => ({ digest: child.digest, role: 'manifest' as const })), ...subjectReferences];
  return { ok: true, mediaType, children, references, blobs: [] };
}

/** The digest of a descriptor (an object with a valid `digest`), or undefined. */
function digestOfDescriptor(entry: unknown): Digest | undefined {
  if (typeof entry !== 'object' || entry === null) return undefined;
  const { digest } = entry as Record<string, unknown>;
  return typeof digest === 'string' && isDigest(digest) ? digest : undefined;
}

function sizeOfDescriptor(entry: unknown): number | undefined {
  if (typeof entry !== 'object' || entry === null) return undefined;
  const { size } = entry as Record<string, unknown>;
  return typeof size === 'number' && Number.isSafeInteger(size) && size >= 0 ? size : undefined;
}

function inferMediaType(fields: Record<string, unknown>): string | undefined {
  if (Array.isArray(fields.manifests)) return MediaType.ociIndex;
  if (typeof fields.config === 'object' && Array.isArray(fields.layers)) return MediaType.ociManifest;
  return undefined;
}

function readDescriptor(entry: unknown): ChildManifest | undefined {
  if (typeof entry !== 'object' || entry === null) return undefined;
  const { digest, mediaType, size, platform } = entry as Record<string, unknown>;
  if (typeof digest !== 'string' || !isDigest(digest) || typeof mediaType !== 'string' || typeof size !== 'number') {
    return undefined;
  }
  const child: ChildManifest = { digest, mediaType, size };
  if (typeof platform === 'object' && platform !== null) child.platform = platform;
  return child;
}

/** What a client's Accept header allows: types and `type/*` ranges it names, those it refuses (`q=0`), or anything. */
export interface AcceptedTypes {
  named: ReadonlySet<string>;
  refused: ReadonlySet<string>;
  /** `*` / `*` with a weight above 0. */
  anything: boolean;
}

/** Reads a client's Accept header(s); `undefined` when there is none (anything goes). */
export function acceptedMediaTypes(accept: string | string[] | undefined): AcceptedTypes | undefined {
  if (accept === undefined) return undefined;
  const entries = (Array.isArray(accept) ? accept : [accept]).flatMap((header) => header.split(',')).filter((entry) => entry.trim() !== '');
  if (entries.length === 0) return undefined;
  const named = new Set<string>();
  const refused = new Set<string>();
  for (const entry of entries) {
    const [type = '', ...params] = entry.split(';');
    const mediaType = type.trim().toLowerCase();
    if (mediaType === '') continue;
    // `q=0` means "not this one" (RFC 9110 §12.4.2); other weights do not matter: the upstream's own type is served when accepted.
    const zeroWeight = params.some((param) => /^\s*q\s*=\s*0(\.0*)?\s*$/i.test(param));
    (zeroWeight ? refused : named).add(mediaType);
  }
  return { named, refused, anything: named.has('*/*') };
}

/** Whether a media type is accepted; the most specific entry decides (a type over its `type/*` range over `*` / `*`). */
export function accepts(accepted: AcceptedTypes | undefined, mediaType: string): boolean {
  if (accepted === undefined) return true;
  if (accepted.refused.has(mediaType)) return false;
  if (accepted.named.has(mediaType)) return true;
  const slash = mediaType.indexOf('/');
  const range = slash > 0 ? `${mediaType.slice(0, slash)}/*` : undefined;
  if (range !== undefined && accepted.refused.has(range)) return false;
  if (range !== undefined && accepted.named.has(range)) return true;
  return accepted.anything;
}

/** The child distribution serves to a client that cannot read indexes: linux/amd64. */
export function defaultPlatformChild(children: readonly ChildManifest[]): ChildManifest | undefined {
  return children.find((child) => child.platform?.os === 'linux' && child.platform.architecture === 'amd64');
}
