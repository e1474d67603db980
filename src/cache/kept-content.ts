// What eviction and garbage collection keep whatever its age or the cache's bound, beside pinned images: what hosted
// repositories hold. Pushed content is not a cache, so eviction never takes any of it. GC keeps every manifest a
// hosted repository holds, with all it references; a blob pushed and referenced by no manifest (an upload never
// used, or the layer of a deleted manifest) is collected once older than gc.grace, as distribution's GC does.

import type { Digest } from '../oci/digest.js';
import type { MetadataStore } from '../meta/metadata-store.js';
import { HOSTED_REGISTRY } from '../registry/hosted.js';

/** Pinned roots and everything hosted repositories hold: what eviction never takes. */
export async function keptFromEviction(meta: Pick<MetadataStore, 'contentHeldByRegistry'>, pinned: ReadonlySet<Digest>): Promise<ReadonlySet<Digest>> {
  const hosted = await meta.contentHeldByRegistry(HOSTED_REGISTRY);
  if (hosted.length === 0) return pinned;
  return new Set([...pinned, ...hosted]);
}

/** Pinned roots and the manifests hosted repositories hold (`isManifest` tells them from blobs): GC's roots beside tags. */
export async function keptFromCollection(meta: Pick<MetadataStore, 'contentHeldByRegistry'>, pinned: ReadonlySet<Digest>, isManifest: (digest: Digest) => boolean): Promise<ReadonlySet<Digest>> {
  const hosted = (await meta.contentHeldByRegistry(HOSTED_REGISTRY)).filter(isManifest);
  if (hosted.length === 0) return pinned;
  return new Set([...pinned, ...hosted]);
}
