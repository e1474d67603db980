// A LocalRegistry over a fresh data directory (the fs store and SQLite), for the tests of what is built on it.

import { randomBytes } from 'node:crypto';
import { mkdtemp } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { SqliteMetadataStore } from '../meta/sqlite-store.js';
import type { RepositoryRef } from '../meta/metadata-store.js';
import { digestOf, type Digest } from '../oci/digest.js';
import { parseManifest } from '../oci/manifest.js';
import { FsObjectStore } from '../store/fs-store.js';
import { Metrics } from '../telemetry/metrics.js';
import { LocalRegistry } from './local-registry.js';

/** A LocalRegistry over a fresh data directory, with its parts and the warnings it logged. */
export async function openRegistry(now: () => number = Date.now): Promise<{ root: string; store: FsObjectStore; meta: SqliteMetadataStore; metrics: Metrics; warnings: Array<{ fields: Record<string, unknown>; message: string }>; local: LocalRegistry }> {
  const root = await mkdtemp(path.join(os.tmpdir(), 'regmirror-local-'));
  const store = new FsObjectStore(root);
  await store.init();
  const meta = new SqliteMetadataStore(path.join(root, 'metadata.sqlite'));
  const metrics = new Metrics();
  const warnings: Array<{ fields: Record<string, unknown>; message: string }> = [];
  const local = new LocalRegistry(store, meta, { metrics, log: { warn: (fields, message) => warnings.push({ fields: fields as Record<string, unknown>, message }) } }, now);
  return { root, store, meta, metrics, warnings, local };
}


/** Stores random bytes as a blob, as a fill would; returns its digest. */
export async function cacheRandomBlob(local: LocalRegistry, size: number, holder?: RepositoryRef): Promise<{ bytes: Buffer; digest: Digest }> {
  const bytes = randomBytes(size);
  const digest = digestOf(bytes);
  const spool = await local.createBlobWriter();
  await spool.append(bytes);
  await local.commitBlob(spool, digest, size, holder);
  await spool.close();
  return { bytes, digest };
}

const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';

/**
 * An OCI image manifest over a config and the given layers (blobs already cached), stored with its place in the
 * content graph as a pull stores it; `label` makes its digest its own. Returns its digest and bytes.
 */
export async function cacheImageManifest(
  local: LocalRegistry,
  config: { digest: Digest; size: number },
  layers: ReadonlyArray<{ digest: Digest; size: number }>,
  label: string,
  holder?: RepositoryRef,
): Promise<{ digest: Digest; bytes: Buffer }> {
  const bytes = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: OCI_MANIFEST,
      config: { mediaType: 'application/vnd.oci.image.config.v1+json', ...config },
      layers: layers.map((layer) => ({ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', ...layer })),
      annotations: { label },
    }),
  );
  const parsed = parseManifest(bytes, OCI_MANIFEST);
  if (!parsed.ok) throw new Error(`the test manifest does not parse: ${parsed.reason}`);
  const digest = digestOf(bytes);
  await local.putManifest({ digest, mediaType: OCI_MANIFEST, bytes }, { references: parsed.references, holder });
  return { digest, bytes };
}
