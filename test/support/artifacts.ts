// Artifacts that refer to an image (signatures, SBOMs: OCI manifests with a `subject` and an `artifactType`), pushed
// to a registry with plain HTTP as oras and cosign do, and the referrers tag (`sha256-<hex>`) index they maintain
// where the registry has no referrers API (distribution 2.8.2).

import { createHash } from 'node:crypto';

export const EMPTY_CONFIG = { mediaType: 'application/vnd.oci.empty.v1+json', bytes: Buffer.from('{}') };
const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';
const OCI_INDEX = 'application/vnd.oci.image.index.v1+json';

export interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  artifactType?: string;
  annotations?: Record<string, string>;
}

export interface ArtifactSpec {
  artifactType: string;
  /** The artifact's one layer (a signature, an SBOM document). */
  payload: Buffer;
  payloadType: string;
  annotations?: Record<string, string>;
}

export interface PushedArtifact {
  /** As a referrers list names it: media type, digest, size, artifactType, annotations. */
  descriptor: Descriptor;
  manifestBytes: Buffer;
  /** The config's and the layer's digest and bytes. */
  blobs: Array<{ digest: string; bytes: Buffer }>;
}

export function sha256(bytes: Buffer): string {
  return `sha256:${createHash('sha256').update(bytes).digest('hex')}`;
}

/** The referrers tag of a sha256 digest. */
export function referrersTagOf(digest: string): string {
  return digest.replace(':', '-');
}

async function expectStatus(response: Response, status: number, what: string): Promise<void> {
  if (response.status !== status) throw new Error(`${what}: ${response.status} ${await response.text()}`);
}

/** A monolithic upload: POST for a session, then PUT with the digest. */
export async function pushBlob(registry: string, repository: string, bytes: Buffer): Promise<string> {
  const digest = sha256(bytes);
  const started = await fetch(`${registry}/v2/${repository}/blobs/uploads/`, { method: 'POST' });
  await expectStatus(started, 202, `POST upload of ${digest}`);
  const location = new URL(started.headers.get('location') ?? '', registry);
  location.searchParams.set('digest', digest);
  const put = await fetch(location, { method: 'PUT', headers: { 'content-type': 'application/octet-stream' }, body: bytes });
  await expectStatus(put, 201, `PUT upload of ${digest}`);
  return digest;
}

export async function pushManifest(registry: string, repository: string, reference: string, mediaType: string, bytes: Buffer): Promise<string> {
  const response = await fetch(`${registry}/v2/${repository}/manifests/${reference}`, { method: 'PUT', headers: { 'content-type': mediaType }, body: bytes });
  await expectStatus(response, 201, `PUT manifest ${repository}:${reference}`);
  return sha256(bytes);
}

/** Pushes an artifact whose subject is the given manifest, by digest (referrers are not tagged). */
export async function pushArtifact(registry: string, repository: string, subject: Descriptor, spec: ArtifactSpec): Promise<PushedArtifact> {
  const configDigest = await pushBlob(registry, repository, EMPTY_CONFIG.bytes);
  const layerDigest = await pushBlob(registry, repository, spec.payload);
  const manifest: Record<string, unknown> = {
    schemaVersion: 2,
    mediaType: OCI_MANIFEST,
    artifactType: spec.artifactType,
    config: { mediaType: EMPTY_CONFIG.mediaType, digest: configDigest, size: EMPTY_CONFIG.bytes.length },
    layers: [{ mediaType: spec.payloadType, digest: layerDigest, size: spec.payload.length }],
    subject: { mediaType: subject.mediaType, digest: subject.digest, size: subject.size },
  };
  if (spec.annotations !== undefined) manifest.annotations = spec.annotations;
  const manifestBytes = Buffer.from(JSON.stringify(manifest));
  const digest = sha256(manifestBytes);
  await pushManifest(registry, repository, digest, OCI_MANIFEST, manifestBytes);
  const descriptor: Descriptor = { mediaType: OCI_MANIFEST, digest, size: manifestBytes.length, artifactType: spec.artifactType };
  if (spec.annotations !== undefined) descriptor.annotations = spec.annotations;
  return { descriptor, manifestBytes, blobs: [{ digest: configDigest, bytes: EMPTY_CONFIG.bytes }, { digest: layerDigest, bytes: spec.payload }] };
}

/** Pushes the index of referrers to the subject's referrers tag, as clients do where the registry has no referrers API. */
export async function pushReferrersTag(registry: string, repository: string, subjectDigest: string, referrers: readonly Descriptor[]): Promise<string> {
  const index = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: OCI_INDEX, manifests: referrers }));
  return pushManifest(registry, repository, referrersTagOf(subjectDigest), OCI_INDEX, index);
}
