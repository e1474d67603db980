// Prometheus metrics: what clients were served, by cache outcome, and what it cost upstream.
// One registry per process (not prom-client's global), so tests can start several servers.

import { Counter, Gauge, Registry, collectDefaultMetrics } from 'prom-client';
import type { ContentTotals, RegistryTotals } from '../meta/metadata-store.js';

/** How a response was produced; also logged per request. */
export type CacheOutcome = 'hit' | 'miss' | 'fill' | 'stale' | 'revalidated' | 'none';

export type UpstreamRequestKind = 'manifest' | 'blob' | 'tags' | 'referrers' | 'token' | 'ping' | 'v1-index' | 'v1-image' | 'v1-layer' | 'v1-tags' | 'v1-search';

export class Metrics {
  readonly registry = new Registry();

  readonly requests = new Counter({
    name: 'regmirror_http_requests_total',
    help: 'Client requests answered, by method, kind of resource, status and cache outcome.',
    labelNames: ['method', 'kind', 'status', 'cache'] as const,
    registers: [this.registry],
  });

  readonly responseBytes = new Counter({
    name: 'regmirror_http_response_bytes_total',
    help: 'Body bytes sent to clients, by cache outcome and upstream (registry name; "" for none): cache=hit is the bandwidth the cache saved that upstream.',
    labelNames: ['cache', 'upstream'] as const,
    registers: [this.registry],
  });

  readonly upstreamRequests = new Counter({
    name: 'regmirror_upstream_requests_total',
    help: 'Requests sent to upstream registries, by upstream, kind, method and status (0: no response).',
    labelNames: ['upstream', 'kind', 'method', 'status'] as const,
    registers: [this.registry],
  });

  readonly upstreamBytes = new Counter({
    name: 'regmirror_upstream_bytes_total',
    help: 'Body bytes received from upstream registries, by upstream and kind.',
    labelNames: ['upstream', 'kind'] as const,
    registers: [this.registry],
  });

  readonly fills = new Counter({
    name: 'regmirror_fills_total',
    help: 'Blob fills from upstreams, by outcome (committed, failed).',
    labelNames: ['upstream', 'outcome'] as const,
    registers: [this.registry],
  });

  readonly fillsInProgress = new Gauge({
    name: 'regmirror_fills_in_progress',
    help: 'Blob fills running now.',
    registers: [this.registry],
  });

  readonly clusterFollows = new Counter({
    name: 'regmirror_cluster_follows_total',
    help: "Blob requests that found another node filling the blob, by outcome (streamed from that node; waited, then asked again; failed).",
    labelNames: ['outcome'] as const,
    registers: [this.registry],
  });

  readonly damagedObjects = new Counter({
    name: 'regmirror_damaged_objects_total',
    help: 'Cached objects found missing or damaged (size or digest not what their record says) and dropped, to be fetched again; by kind and reason.',
    labelNames: ['kind', 'reason'] as const,
    registers: [this.registry],
  });

  readonly circuitOpen = new Gauge({
    name: 'regmirror_upstream_circuit_open',
    help: 'Whether the circuit of an upstream is open (1) or half-open (0.5): requests that need it fail fast.',
    labelNames: ['upstream'] as const,
    registers: [this.registry],
  });

  readonly circuitOpenings = new Counter({
    name: 'regmirror_upstream_circuit_openings_total',
    help: 'Times the circuit of an upstream opened, by reason (rate-limited, failing).',
    labelNames: ['upstream', 'reason'] as const,
    registers: [this.registry],
  });

  readonly rateLimitRemaining = new Gauge({
    name: 'regmirror_upstream_ratelimit_remaining',
    help: 'The last RateLimit-Remaining an upstream announced.',
    labelNames: ['upstream'] as const,
    registers: [this.registry],
  });

  readonly cacheBound = new Gauge({
    name: 'regmirror_cache_bound_bytes',
    help: 'The bounds eviction keeps: max_size (cache.maxSize; absent when unbounded), min_free_space (cache.minFreeSpace in bytes of the data filesystem), free (free bytes there at the last check).',
    labelNames: ['bound'] as const,
    registers: [this.registry],
  });

  readonly evictions = new Counter({
    name: 'regmirror_evictions_total',
    help: 'Images evicted (a root manifest or lone blob with what only it held), by reason (max_size, min_free_space, max_age).',
    labelNames: ['reason'] as const,
    registers: [this.registry],
  });

  readonly evictedBytes = new Counter({
    name: 'regmirror_evicted_bytes_total',
    help: 'Bytes of content evicted, by reason (max_size, min_free_space, max_age).',
    labelNames: ['reason'] as const,
    registers: [this.registry],
  });

  readonly evictionRuns = new Counter({
    name: 'regmirror_eviction_runs_total',
    help: 'Eviction runs that had something to do, by outcome: reached (down to the low watermark), short (pinned or in-use content left it above), failed.',
    labelNames: ['outcome'] as const,
    registers: [this.registry],
  });

  readonly prefetches = new Counter({
    name: 'regmirror_prefetches_total',
    help: 'Fetches of pinned images (prefetch.images), at start and every prefetch.interval, by outcome (ok, failed).',
    labelNames: ['outcome'] as const,
    registers: [this.registry],
  });

  readonly gcRuns = new Counter({
    name: 'regmirror_gc_runs_total',
    help: 'Garbage collections, by outcome (done, failed).',
    labelNames: ['outcome'] as const,
    registers: [this.registry],
  });

  readonly gcLastDuration = new Gauge({
    name: 'regmirror_gc_last_duration_seconds',
    help: 'How long the last garbage collection took.',
    registers: [this.registry],
  });

  readonly gcRemoved = new Counter({
    name: 'regmirror_gc_removed_total',
    help: 'What garbage collection removed, by kind: manifest, blob (unreferenced), orphan_file, orphan_record, temporary.',
    labelNames: ['kind'] as const,
    registers: [this.registry],
  });

  readonly gcFreedBytes = new Counter({
    name: 'regmirror_gc_freed_bytes_total',
    help: 'Bytes garbage collection freed.',
    registers: [this.registry],
  });

  /** observed: values read when /metrics is scraped. */
  constructor(
    observed: { sendBufferBytes?: () => number; cacheTotals?: () => Promise<ContentTotals>; cacheTotalsByRegistry?: () => Promise<RegistryTotals[]> } = {},
  ) {
    collectDefaultMetrics({ register: this.registry, prefix: 'regmirror_' });
    const { sendBufferBytes, cacheTotals, cacheTotalsByRegistry } = observed;
    // The gauges of one scrape are collected together: they share one count of the metadata, reused for a second.
    const sharedFor = <T>(count: (() => Promise<T>) | undefined): (() => Promise<T> | undefined) => {
      let counted: { at: number; value: Promise<T> } | undefined;
      return () => {
        if (count === undefined) return undefined;
        if (counted === undefined || Date.now() - counted.at > 1_000) counted = { at: Date.now(), value: count() };
        return counted.value;
      };
    };
    const totalsOfThisScrape = sharedFor(cacheTotals);
    const byRegistryOfThisScrape = sharedFor(cacheTotalsByRegistry);
    const cacheGauges = (name: string, help: string, blob: keyof ContentTotals, manifest: keyof ContentTotals): void => {
      new Gauge({
        name,
        help,
        labelNames: ['kind'] as const,
        registers: [this.registry],
        async collect() {
          const totals = await totalsOfThisScrape();
          this.set({ kind: 'blob' }, totals?.[blob] ?? 0);
          this.set({ kind: 'manifest' }, totals?.[manifest] ?? 0);
        },
      });
      new Gauge({
        name: name.replace('regmirror_cache_', 'regmirror_cache_upstream_'),
        help: `${help.replace(/, by kind.*$/, '')}, per upstream (registry name; "" for hosted content) and kind: content several upstreams hold counts for each.`,
        labelNames: ['upstream', 'kind'] as const,
        registers: [this.registry],
        async collect() {
          this.reset();
          for (const totals of (await byRegistryOfThisScrape()) ?? []) {
            this.set({ upstream: totals.registry, kind: 'blob' }, totals[blob]);
            this.set({ upstream: totals.registry, kind: 'manifest' }, totals[manifest]);
          }
        },
      });
    };
    cacheGauges('regmirror_cache_bytes', 'Bytes of v2 content held, by kind (blob, manifest), as the metadata records them.', 'blobBytes', 'manifestBytes');
    cacheGauges('regmirror_cache_objects', 'v2 blobs and manifests held, by kind (blob, manifest).', 'blobs', 'manifests');
    new Gauge({
      name: 'regmirror_send_buffer_bytes',
      help: 'Memory reserved for sending responses (cached blob buffers, fill windows, reader queues); limits.sendBuffers bounds what is granted large.',
      registers: [this.registry],
      collect() {
        this.set(sendBufferBytes?.() ?? 0);
      },
    });
  }
}
