// Assembles a running regmirror from its settings: storage, metadata, upstream clients, the mirror and
// the HTTP server; and takes it apart again on shutdown without leaving a partial object behind.

import { mkdir } from 'node:fs/promises';
import { CacheEvictor } from './cache/evictor.js';
import { GarbageCollector } from './cache/garbage-collector.js';
import { Prefetcher } from './cache/prefetcher.js';
import path from 'node:path';
import { pino, type Logger } from 'pino';
import type { Settings } from './config/load.js';
import { InFlightRequests } from './http/in-flight.js';
import { listen } from './http/listen.js';
import { buildAdminServer, buildServer } from './http/server.js';
import { httpsServerOptions, TlsReloader } from './http/tls.js';
import { readTlsFiles } from './config/tls-files.js';
import { openMetadataStore } from './meta/open-metadata-store.js';
import { Mirror } from './mirror/mirror.js';
import { UpstreamClient } from './mirror/upstream-client.js';
import { UpstreamRouter, type Upstream } from './mirror/upstream-router.js';
import { BufferBudget } from './memory/buffer-budget.js';
import { LocalRegistry } from './registry/local-registry.js';
import { HostedRepositories } from './registry/hosted.js';
import { UploadSessions } from './registry/uploads.js';
import { RepositoryPolicy } from './mirror/repository-policy.js';
import { DataDirectoryLock } from './store/data-directory-lock.js';
import { V1Layout } from './store/layout.js';
import type { ObjectStore } from './store/object-store.js';
import { openObjectStore } from './store/open-object-store.js';
import { Metrics } from './telemetry/metrics.js';
import type { FetchTimeouts } from './upstream/fetcher.js';
import { V1Mirror } from './v1/mirror.js';
import { V1Registry } from './v1/registry.js';
import { V1SourceClient } from './v1/source-client.js';
import type { MetadataStore } from './meta/metadata-store.js';
import type { Digest } from './oci/digest.js';
import type { Cluster } from './cluster/cluster.js';

export interface RunningMirror {
  /** host:port actually bound. */
  address: { host: string; port: number };
  /** Where /metrics and /_regmirror/* are served, when admin.listen is set. */
  adminAddress?: { host: string; port: number };
  /** Reads again what may change under a running process (SIGHUP): the TLS files. */
  reload(): void;
  close(): Promise<void>;
}

export function createLogger(level: Settings['logLevel']): Logger {
  return pino({
    level,
    base: undefined,
    redact: { paths: ['req.headers.authorization', 'headers.authorization', '*.password', 'password', 'token'], censor: '[redacted]' },
  });
}

export async function startMirror(settings: Settings, logger: Logger = createLogger(settings.logLevel)): Promise<RunningMirror> {
  // Before anything else: files that changed since the settings were loaded fail the start as a configuration error.
  const tlsFiles = settings.tls;
  const tlsMaterial = tlsFiles && readTlsFiles(tlsFiles);
  const tls = tlsMaterial && httpsServerOptions(tlsMaterial, settings.timeouts.clientIdle);
  const dataDir = path.resolve(settings.dataDir);
  await mkdir(dataDir, { recursive: true });
  // Before anything touches the directory: another process's fills are in tmp/. The kernel frees it if we die.
  const lock = await DataDirectoryLock.acquire(dataDir, 'regmirror serve');
  const budget = new BufferBudget(settings.limits.sendBuffers);
  let opened;
  try {
    opened = await openObjectStore(settings.storage, dataDir, budget);
  } catch (error) {
    await lock.release();
    throw error;
  }
  const { store } = opened;
  // In a cluster the bucket's unfinished uploads may be other nodes' commits in progress: GC removes those abandoned.
  const removed = settings.cluster === undefined ? await store.removeStaleTemporaries() : 0;
  if (removed > 0) logger.info({ removed }, 'removed temporaries left by an earlier run');
  // With PostgreSQL the lock still guards the local files (fills in tmp/, the fs store); in a cluster the nodes see
  // each other in the database (cluster/cluster.ts).
  let meta: MetadataStore;
  try {
    meta = await openMetadataStore(settings.metadata, dataDir, logger);
  } catch (error) {
    await lock.release();
    throw error;
  }
  // Loaded only when configured: a single node does not carry it.
  let cluster: Cluster | undefined;
  if (settings.cluster !== undefined && settings.metadata.driver === 'postgres') {
    const { Cluster: ClusterClass } = await import('./cluster/cluster.js');
    try {
      cluster = await ClusterClass.open({
        url: settings.metadata.url,
        password: settings.metadata.password,
        statementTimeoutMs: settings.metadata.statementTimeoutMs,
        advertise: settings.cluster.advertise,
        secret: settings.cluster.secret,
        isStored: async (digest) => (await meta.getBlob(digest)) !== undefined,
        waitMs: settings.timeouts.fill,
        log: logger,
        // Under mutual TLS the other nodes want a client certificate too: this node's own.
        ...(tlsMaterial?.clientCA === undefined ? {} : { peerCertificate: { cert: tlsMaterial.certificate, key: tlsMaterial.key } }),
      });
    } catch (error) {
      await meta.close();
      await lock.release();
      throw error;
    }
  }
  const metrics = new Metrics({ sendBufferBytes: () => budget.used, cacheTotals: () => meta.totals(), cacheTotalsByRegistry: () => meta.totalsByRegistry() });
  const fetchTimeouts = fetchTimeoutsOf(settings.timeouts);
  const upstreams: Upstream[] = settings.upstreams.map((upstream) => ({
    settings: upstream,
    client: new UpstreamClient(
      upstream,
      fetchTimeouts,
      { failureThreshold: settings.circuit.failureThreshold, backoffBaseMs: settings.circuit.backoffBase, backoffMaxMs: settings.circuit.backoffMax },
      metrics,
      logger,
      // A cluster shares circuits: a 429 seen by one node fails fast on all (within CIRCUIT_WATCH_MS).
      cluster && { opened: (opening): void => void cluster?.shareOpening(opening) },
    ),
  }));
  cluster?.watchCircuits((opening) => upstreams.find((upstream) => upstream.settings.registry === opening.registry)?.client.adoptOpening(opening.reason, opening.openUntil, opening.cause));
  const router = new UpstreamRouter(upstreams);
  const local = new LocalRegistry(store, meta, { metrics, log: logger });
  if (cluster !== undefined) local.coordinateWith(cluster);
  // The prefetcher is made once the mirror is (it pulls through it); these are called only after that.
  const pinned = (): ReadonlySet<Digest> => prefetcher.pinnedRoots();
  const evictor = new CacheEvictor(local, settings.cacheBound, metrics, { dataDir, pinned, log: logger });
  // A fill writes its temporary all along, an upload session whenever a chunk comes: one untouched for longer than
  // a fill may last and an upload session may idle is abandoned.
  const abandonedTemporaryMs = Math.max(settings.gc.graceMs, settings.timeouts.fill, settings.timeouts.uploadIdle);
  const collector = new GarbageCollector(local, { graceMs: settings.gc.graceMs, pinned, abandonedTemporaryMs, metrics, log: logger });
  const collectGarbage = async (request: { dryRun: boolean }): Promise<object> => collector.run(request);
  const mirror = new Mirror(
    local,
    metrics,
    {
      fillTimeoutMs: settings.timeouts.fill,
      notFoundTtlMs: settings.notFoundTtlMs,
      budget,
      onStorageFull: () => evictor.soon(),
      keepsStale: (repository, tag): boolean => prefetcher.pinsTag(repository, tag),
      confirmHolding: settings.auth !== undefined,
      ...(cluster === undefined ? {} : { cluster }),
    },
    logger,
  );
  const prefetcher: Prefetcher = new Prefetcher(mirror, local, router, settings.prefetch, metrics, logger);
  const uploads = new UploadSessions(
    local,
    { maxBytes: settings.limits.uploadSize, maxSessions: settings.limits.uploadSessions, idleMs: settings.timeouts.uploadIdle },
    cluster?.uploadSessionPrefix,
  );
  // In a cluster a session's requests may reach any node: the others forward them to the one holding it.
  const hosted = new HostedRepositories(local, cluster?.uploadsAcross(uploads, settings.timeouts.uploadIdle) ?? uploads, { deleteEnabled: settings.hosted.deleteEnabled, mountWithoutSource: settings.auth === undefined });
  const policy = new RepositoryPolicy(router, mirror, hosted, settings.hosted.globs);
  // Loaded only when configured: an instance without auth does not carry its modules (jose, bcryptjs).
  const authSetup = settings.auth === undefined ? undefined : await import('./http/auth-setup.js');
  const gate = settings.auth === undefined || authSetup === undefined ? undefined : await authSetup.createAuthGate(settings.auth, dataDir, policy, logger);
  const v1 = settings.v1.enabled ? createV1Mirror(settings, store, meta, metrics, budget, logger, cluster) : undefined;
  let accepting = true;
  // Registry names only: an upstream's URL may be an internal address.
  const status = async (): Promise<object> => ({
    upstreams: upstreams.map((upstream) => ({ registry: upstream.settings.registry, ...upstream.client.status() })),
    cache: { ...(await meta.totals()), byUpstream: await meta.totalsByRegistry(), maxSize: settings.cacheBound.maxSizeBytes ?? null, lastEviction: evictor.lastReport ?? null, lastGc: collector.lastReport ?? null },
    prefetch: prefetcher.status(),
    ...(cluster === undefined ? {} : { cluster: await cluster.status() }),
  });
  const v1Routes = v1 && {
    mirror: v1,
    standalone: settings.v1.standalone,
    nginxXAccelRedirect: settings.v1.nginxXAccelRedirect,
    guard: gate && authSetup?.createV1Guard(gate, v1),
  };
  const v2Routes = { xAccelRedirect: settings.offload.xAccelRedirect, redirect: settings.storage.driver === 's3' && settings.storage.s3.redirectTtlMs !== undefined };
  const ready = (): boolean => accepting;
  const inFlight = new InFlightRequests();
  const adminListen = settings.adminListen;
  const app = buildServer({
    content: { policy, catalog: (page) => mirror.catalog(page, router.defaultRegistry) },
    metrics,
    logger,
    ready,
    status,
    collectGarbage,
    adminRoutes: adminListen === undefined,
    clientIdleMs: settings.timeouts.clientIdle,
    inFlight,
    v1: v1Routes,
    v2: v2Routes,
    gate,
    tls,
    ...(cluster === undefined || settings.cluster === undefined ? {} : { cluster: { secret: settings.cluster.secret, fills: mirror, uploads } }),
  });
  const admin = adminListen === undefined ? undefined : buildAdminServer({ metrics, logger, ready, status, collectGarbage, tls });
  // The admin listener takes the registry's certificate (and client CA): one set of files, one reload.
  const tlsReloader = tlsFiles && tlsMaterial && new TlsReloader(tlsFiles, tlsMaterial, logger);
  for (const server of admin === undefined ? [app.server] : [app.server, admin.server]) tlsReloader?.serve(server);
  tlsReloader?.watch();
  const address = await listen(app, settings.listen, { fairAccept: { warn: (error) => logger.warn({ err: error }, 'new connections are accepted one per event-loop turn') } });
  const adminAddress = admin === undefined || adminListen === undefined ? undefined : await listen(admin, adminListen);
  // Pinned images are known before eviction first looks (from the tags cached), then fetched in the background.
  await prefetcher.start();
  evictor.start();
  collector.start(settings.gc.intervalMs);
  logger.info({ address, adminAddress, dataDir, storage: opened.location, metadata: settings.metadata.driver, upstreams: settings.upstreams.map((u) => ({ registry: u.registry, url: u.url })) }, 'regmirror listening');

  let closing: Promise<void> | undefined;
  const close = (): Promise<void> => {
    closing ??= (async () => {
      // Drain: still listening (a probe of /readyz gets its 503, so load balancers turn away) until the requests in
      // flight are done or the grace is over; then stop listening, and close what is still open when the grace ends.
      accepting = false;
      tlsReloader?.close();
      const graceEnds = Date.now() + settings.timeouts.shutdownGrace;
      await inFlight.idleWithin(settings.timeouts.shutdownGrace);
      const grace = setTimeout(
        () => {
          logger.warn({ graceMs: settings.timeouts.shutdownGrace }, 'shutdown grace over: closing open connections');
          app.server.closeAllConnections();
        },
        Math.max(0, graceEnds - Date.now()),
      );
      try {
        await app.close();
      } finally {
        clearTimeout(grace);
      }
      await admin?.close();
      prefetcher.stop();
      await mirror.abortFills(new Error('shutting down'));
      await uploads.close();
      await cluster?.close();
      await evictor.close();
      await collector.close();
      await v1?.close(new Error('shutting down'));
      await Promise.all(upstreams.map((upstream) => upstream.client.close()));
      await meta.close();
      opened.close();
      await lock.release();
      logger.info('regmirror stopped');
    })();
    return closing;
  };
  const reload = (): void => {
    if (tlsReloader === undefined) logger.info('reload: nothing to reload (no TLS files)');
    else tlsReloader.reload('SIGHUP');
  };
  return { address, ...(adminAddress === undefined ? {} : { adminAddress }), reload, close };
}

function fetchTimeoutsOf(timeouts: Settings['timeouts']): FetchTimeouts {
  return { connectMs: timeouts.connect, responseHeadersMs: timeouts.responseHeaders, bodyIdleMs: timeouts.bodyIdle, documentMs: timeouts.manifest };
}

/**
 * The v1 service for the settings: a plain v1 registry (writable), or, on an instance that mirrors (a v1 source,
 * or any v2 upstream), a read-only one that mirrors `v1.mirroring.source` when it is set.
 */
function createV1Mirror(settings: Settings, store: ObjectStore, meta: MetadataStore, metrics: Metrics, budget: BufferBudget, log: Logger, cluster: Cluster | undefined): V1Mirror {
  const mirroring = settings.v1.mirroring;
  const source = mirroring && new V1SourceClient(mirroring, fetchTimeoutsOf(settings.timeouts), metrics);
  const options = {
    tagsCacheTtlMs: mirroring?.tagsCacheTtlMs ?? 0,
    fillTimeoutMs: settings.timeouts.fill,
    readOnly: mirroring !== undefined || settings.upstreams.length > 0,
    maxLayerBytes: settings.limits.uploadSize,
    budget,
    ...(cluster === undefined ? {} : { cluster }),
  };
  return new V1Mirror(new V1Registry(store, new V1Layout(settings.v1.storagePrefix)), source, meta, metrics, options, log);
}
