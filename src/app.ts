// Assembles a running regmirror from its settings: storage, metadata, upstream clients, the mirror and
// the HTTP server; and takes it apart again on shutdown without leaving a partial object behind.

import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import { pino, type Logger } from 'pino';
import type { Settings } from './config/load.js';
import { listen } from './http/listen.js';
import { buildServer } from './http/server.js';
import { SQLITE_FILE, SqliteMetadataStore } from './meta/sqlite-store.js';
import { Mirror } from './mirror/mirror.js';
import { UpstreamClient } from './mirror/upstream-client.js';
import { UpstreamRouter, type Upstream } from './mirror/upstream-router.js';
import { LocalRegistry } from './registry/local-registry.js';
import { DataDirectoryLock } from './store/data-directory-lock.js';
import { FsObjectStore } from './store/fs-store.js';
import { Metrics } from './telemetry/metrics.js';
import { createV1Mirror } from './v1/mirror.js';

export interface RunningMirror {
  /** host:port actually bound. */
  address: { host: string; port: number };
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
  const dataDir = path.resolve(settings.dataDir);
  await mkdir(dataDir, { recursive: true });
  // Before anything touches the directory: another process's fills are in tmp/. The kernel frees it if we die.
  const lock = await DataDirectoryLock.acquire(dataDir, 'regmirror serve');
  const store = new FsObjectStore(dataDir);
  await store.init();
  const removed = await store.removeStaleTemporaries();
  if (removed > 0) logger.info({ removed }, 'removed temporaries left by an earlier run');
  const meta = new SqliteMetadataStore(path.join(dataDir, SQLITE_FILE));
  const metrics = new Metrics();
  const upstreams: Upstream[] = settings.upstreams.map((upstream) => ({
    settings: upstream,
    client: new UpstreamClient(
      upstream,
      settings.timeouts,
      { failureThreshold: settings.circuit.failureThreshold, backoffBaseMs: settings.circuit.backoffBase, backoffMaxMs: settings.circuit.backoffMax },
      metrics,
      logger,
    ),
  }));
  const router = new UpstreamRouter(upstreams);
  const local = new LocalRegistry(store, meta, { metrics, log: logger });
  const mirror = new Mirror(local, metrics, settings.timeouts, logger);
  const v1 = settings.v1.enabled ? createV1Mirror(settings, store, meta, metrics, logger) : undefined;
  let accepting = true;
  const status = (): object => ({
    upstreams: upstreams.map((upstream) => ({ registry: upstream.settings.registry, url: upstream.settings.url, ...upstream.client.status() })),
  });
  const v1Routes = v1 && { mirror: v1, standalone: settings.v1.standalone, nginxXAccelRedirect: settings.v1.nginxXAccelRedirect };
  const v2Routes = { xAccelRedirect: settings.offload.xAccelRedirect };
  const app = buildServer({ mirror, router, metrics, logger, ready: () => accepting, status, v1: v1Routes, v2: v2Routes });
  await listen(app, settings.listen.host, settings.listen.port);
  const bound = app.server.address();
  const address = typeof bound === 'object' && bound !== null ? { host: bound.address, port: bound.port } : { host: '', port: settings.listen.port };
  logger.info({ address, dataDir, upstreams: settings.upstreams.map((u) => ({ registry: u.registry, url: u.url })) }, 'regmirror listening');

  let closing: Promise<void> | undefined;
  const close = (): Promise<void> => {
    closing ??= (async () => {
      accepting = false;
      const grace = setTimeout(() => {
        logger.warn({ graceMs: settings.timeouts.shutdownGrace }, 'shutdown grace over: closing open connections');
        app.server.closeAllConnections();
      }, settings.timeouts.shutdownGrace);
      try {
        await app.close();
      } finally {
        clearTimeout(grace);
      }
      await mirror.abortFills(new Error('shutting down'));
      await v1?.close(new Error('shutting down'));
      await Promise.all(upstreams.map((upstream) => upstream.client.close()));
      await meta.close();
      await lock.release();
      logger.info('regmirror stopped');
    })();
    return closing;
  };
  return { address, close };
}
