// Which images to evict so that the cache fits its bound, decided on the content graph alone (no I/O): the
// least recently used images first, never a blob or manifest a retained image still references, never a pinned
// image, and images in use (read within the in-use window) only when nothing else is left.
//
// An image is a root of the graph — a manifest no other manifest lists as a child — with everything it reaches:
// an index its child manifests, each manifest its config and layers. A blob that no manifest references is an
// image of its own. A `subject` does not hold its target: a signature or SBOM is an image apart, evicted by its
// own use. Evicting an image removes what no retained image reaches; what it shares with one stays. An image is as
// recently used as what it alone reaches: a read of a layer it shares refreshes none of the images sharing it.

import type { BlobRecord, ContentGraph } from '../meta/metadata-store.js';
import type { Digest } from '../oci/digest.js';
import { Pacer } from '../event-loop/pacer.js';

/** A manifest as MetadataStore.graph() gives it: size, last read, references. */
export type PlannedManifest = ContentGraph['manifests'][number];
export type PlannedBlob = BlobRecord;

/** The content graph (MetadataStore.graph()) and what bounds the plan. */
export interface EvictionInput extends ContentGraph {
  /** Root digests (a manifest, or a blob no manifest references) never evicted. */
  pinned: ReadonlySet<Digest>;
  /** Bytes to get down to (the low watermark). */
  targetBytes: number;
  /** Images read at or after this time are in use: evicted only when nothing else is left. */
  inUseSince: number;
  /** Images last read before this time are evicted whatever the size (cache.maxAge); undefined: none. */
  expiredBefore?: number | undefined;
}

/** One image of the plan, and what goes with it (what no retained image reaches). */
export interface PlannedImage {
  root: Digest;
  /** Evicted for its age (expiredBefore), not for the bound. */
  expired: boolean;
  removes: Digest[];
}

export interface EvictionPlan {
  /** The images evicted, in the order chosen. */
  images: PlannedImage[];
  manifests: Digest[];
  blobs: Digest[];
  freedBytes: number;
  /** Bytes held before the plan (manifests and blobs recorded). */
  heldBytes: number;
  /** Whether evicting the plan brings the cache to targetBytes (pinned or referenced content may prevent it). */
  reachesTarget: boolean;
  /** How many of the evicted images were in use. */
  inUseEvicted: number;
}

interface Image {
  root: Digest;
  /** Everything the root reaches, itself included. */
  reaches: Set<Digest>;
  /** The latest read of what this image alone reaches. */
  lastAccess: number;
}

/** Plans, letting the event loop run between images (at 100k blobs planning takes most of a second). */
export async function planEviction(input: EvictionInput, pacer: Pacer = new Pacer()): Promise<EvictionPlan> {
  // Every loop over the whole graph lets the event loop run (at 100k blobs each holds it for tens of milliseconds).
  const manifests = new Map<Digest, PlannedManifest>();
  const children = new Set<Digest>();
  let heldBytes = 0;
  for (const manifest of input.manifests) {
    manifests.set(manifest.digest, manifest);
    heldBytes += manifest.size;
    for (const reference of manifest.references) if (reference.role === 'manifest') children.add(reference.digest);
    await pacer.pace();
  }
  const blobs = new Map<Digest, PlannedBlob>();
  for (const blob of input.blobs) {
    blobs.set(blob.digest, blob);
    heldBytes += blob.size;
    await pacer.pace();
  }
  const sizeOf = (digest: Digest): number => manifests.get(digest)?.size ?? blobs.get(digest)?.size ?? 0;
  const lastAccessOf = (digest: Digest): number => manifests.get(digest)?.lastAccess ?? blobs.get(digest)?.lastAccess ?? 0;

  const images: Image[] = [];
  const reachedByManifests = new Set<Digest>();
  for (const manifest of input.manifests) {
    if (!children.has(manifest.digest)) {
      const image = imageOf(manifest.digest, manifests, blobs);
      images.push(image);
      for (const digest of image.reaches) reachedByManifests.add(digest);
    }
    await pacer.pace();
  }
  for (const blob of input.blobs) {
    if (!reachedByManifests.has(blob.digest)) images.push({ root: blob.digest, reaches: new Set([blob.digest]), lastAccess: 0 });
    await pacer.pace();
  }

  // How many images reach each digest: it goes only with the last of them.
  const holders = new Map<Digest, number>();
  for (const image of images) {
    for (const digest of image.reaches) holders.set(digest, (holders.get(digest) ?? 0) + 1);
    await pacer.pace();
  }
  // An image's last use is that of what it alone holds (its root at least): a read of a shared base layer cannot
  // say which image it was for, and refreshing them all would make every image sharing it as recent as the newest.
  for (const image of images) {
    for (const digest of image.reaches) if (holders.get(digest) === 1) image.lastAccess = Math.max(image.lastAccess, lastAccessOf(digest));
    await pacer.pace();
  }

  const inUse = (image: Image): boolean => image.lastAccess >= input.inUseSince;
  const expired = (image: Image): boolean => input.expiredBefore !== undefined && image.lastAccess < input.expiredBefore;
  // Least recently used first; in-use images last. Expired images are all least recently used, so they come first.
  const candidates = images
    .filter((image) => !input.pinned.has(image.root))
    .sort((a, b) => Number(inUse(a)) - Number(inUse(b)) || a.lastAccess - b.lastAccess || a.root.localeCompare(b.root));

  const plan: EvictionPlan = { images: [], manifests: [], blobs: [], freedBytes: 0, heldBytes, reachesTarget: heldBytes <= input.targetBytes, inUseEvicted: 0 };
  for (const image of candidates) {
    const isExpired = expired(image);
    if (!isExpired && heldBytes - plan.freedBytes <= input.targetBytes) break;
    const planned: PlannedImage = { root: image.root, expired: isExpired, removes: [] };
    plan.images.push(planned);
    if (inUse(image)) plan.inUseEvicted += 1;
    for (const digest of image.reaches) {
      const left = (holders.get(digest) ?? 1) - 1;
      holders.set(digest, left);
      if (left > 0) continue;
      planned.removes.push(digest);
      if (manifests.has(digest)) plan.manifests.push(digest);
      else if (blobs.has(digest)) plan.blobs.push(digest);
      plan.freedBytes += sizeOf(digest);
    }
    await pacer.pace();
  }
  plan.reachesTarget = heldBytes - plan.freedBytes <= input.targetBytes;
  return plan;
}

/** A root manifest and everything it reaches (its last access is set once it is known what it shares). */
function imageOf(root: Digest, manifests: ReadonlyMap<Digest, PlannedManifest>, blobs: ReadonlyMap<Digest, PlannedBlob>): Image {
  const reaches = new Set<Digest>();
  const visit = (digest: Digest): void => {
    if (reaches.has(digest)) return;
    const manifest = manifests.get(digest);
    // Referenced but not held (never pulled, or a platform nobody asked for): nothing to free, nothing to keep.
    if (manifest === undefined && !blobs.has(digest)) return;
    reaches.add(digest);
    for (const reference of manifest?.references ?? []) if (reference.role !== 'subject') visit(reference.digest);
  };
  visit(root);
  return { root, reaches, lastAccess: 0 };
}
