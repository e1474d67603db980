// Which images to evict so that the cache fits its bound, decided on the content graph in the metadata (no file
// I/O): the least recently used images first, never a blob or manifest a retained image still references, never a
// pinned image, and images in use (read within the in-use window) only when nothing else is left.
//
// An image is a root of the graph — a manifest no other manifest holds, a blob no manifest references — with
// everything it reaches: an index its child manifests, each manifest its config and layers. A `subject` does not
// hold its target: a signature or SBOM is an image apart, evicted by its own use. Evicting an image removes what no
// retained image reaches; what it shares with one stays. An image is as recently used as what it alone reaches: a
// read of a layer it shares refreshes none of the images sharing it.
//
// The plan reads what it evicts, not the whole graph: roots come least recently read first from an index
// (MetadataStore.rootsByLastRead), each is walked down (heldBy) and, where it shares, up (holdersOf). An image is
// at least as recent as its root, so the images walked are merged with the roots still unread: an image is chosen
// once no unread root can be less recent than it.

import { byLastRead, type ContentEntry, type MetadataStore, type ReadOrderPosition } from '../meta/metadata-store.js';
import type { Digest } from '../oci/digest.js';
import { Pacer } from '../event-loop/pacer.js';

/** What the plan reads: the content graph, a root or a manifest at a time. */
export type EvictionSource = Pick<MetadataStore, 'rootsByLastRead' | 'heldBy' | 'holdersOf'>;

export interface EvictionInput {
  /** Root digests (a manifest, or a blob no manifest references) never evicted. */
  pinned: ReadonlySet<Digest>;
  /** Bytes held now (MetadataStore.totals()). */
  heldBytes: number;
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
  /** Parents before their children (an index before its child manifests), as MetadataStore.removeContent takes them. */
  manifests: Digest[];
  blobs: Digest[];
  freedBytes: number;
  /** Bytes held before the plan (manifests and blobs recorded). */
  heldBytes: number;
  /** Whether evicting the plan brings the cache to targetBytes (pinned or referenced content may prevent it). */
  reachesTarget: boolean;
  /** How many of the evicted images were in use. */
  inUseEvicted: number;
  /** Roots taken from the index and walked: what the plan cost (it grows with what is evicted, not with what is held). */
  rootsRead: number;
}

/** Roots read from the index at a time. */
const ROOT_PAGE = 256;

/** An image walked: its root, everything it reaches (parents first) with the roots that reach each, its recency. */
interface Image {
  root: ContentEntry;
  reaches: Array<{ entry: ContentEntry; roots: ReadonlySet<Digest> }>;
  /** The latest read of what this image alone reaches (its root at least). */
  lastAccess: number;
}

/** Plans, reading the graph as it goes and letting the event loop run between images. */
export async function planEviction(source: EvictionSource, input: EvictionInput, pacer: Pacer = new Pacer()): Promise<EvictionPlan> {
  const roots = new RootsInReadOrder(source);
  const holdings = new Holdings(source);
  /** Images walked and not yet chosen, least recent first. */
  const walked: Image[] = [];
  /** For shared content: how many of the roots reaching it are not evicted yet; it goes with the last. */
  const retainedRoots = new Map<Digest, number>();
  const plan: EvictionPlan = { images: [], manifests: [], blobs: [], freedBytes: 0, heldBytes: input.heldBytes, reachesTarget: false, inUseEvicted: 0, rootsRead: 0 };
  const overTarget = (): boolean => input.heldBytes - plan.freedBytes > input.targetBytes;
  const expired = (lastAccess: number): boolean => input.expiredBefore !== undefined && lastAccess < input.expiredBefore;

  for (;;) {
    const next = await roots.peek();
    const least = walked[0];
    if (least !== undefined && (next === undefined || byLastRead(positionOf(least), next) < 0)) {
      // No root still unread can make an image less recent than this one: it is the least recently used left.
      if (!overTarget() && !expired(least.lastAccess)) break;
      walked.shift();
      evict(least);
      await pacer.pace();
      continue;
    }
    // Every image left is at least as recent as the next root: none is needed once within the target, and none
    // is expired once that root is not.
    if (next === undefined || (!overTarget() && !expired(next.lastAccess))) break;
    roots.take();
    plan.rootsRead += 1;
    if (input.pinned.has(next.digest)) continue;
    insertByRecency(walked, await walk(next, source, holdings));
    await pacer.pace();
  }
  plan.reachesTarget = !overTarget();
  return plan;

  function evict(image: Image): void {
    const planned: PlannedImage = { root: image.root.digest, expired: expired(image.lastAccess), removes: [] };
    plan.images.push(planned);
    if (image.lastAccess >= input.inUseSince) plan.inUseEvicted += 1;
    for (const { entry, roots: reaching } of image.reaches) {
      // Kept content reached from an evicted image (a hosted repository's blob a mirrored image shares) stays.
      if (input.pinned.has(entry.digest)) continue;
      if (reaching.size > 1) {
        const left = (retainedRoots.get(entry.digest) ?? reaching.size) - 1;
        retainedRoots.set(entry.digest, left);
        if (left > 0) continue;
      }
      planned.removes.push(entry.digest);
      (entry.kind === 'manifest' ? plan.manifests : plan.blobs).push(entry.digest);
      plan.freedBytes += entry.size;
    }
  }
}

/** An image's place in last-read order: its recency, then its root's digest. */
function positionOf(image: Image): ReadOrderPosition {
  return { lastAccess: image.lastAccess, digest: image.root.digest };
}

function insertByRecency(images: Image[], image: Image): void {
  let low = 0;
  let high = images.length;
  while (low < high) {
    const middle = (low + high) >>> 1;
    const other = images[middle];
    if (other !== undefined && byLastRead(positionOf(other), positionOf(image)) < 0) low = middle + 1;
    else high = middle;
  }
  images.splice(low, 0, image);
}

/** A root and what it reaches, each with the roots reaching it; recent as what it alone reaches. */
async function walk(root: ContentEntry, source: EvictionSource, holdings: Holdings): Promise<Image> {
  const itself = new Set([root.digest]);
  const image: Image = { root, reaches: [{ entry: root, roots: itself }], lastAccess: root.lastAccess };
  const seen = new Set([keyOf(root)]);
  for (let index = 0; index < image.reaches.length; index++) {
    const parent = image.reaches[index];
    if (parent === undefined || parent.entry.kind !== 'manifest') continue;
    for (const entry of await source.heldBy(parent.entry.digest)) {
      if (seen.has(keyOf(entry))) continue;
      seen.add(keyOf(entry));
      // Held once, by this parent: reached by the parent's roots. Otherwise, look up what holds it.
      const roots = entry.holders === 1 ? parent.roots : await holdings.rootsReaching(entry.digest);
      image.reaches.push({ entry, roots });
      if (roots.size === 1 && roots.has(root.digest)) image.lastAccess = Math.max(image.lastAccess, entry.lastAccess);
    }
  }
  return image;
}

/** The graph upward, remembered for the plan: shared content is looked up once however many images reach it. */
class Holdings {
  private readonly reaching = new Map<Digest, ReadonlySet<Digest>>();

  constructor(private readonly source: EvictionSource) {}

  /** The roots that reach a digest held by at least one manifest. */
  async rootsReaching(digest: Digest): Promise<ReadonlySet<Digest>> {
    const known = this.reaching.get(digest);
    if (known !== undefined) return known;
    const roots = new Set<Digest>();
    for (const holder of await this.source.holdersOf(digest)) {
      if (holder.holders === 0) roots.add(holder.digest);
      else for (const root of await this.rootsReaching(holder.digest)) roots.add(root);
    }
    this.reaching.set(digest, roots);
    return roots;
  }
}

/** Roots in last-read order, a page at a time; a root read again while the plan runs comes back later, and is skipped. */
class RootsInReadOrder {
  private page: ContentEntry[] = [];
  private after: ReadOrderPosition | undefined;
  private exhausted = false;
  private readonly taken = new Set<string>();

  constructor(private readonly source: EvictionSource) {}

  async peek(): Promise<ContentEntry | undefined> {
    for (;;) {
      const first = this.page[0];
      if (first !== undefined && !this.taken.has(keyOf(first))) return first;
      if (first !== undefined) {
        this.page.shift();
        continue;
      }
      if (this.exhausted) return undefined;
      this.page = await this.source.rootsByLastRead(this.after, ROOT_PAGE);
      this.exhausted = this.page.length < ROOT_PAGE;
      const last = this.page.at(-1);
      if (last !== undefined) this.after = last;
    }
  }

  /** Takes the root peek() gave. */
  take(): void {
    const root = this.page.shift();
    if (root !== undefined) this.taken.add(keyOf(root));
  }
}

/** A record's identity: a manifest and a blob may share a digest. */
function keyOf(entry: ContentEntry): string {
  return `${entry.kind} ${entry.digest}`;
}
