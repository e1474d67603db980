// Referrers lists of mirrored repositories: from the upstream's referrers API (cached as a document, fresh as long as
// a tag, served stale when the upstream fails), else from the referrers tag through the mirror's own tag path, as
// clients of a registry without the API do. Whether an upstream has the API is remembered for a while.

import type { Digest } from '../oci/digest.js';
import { nextLinkTarget } from '../oci/link-header.js';
import { MAX_MANIFEST_BYTES, MediaType } from '../oci/manifest.js';
import { parseReferrersIndex, referrersIndex, referrersTag, type ReferrerDescriptor } from '../oci/referrers.js';
import type { MetadataStore } from '../meta/metadata-store.js';
import { BoundedCache } from '../registry/bounded-cache.js';
import { RegistryError } from '../registry/errors.js';
import { SingleFlight } from '../flight/single-flight.js';
import { headerValue, type UpstreamResponse } from '../upstream/fetcher.js';
import { freshnessOf, isUpstreamOutage } from './freshness.js';
import type { ManifestAnswer, ReferrersAnswer } from '../registry/content-service.js';
import type { UpstreamClient } from './upstream-client.js';
import type { Target, Upstream } from './upstream-router.js';

export interface ReferrersSources {
  /** The mirror's manifest by tag: cached with the tag's freshness, revalidated, served stale when the upstream fails. */
  manifestByTag(target: Target, tag: string): Promise<ManifestAnswer>;
  /** Whether the mirror holds a tag of the repository (however old). */
  isTagCached(target: Target, tag: string): Promise<boolean>;
  documents: Pick<MetadataStore, 'getDocument' | 'putDocument' | 'deleteDocument'>;
  log: { warn(fields: object, message: string): void };
  now: () => number;
  /**
   * Asks the upstream as the only node of a cluster asking this question; when another node asked it meanwhile,
   * afterOther looks again (Mirror.askOnce). Without a cluster: ask.
   */
  askOnce<T>(question: string, ask: () => Promise<T>, afterOther: () => Promise<T>): Promise<T>;
}

/** How long an upstream's having (or not having) the referrers API is believed before it is asked again. */
export const API_VERDICT_TTL_MS = 15 * 60_000;
/** Read of a 404's body, to tell "no such repository" from "no such API": an error body is small. */
const NOT_FOUND_BODY_BYTES = 64 * 1024;
/** Pages of an upstream's list followed (its Link rel="next"); all of them together within MAX_MANIFEST_BYTES. */
const MAX_PAGES = 16;
const EMPTY_LISTS = 10_000;

interface CachedList {
  referrers: ReferrerDescriptor[];
  fetchedAt: number;
  /** In the database (else an empty list remembered in memory). */
  stored: boolean;
}

/** What the upstream's referrers API said: a list, no such API, or no such repository (which says nothing of the API). */
type ApiAnswer = { kind: 'listed'; referrers: ReferrerDescriptor[] } | { kind: 'no-api' } | { kind: 'unknown-repository' };

export class MirroredReferrers {
  /** Lists being asked of an upstream, by document key. */
  private readonly flights = new SingleFlight<string, ReferrersAnswer>();
  /**
   * Empty lists the API gave, by document key, with when: kept in memory, not in the database, so that asking for
   * the referrers of made-up digests grows nothing on disk; at most EMPTY_LISTS of them, the least recently asked go.
   */
  private readonly emptyLists = new BoundedCache<string, number>(EMPTY_LISTS, () => 1);
  /** By upstream registry: whether its referrers API answered, and until when that is believed. */
  private readonly verdicts = new Map<string, { hasApi: boolean; until: number }>();

  constructor(private readonly sources: ReferrersSources) {}

  async list(upstream: Upstream, target: Target, subject: Digest): Promise<ReferrersAnswer> {
    const key = documentKey(target, subject);
    /** The cached list, fresh or not; a fresh one is the answer. */
    const look = async (): Promise<{ cached: CachedList | undefined; staleAllowed: boolean; hit: ReferrersAnswer | undefined }> => {
      const cached = await this.cachedList(key);
      const freshness = freshnessOf(upstream.settings, cached?.fetchedAt, this.sources.now());
      return { cached, staleAllowed: freshness.staleAllowed, hit: cached !== undefined && freshness.fresh ? { referrers: cached.referrers, cache: 'hit' } : undefined };
    };
    const first = await look();
    if (first.hit !== undefined) return first.hit;
    return this.flights.run(key, () =>
      this.sources.askOnce(
        `referrers:${key}`,
        () => this.ask(upstream, target, subject, key, first.cached, first.staleAllowed),
        async () => {
          // Another node asked meanwhile: its list is in the database now (an empty one is in its memory only).
          const again = await look();
          return again.hit ?? this.ask(upstream, target, subject, key, again.cached, again.staleAllowed);
        },
      ),
    );
  }

  /** Asks the upstream's referrers API (or, without one, the referrers tag); a cached list covers an outage while staleAllowed. */
  private async ask(upstream: Upstream, target: Target, subject: Digest, key: string, cached: CachedList | undefined, staleAllowed: boolean): Promise<ReferrersAnswer> {
    const registry = upstream.settings.registry;
    const hasApi = this.hasApi(registry);
    if (hasApi !== false) {
      let answer: ApiAnswer;
      try {
        answer = await this.fromApi(upstream.client, target, subject);
      } catch (error) {
        if (!isUpstreamOutage(error)) throw error;
        if (cached !== undefined && staleAllowed) {
          this.sources.log.warn({ upstream: registry, repository: target.name, subject, err: (error as Error).message }, 'serving stale referrers');
          return { referrers: cached.referrers, cache: 'stale' };
        }
        // Not known to have the API (not asked within API_VERDICT_TTL_MS, or since a restart): a referrers tag cached
        // before may answer, stale if need be. Asked of the upstream instead, its 404 would list nothing where the API
        // may list much.
        if (hasApi === true || !(await this.sources.isTagCached(target, referrersTag(subject)))) throw error;
        return this.fromTag(target, subject);
      }
      if (answer.kind === 'listed') {
        this.remember(registry, true);
        await this.keep(key, answer.referrers, cached);
        return { referrers: answer.referrers, cache: 'miss' };
      }
      if (answer.kind === 'no-api') this.remember(registry, false);
    }
    return this.fromTag(target, subject);
  }

  /**
   * Asks the upstream's referrers API, unfiltered (one cached list serves every filter), following its pages. A 404 or
   * 405 is no such API, unless the 404 names an unknown repository or manifest: a registry with the API says that too.
   */
  private async fromApi(client: UpstreamClient, target: Target, subject: Digest): Promise<ApiAnswer> {
    const firstPage = `/v2/${target.name}/referrers/${subject}`;
    const referrers: ReferrerDescriptor[] = [];
    let path = firstPage;
    let room = MAX_MANIFEST_BYTES;
    for (let page = 0; page < MAX_PAGES; page += 1) {
      const response = await client.send({ method: 'GET', path, repository: target.name, kind: 'referrers', headers: { accept: MediaType.ociIndex }, document: true });
      if (page === 0 && (response.status === 404 || response.status === 405)) {
        return (await namesUnknownContent(client, response)) ? { kind: 'unknown-repository' } : { kind: 'no-api' };
      }
      if (response.status !== 200) {
        await response.body.dump();
        throw response.status === 404
          ? new RegistryError('UPSTREAM_UNAVAILABLE', { message: `upstream ${client.wireName} lost a page of its referrers list` })
          : client.errorFor(response, 'MANIFEST_UNKNOWN');
      }
      const bytes = await client.readBody(response, 'referrers', room);
      room -= bytes.length;
      const parsed = parseReferrersIndex(bytes, headerValue(response.headers['content-type']));
      if (!parsed.ok) throw new RegistryError('UPSTREAM_UNAVAILABLE', { message: `upstream ${client.wireName} sent a referrers list that is not valid: ${parsed.reason}` });
      referrers.push(...parsed.referrers);
      const next = nextPage(headerValue(response.headers.link), firstPage);
      if (next.kind === 'last') return { kind: 'listed', referrers };
      if (next.kind === 'elsewhere') {
        this.sources.log.warn({ upstream: client.registry, repository: target.name, subject, pages: page + 1 }, 'referrers list links to a next page elsewhere: listed as far as it went');
        return { kind: 'listed', referrers };
      }
      path = next.path;
    }
    throw new RegistryError('UPSTREAM_UNAVAILABLE', { message: `upstream ${client.wireName} pages its referrers list beyond ${MAX_PAGES} pages` });
  }

  /** What the upstream said last about its referrers API, while that is believed; undefined when it is to be asked. */
  private hasApi(registry: string): boolean | undefined {
    const verdict = this.verdicts.get(registry);
    if (verdict === undefined || verdict.until <= this.sources.now()) return undefined;
    return verdict.hasApi;
  }

  private remember(registry: string, hasApi: boolean): void {
    this.verdicts.set(registry, { hasApi, until: this.sources.now() + API_VERDICT_TTL_MS });
  }

  private async cachedList(key: string): Promise<CachedList | undefined> {
    const emptySince = this.emptyLists.get(key);
    if (emptySince !== undefined) return { referrers: [], fetchedAt: emptySince, stored: false };
    const document = await this.sources.documents.getDocument(key);
    if (document === undefined) return undefined;
    // Written by this module from a list it had validated; anything else (a damaged row) is as if not cached.
    const parsed = parseReferrersIndex(document.body, MediaType.ociIndex);
    return parsed.ok ? { referrers: parsed.referrers, fetchedAt: document.fetchedAt, stored: true } : undefined;
  }

  /** Caches a list the API gave: an empty one in memory (the stored one it replaces deleted), any other stored. */
  private async keep(key: string, referrers: ReferrerDescriptor[], before: CachedList | undefined): Promise<void> {
    const now = this.sources.now();
    if (referrers.length > 0) {
      this.emptyLists.delete(key);
      await this.sources.documents.putDocument(key, Buffer.from(referrersIndex(referrers)), now);
      return;
    }
    this.emptyLists.set(key, now);
    if (before?.stored === true) await this.sources.documents.deleteDocument(key);
  }

  /**
   * The list as a registry without the API keeps it: the index its clients push to the referrers tag. No such tag: no
   * referrers; a tag that is no OCI index: none either (the spec's advice to clients).
   */
  private async fromTag(target: Target, subject: Digest): Promise<ReferrersAnswer> {
    const tag = referrersTag(subject);
    let answer: ManifestAnswer;
    try {
      answer = await this.sources.manifestByTag(target, tag);
    } catch (error) {
      if (error instanceof RegistryError && error.code === 'MANIFEST_UNKNOWN') return { referrers: [], cache: 'miss' };
      throw error;
    }
    const parsed = parseReferrersIndex(answer.manifest.bytes, answer.manifest.mediaType);
    if (!parsed.ok) {
      this.sources.log.warn({ repository: target.name, tag, reason: parsed.reason }, 'referrers tag is not a referrers list: listed as none');
      return { referrers: [], cache: answer.cache };
    }
    return { referrers: parsed.referrers, cache: answer.cache };
  }
}

/** The document a repository's referrers list of a subject is cached as. */
function documentKey(target: Target, subject: Digest): string {
  return `v2/referrers/${target.registry}/${target.name}@${subject}`;
}

/** Whether a 404's body is an OCI error naming an unknown repository or manifest (its read failing says no). */
async function namesUnknownContent(client: UpstreamClient, response: UpstreamResponse): Promise<boolean> {
  if (response.status !== 404) {
    await response.body.dump();
    return false;
  }
  let body: unknown;
  try {
    body = JSON.parse((await client.readBody(response, 'referrers', NOT_FOUND_BODY_BYTES)).toString('utf8'));
  } catch {
    return false;
  }
  const errors = (body as { errors?: unknown } | null)?.errors;
  return Array.isArray(errors) && errors.some((entry) => ['NAME_UNKNOWN', 'MANIFEST_UNKNOWN'].includes((entry as { code?: unknown } | null)?.code as string));
}

/**
 * The next page an upstream's `Link: <…>; rel="next"` points at, as a path of this list with the upstream's query:
 * only its path and query are used, always on the upstream's own origin (a link cannot send the mirror elsewhere).
 */
function nextPage(link: string | undefined, firstPage: string): { kind: 'last' } | { kind: 'elsewhere' } | { kind: 'page'; path: string } {
  const target = nextLinkTarget(link);
  if (target === undefined) return { kind: 'last' };
  let url: URL;
  try {
    url = new URL(target, `http://upstream.invalid${firstPage}`);
  } catch {
    return { kind: 'elsewhere' };
  }
  // The upstream's own path may carry the prefix its URL has: the list's path is what it ends with.
  if (!url.pathname.endsWith(firstPage) || url.search === '') return { kind: 'elsewhere' };
  return { kind: 'page', path: firstPage + url.search };
}
