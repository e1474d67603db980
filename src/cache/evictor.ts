// Keeps the cache within its bounds (cache.maxSize, cache.minFreeSpace, cache.maxAge) in the background:
// checked after content is stored and on a timer, never on a request's path. One run at a time: it plans which
// images go from the content graph in the metadata (eviction-plan.ts) and removes them through the LocalRegistry, whose
// removal checks each decision again, so a pull that reads an image meanwhile keeps it.

import { statfs } from 'node:fs/promises';
import type { FreeSpace } from '../config/schema.js';
import type { Digest } from '../oci/digest.js';
import type { LocalRegistry } from '../registry/local-registry.js';
import type { Metrics } from '../telemetry/metrics.js';
import { planEviction } from './eviction-plan.js';
import { keptFromEviction } from './kept-content.js';

/** Eviction brings the cache down to this share of cache.maxSize (the low watermark), so it does not run on every fill. */
export const LOW_WATERMARK = 0.9;
/** How often the bounds are checked when nothing is stored (free space may shrink for other reasons). */
const CHECK_INTERVAL_MS = 10_000;
/** After a store, how long to wait for more before checking: a pull stores many blobs in a row. */
const AFTER_STORE_MS = 200;
/** How often to say that the cache is above its bound with nothing evictable (every check would be noise). */
const STUCK_WARNING_INTERVAL_MS = 10 * 60_000;
/** How often content is looked at for its age alone (the totals, then a page of the least recently read roots). */
const AGE_CHECK_INTERVAL_MS = 60_000;

export type EvictionReason = 'max_size' | 'min_free_space' | 'max_age';

export interface EvictionBounds {
  maxSizeBytes: number | undefined;
  minFreeSpace: FreeSpace;
  inUseWindowMs: number;
  maxAgeMs: number | undefined;
}

export interface DiskSpace {
  freeBytes: number;
  totalBytes: number;
}

export interface EvictionReport {
  /** Why it ran; undefined when within every bound (nothing done). */
  reason: EvictionReason | undefined;
  /** What the cache held when the run began; undefined when nothing needed it counted (no size bound, space enough). */
  heldBytes: number | undefined;
  targetBytes: number | undefined;
  images: number;
  freedBytes: number;
  inUseEvicted: number;
  reachesTarget: boolean;
}

/** A run that had nothing to do (or that another node sharing the database was doing). */
const IDLE_REPORT: EvictionReport = { reason: undefined, heldBytes: undefined, targetBytes: undefined, images: 0, freedBytes: 0, inUseEvicted: 0, reachesTarget: true };

export interface EvictorOptions {
  dataDir: string;
  /** Roots never evicted (pinned images); what hosted repositories hold is never evicted either. */
  pinned: () => ReadonlySet<Digest>;
  log: { info(fields: object, message: string): void; warn(fields: object, message: string): void; error(fields: object, message: string): void };
  now?: () => number;
  diskSpace?: (dir: string) => Promise<DiskSpace>;
}

async function diskSpaceOf(dir: string): Promise<DiskSpace> {
  const stats = await statfs(dir);
  // bavail: what an unprivileged writer may still use (root's reserve excluded).
  return { freeBytes: stats.bavail * stats.bsize, totalBytes: stats.blocks * stats.bsize };
}

export function minFreeBytes(bound: FreeSpace, disk: DiskSpace): number {
  return 'bytes' in bound ? bound.bytes : Math.ceil((disk.totalBytes * bound.percent) / 100);
}

export class CacheEvictor {
  private running: Promise<EvictionReport> | undefined;
  private runAgain = false;
  private checkTimer: NodeJS.Timeout | undefined;
  private storeTimer: NodeJS.Timeout | undefined;
  private lastAgeCheck = Number.NEGATIVE_INFINITY;
  private lastStuckWarning = Number.NEGATIVE_INFINITY;
  private closed = false;
  private readonly now: () => number;
  private readonly diskSpace: (dir: string) => Promise<DiskSpace>;
  /** The last run that had something to do, for the status page. */
  lastReport: (EvictionReport & { at: number }) | undefined;

  constructor(
    private readonly local: LocalRegistry,
    private readonly bounds: EvictionBounds,
    private readonly metrics: Metrics,
    private readonly options: EvictorOptions,
  ) {
    this.now = options.now ?? Date.now;
    this.diskSpace = options.diskSpace ?? diskSpaceOf;
    if (bounds.maxSizeBytes !== undefined) metrics.cacheBound.set({ bound: 'max_size' }, bounds.maxSizeBytes);
  }

  /** Starts checking: after each store, and on a timer. */
  start(): void {
    this.local.onStored(() => this.soon());
    const tick = (): void => {
      this.checkTimer = setTimeout(() => {
        this.check();
        tick();
      }, CHECK_INTERVAL_MS).unref();
    };
    tick();
    this.check();
  }

  /** A check shortly (after a store, or when the disk was found full): stores in a row make one check. */
  soon(): void {
    if (this.closed || this.storeTimer !== undefined) return;
    this.storeTimer = setTimeout(() => {
      this.storeTimer = undefined;
      this.check();
    }, AFTER_STORE_MS).unref();
  }

  private check(): void {
    this.run().catch(() => undefined);
  }

  /** Runs eviction now (or after the run in progress, which then runs once more); failures are logged and counted. */
  run(): Promise<EvictionReport> {
    if (this.running !== undefined) {
      this.runAgain = true;
      return this.running;
    }
    // Over a shared database, one node evicts at a time; the others find it running and skip their turn.
    this.running = this.local.meta
      .runAlone('eviction', () => this.evict())
      .then((report) => report ?? IDLE_REPORT)
      .catch((error: unknown) => {
        this.metrics.evictionRuns.inc({ outcome: 'failed' });
        this.options.log.error({ err: error }, 'eviction failed');
        throw error;
      })
      .finally(() => {
        this.running = undefined;
        if (this.runAgain && !this.closed) {
          this.runAgain = false;
          this.check();
        }
      });
    return this.running;
  }

  async close(): Promise<void> {
    this.closed = true;
    clearTimeout(this.checkTimer);
    clearTimeout(this.storeTimer);
    await this.running?.catch(() => undefined);
  }

  private async evict(): Promise<EvictionReport> {
    const meta = this.local.meta;
    const disk = await this.diskSpace(this.options.dataDir);
    const minFree = minFreeBytes(this.bounds.minFreeSpace, disk);
    this.metrics.cacheBound.set({ bound: 'min_free_space' }, minFree);
    this.metrics.cacheBound.set({ bound: 'free' }, disk.freeBytes);

    const now = this.now();
    const { maxSizeBytes, maxAgeMs } = this.bounds;
    const lowOnSpace = disk.freeBytes < minFree;
    const ageDue = maxAgeMs !== undefined && now - this.lastAgeCheck >= AGE_CHECK_INTERVAL_MS;
    const idle = IDLE_REPORT;
    // With no size bound and space enough, nothing needs the count: a check after a store reads nothing.
    if (maxSizeBytes === undefined && !lowOnSpace && !ageDue) return idle;
    const totals = await meta.totals();
    const heldBytes = totals.blobBytes + totals.manifestBytes;
    const overSize = maxSizeBytes !== undefined && heldBytes > maxSizeBytes;
    if (!overSize && !lowOnSpace && !ageDue) return { ...idle, heldBytes };
    if (ageDue) this.lastAgeCheck = now;

    let targetBytes = Number.POSITIVE_INFINITY;
    if (overSize) targetBytes = Math.floor(maxSizeBytes * LOW_WATERMARK);
    // Free space comes back to the bound plus a tenth of it: the same hysteresis as the size's low watermark.
    if (lowOnSpace) targetBytes = Math.min(targetBytes, Math.max(0, heldBytes - (Math.ceil(minFree * (2 - LOW_WATERMARK)) - disk.freeBytes)));
    const boundReason: EvictionReason = overSize ? 'max_size' : 'min_free_space';

    // Manifests cached before the content graph existed: their references, so that their layers count as theirs.
    await this.local.backfillReferences();
    await meta.flushAccess();
    const readBefore = this.now();
    const plan = await planEviction(meta, {
      pinned: await keptFromEviction(this.local.meta, this.options.pinned()),
      heldBytes,
      targetBytes,
      inUseSince: readBefore - this.bounds.inUseWindowMs,
      expiredBefore: maxAgeMs === undefined ? undefined : readBefore - maxAgeMs,
    });
    if (plan.images.length === 0) {
      if ((overSize || lowOnSpace) && now - this.lastStuckWarning >= STUCK_WARNING_INTERVAL_MS) {
        this.lastStuckWarning = now;
        this.options.log.warn({ heldBytes, targetBytes, freeBytes: disk.freeBytes, minFreeBytes: minFree }, 'cache above its bound with nothing it may evict: what it holds is pinned');
      }
      return { ...idle, reason: overSize || lowOnSpace ? boundReason : undefined, targetBytes, reachesTarget: plan.reachesTarget };
    }

    const removed = await this.local.removeContent({ manifests: plan.manifests, blobs: plan.blobs, readBefore });
    const sizes = new Map([...removed.manifests, ...removed.blobs].map((entry) => [entry.digest, entry.size]));
    const freed = { max_size: 0, min_free_space: 0, max_age: 0 };
    let images = 0;
    for (const image of plan.images) {
      const reason: EvictionReason = image.expired ? 'max_age' : boundReason;
      const bytes = image.removes.reduce((sum, digest) => sum + (sizes.get(digest) ?? 0), 0);
      // An image whose content was all read since the decision was not evicted after all.
      if (!image.removes.some((digest) => sizes.has(digest))) continue;
      images += 1;
      freed[reason] += bytes;
      this.metrics.evictions.inc({ reason });
      this.metrics.evictedBytes.inc({ reason }, bytes);
    }
    const freedBytes = freed.max_size + freed.min_free_space + freed.max_age;
    const reachesTarget = heldBytes - freedBytes <= targetBytes;
    this.metrics.evictionRuns.inc({ outcome: reachesTarget ? 'reached' : 'short' });
    const report: EvictionReport = {
      reason: plan.images.some((image) => !image.expired) ? boundReason : 'max_age',
      heldBytes,
      targetBytes: Number.isFinite(targetBytes) ? targetBytes : undefined,
      images,
      freedBytes,
      inUseEvicted: plan.inUseEvicted,
      reachesTarget,
    };
    this.lastReport = { ...report, at: now };
    this.options.log.info({ ...report, freedByReason: freed, durationMs: this.now() - now }, 'evicted least recently used images');
    if (!reachesTarget) {
      this.options.log.warn({ heldBytes: heldBytes - freedBytes, targetBytes }, 'cache still above its bound: what is left is pinned, or was read while eviction ran');
    }
    return report;
  }
}
