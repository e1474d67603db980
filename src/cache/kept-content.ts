// What eviction and garbage collection keep whatever its age or the cache's bound: the roots of pinned images, and
// everything a hosted repository holds (pushed content is not a cache: it goes only when deleted, then collected).

import type { Digest } from '../oci/digest.js';
import type { MetadataStore } from '../meta/metadata-store.js';
import { HOSTED_REGISTRY } from '../registry/hosted.js';

export async function keptContent(meta: Pick<MetadataStore, 'contentHeldByRegistry'>, pinned: ReadonlySet<Digest>): Promise<ReadonlySet<Digest>> {
  const hosted = await meta.contentHeldByRegistry(HOSTED_REGISTRY);
  if (hosted.length === 0) return pinned;
  return new Set([...pinned, ...hosted]);
}
