// The one place that decides how long an upstream answer that can change (a tag, a referrers list) is served from
// the cache without asking the upstream, and how long it may still be served when the upstream fails.

import { RegistryError } from '../registry/errors.js';
import type { UpstreamSettings } from './upstream-router.js';

export interface Freshness {
  /** Served without asking the upstream. */
  fresh: boolean;
  /** May be served when the upstream fails (stale-if-error). */
  staleAllowed: boolean;
}

/** The freshness of an answer fetched at fetchedAt (ms since epoch; undefined when nothing is cached). */
export function freshnessOf(settings: Pick<UpstreamSettings, 'tagFreshnessMs' | 'maxStalenessMs'>, fetchedAt: number | undefined, now: number): Freshness {
  const age = fetchedAt === undefined ? Number.POSITIVE_INFINITY : now - fetchedAt;
  return { fresh: age < settings.tagFreshnessMs, staleAllowed: age <= settings.maxStalenessMs };
}

/** Failures that stale content may cover: the upstream is unreachable, slow, failing, rate-limiting, or its circuit is open. */
export function isUpstreamOutage(error: unknown): boolean {
  return (
    error instanceof RegistryError &&
    (error.code === 'UPSTREAM_UNAVAILABLE' || error.code === 'UPSTREAM_TIMEOUT' || error.code === 'TOOMANYREQUESTS' || error.code === 'UNAVAILABLE')
  );
}
