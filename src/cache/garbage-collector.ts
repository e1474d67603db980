// Garbage collection, online and safe beside pulls and fills: marks what tags, pinned images and recent reads
// hold (and all they reference), sweeps the rest once older than the grace period, and removes orphans (a file
// with no record, a record with no file) and abandoned temporaries. Removal goes through
// LocalRegistry.removeContent, which checks each decision again in the metadata; a file is an orphan only when
// it is older than the grace (a commit writes its file before its record).

import type { ContentGraph } from '../meta/metadata-store.js';
import type { Digest } from '../oci/digest.js';
import type { LocalRegistry } from '../registry/local-registry.js';
import { CONTENT_FOLDER, contentKey, digestOfContentKey } from '../store/layout.js';
import { keptFromCollection } from './kept-content.js';
import type { Metrics } from '../telemetry/metrics.js';
import { Pacer } from '../event-loop/pacer.js';

const RECORD_PAGE = 1000;

export type CollectedKind = 'manifest' | 'blob' | 'orphan_file' | 'orphan_record' | 'temporary';

export interface Collected {
  kind: CollectedKind;
  /** A digest, or a temporary's name. */
  subject: string;
  bytes: number;
}

export interface GcReport {
  dryRun: boolean;
  startedAt: number;
  durationMs: number;
  /** Manifests and blobs the mark reached (kept). */
  marked: number;
  removed: Record<CollectedKind, number>;
  freedBytes: number;
  /** Set when another node sharing the database was collecting: this one did nothing. */
  runningElsewhere?: true;
}

function emptyReport(dryRun: boolean, startedAt: number): GcReport {
  return { dryRun, startedAt, durationMs: 0, marked: 0, removed: { manifest: 0, blob: 0, orphan_file: 0, orphan_record: 0, temporary: 0 }, freedBytes: 0 };
}

export interface GcOptions {
  /** Content read or written this recently is kept, and so is all it references. */
  graceMs: number;
  /** Roots kept whatever their age: pinned images (and, always, the manifests hosted repositories hold). */
  pinned: () => ReadonlySet<Digest>;
  /**
   * A temporary untouched this long is abandoned; undefined: every temporary is (offline, with the data
   * directory's lock held, nothing else writes one).
   */
  abandonedTemporaryMs: number | undefined;
  metrics: Metrics;
  log: { info(fields: object, message: string): void; error(fields: object, message: string): void };
  /** Told of each removal (or, in a dry run, of each that would be made). */
  onCollected?: (collected: Collected) => void;
  now?: () => number;
}

export class GarbageCollector {
  private running: Promise<GcReport> | undefined;
  private timer: NodeJS.Timeout | undefined;
  private readonly now: () => number;
  /** The last collection, for the status page. */
  lastReport: GcReport | undefined;

  constructor(
    private readonly local: LocalRegistry,
    private readonly options: GcOptions,
  ) {
    this.now = options.now ?? Date.now;
  }

  /** Collects every intervalMs (0: never by itself). */
  start(intervalMs: number): void {
    if (intervalMs <= 0) return;
    this.timer = setInterval(() => void this.run({ dryRun: false }).catch(() => undefined), intervalMs).unref();
  }

  async close(): Promise<void> {
    clearInterval(this.timer);
    await this.running?.catch(() => undefined);
  }

  /** Collects now; a collection in progress is joined rather than started twice. */
  run(request: { dryRun: boolean }): Promise<GcReport> {
    // Over a shared database, one node collects at a time: another's run in progress is reported, not joined.
    this.running ??= this.local.meta
      .runAlone('gc', () => this.collect(request.dryRun))
      .then((report) => report ?? this.elsewhere(request.dryRun))
      .then(
        (report) => {
          const { metrics, log } = this.options;
          if (report.runningElsewhere === true) {
            log.info({}, 'garbage collection is running on another node: not started here');
            return report;
          }
          if (!report.dryRun) {
            this.lastReport = report;
            metrics.gcRuns.inc({ outcome: 'done' });
            metrics.gcLastDuration.set(report.durationMs / 1000);
            metrics.gcFreedBytes.inc(report.freedBytes);
            for (const [kind, count] of Object.entries(report.removed)) if (count > 0) metrics.gcRemoved.inc({ kind }, count);
          }
          log.info({ ...report }, report.dryRun ? 'garbage collection (dry run): what it would remove' : 'garbage collection done');
          return report;
        },
        (error: unknown) => {
          this.options.metrics.gcRuns.inc({ outcome: 'failed' });
          this.options.log.error({ err: error }, 'garbage collection failed');
          throw error;
        },
      )
      .finally(() => {
        this.running = undefined;
      });
    return this.running;
  }

  private elsewhere(dryRun: boolean): GcReport {
    return { ...emptyReport(dryRun, this.now()), runningElsewhere: true };
  }

  private async collect(dryRun: boolean): Promise<GcReport> {
    const startedAt = this.now();
    const report = emptyReport(dryRun, startedAt);
    const collected = (entry: Collected): void => {
      report.removed[entry.kind] += 1;
      report.freedBytes += entry.bytes;
      this.options.onCollected?.(entry);
    };
    const meta = this.local.meta;
    await this.local.backfillReferences();
    await meta.flushAccess();
    const decidedAt = this.now();
    const recentSince = decidedAt - this.options.graceMs;
    const graph = await meta.graph();
    const recordedManifests = new Set(graph.manifests.map((manifest) => manifest.digest));
    const kept = await keptFromCollection(meta, this.options.pinned(), (digest) => recordedManifests.has(digest));
    const roots = new Set<Digest>([...(await meta.taggedDigests()), ...kept]);
    const pacer = new Pacer();
    const marked = await markFrom(graph, roots, recentSince, pacer);
    report.marked = marked.size;

    const manifests = await sweepOrder(graph, marked, pacer);
    const blobs = graph.blobs.filter((blob) => !marked.has(blob.digest)).map((blob) => blob.digest);
    if (dryRun) {
      const sizes = new Map([...graph.manifests, ...graph.blobs].map((entry) => [entry.digest, entry.size]));
      for (const digest of manifests) collected({ kind: 'manifest', subject: digest, bytes: sizes.get(digest) ?? 0 });
      for (const digest of blobs) collected({ kind: 'blob', subject: digest, bytes: sizes.get(digest) ?? 0 });
    } else {
      // Only what is older than the grace still: a read since the mark keeps it.
      const removed = await this.local.removeContent({ manifests, blobs, readBefore: recentSince });
      for (const entry of removed.manifests) collected({ kind: 'manifest', subject: entry.digest, bytes: entry.size });
      for (const entry of removed.blobs) collected({ kind: 'blob', subject: entry.digest, bytes: entry.size });
    }
    await this.collectOrphanFiles(recentSince, dryRun, collected);
    await this.collectOrphanRecords(dryRun, collected);
    await this.collectTemporaries(dryRun, collected);
    report.durationMs = this.now() - startedAt;
    return report;
  }

  /** Content files no record names, written before the grace (a commit writes its file, then its record). */
  private async collectOrphanFiles(writtenBefore: number, dryRun: boolean, collected: (entry: Collected) => void): Promise<void> {
    const { store, meta } = this.local;
    for await (const key of store.keys(CONTENT_FOLDER)) {
      const digest = digestOfContentKey(key);
      if (digest === undefined) continue; // not content: `regmirror verify` reports it
      if ((await meta.getBlob(digest)) !== undefined || (await meta.getManifest(digest)) !== undefined) continue;
      const file = await store.stat(key);
      if (file === undefined || file.modifiedAt >= writtenBefore) continue;
      if (!dryRun && !(await this.local.removeOrphanFile(digest))) continue;
      collected({ kind: 'orphan_file', subject: digest, bytes: file.size });
    }
  }

  /** Records whose file is gone: forgotten, so the content is fetched again when asked for. */
  private async collectOrphanRecords(dryRun: boolean, collected: (entry: Collected) => void): Promise<void> {
    const { store, meta } = this.local;
    for (const kind of ['blob', 'manifest'] as const) {
      for (let last = ''; ; ) {
        const page = kind === 'blob' ? await meta.listBlobs({ last, limit: RECORD_PAGE }) : await meta.listManifests({ last, limit: RECORD_PAGE });
        for (const record of page) {
          if ((await store.stat(contentKey(record.digest))) !== undefined) continue;
          if (!dryRun && !(await this.local.forgetMissing(kind, record.digest))) continue;
          collected({ kind: 'orphan_record', subject: record.digest, bytes: 0 });
        }
        const final = page.at(-1);
        if (page.length < RECORD_PAGE || final === undefined) break;
        last = final.digest;
      }
    }
  }

  private async collectTemporaries(dryRun: boolean, collected: (entry: Collected) => void): Promise<void> {
    const { store } = this.local;
    const untouchedSince = this.options.abandonedTemporaryMs === undefined ? Number.POSITIVE_INFINITY : this.now() - this.options.abandonedTemporaryMs;
    for (const temporary of await store.listTemporaries()) {
      if (temporary.modifiedAt >= untouchedSince) continue;
      if (!dryRun) await store.removeTemporary(temporary.name);
      collected({ kind: 'temporary', subject: temporary.name, bytes: temporary.size });
    }
  }
}

/** Everything reachable from the roots, and from what was read or stored since `recentSince`. */
async function markFrom(graph: ContentGraph, roots: ReadonlySet<Digest>, recentSince: number, pacer: Pacer): Promise<Set<Digest>> {
  const references = new Map(graph.manifests.map((manifest) => [manifest.digest, manifest.references]));
  const marked = new Set<Digest>();
  const pending: Digest[] = [...roots];
  for (const entry of [...graph.manifests, ...graph.blobs]) if (entry.lastAccess >= recentSince) pending.push(entry.digest);
  for (let digest = pending.pop(); digest !== undefined; digest = pending.pop()) {
    if (marked.has(digest)) continue;
    marked.add(digest);
    // A subject does not hold its target.
    for (const reference of references.get(digest) ?? []) if (reference.role !== 'subject' && !marked.has(reference.digest)) pending.push(reference.digest);
    await pacer.pace();
  }
  return marked;
}

/** The unmarked manifests, each before the manifests it lists (an index before its children). */
async function sweepOrder(graph: ContentGraph, marked: ReadonlySet<Digest>, pacer: Pacer): Promise<Digest[]> {
  const unmarked = new Map(graph.manifests.filter((manifest) => !marked.has(manifest.digest)).map((manifest) => [manifest.digest, manifest]));
  const order: Digest[] = [];
  const placed = new Set<Digest>();
  const listedBy = new Map<Digest, Digest[]>();
  for (const manifest of unmarked.values()) {
    for (const reference of manifest.references) {
      if (reference.role === 'manifest' && unmarked.has(reference.digest)) listedBy.set(reference.digest, [...(listedBy.get(reference.digest) ?? []), manifest.digest]);
    }
  }
  const place = (digest: Digest, path: Set<Digest>): void => {
    if (placed.has(digest) || path.has(digest)) return;
    path.add(digest);
    for (const parent of listedBy.get(digest) ?? []) place(parent, path);
    placed.add(digest);
    order.push(digest);
  };
  for (const digest of unmarked.keys()) {
    place(digest, new Set());
    await pacer.pace();
  }
  return order;
}
