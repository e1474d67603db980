// Which content service serves a repository name: hosted (pushed here, served from here alone) or mirrored
// (read-only, from its upstream through the cache). The HTTP layer asks this and knows nothing else of the two.

import { globToRegExp } from '../auth/access-rules.js';
import type { Digest } from '../oci/digest.js';
import type { Page, RepositoryRef } from '../meta/metadata-store.js';
import type { BlobAnswer, BlobDelivery, ContentService, ManifestAnswer, Reference, ReferrersAnswer, TagList } from '../registry/content-service.js';
import type { HostedRepositories } from '../registry/hosted.js';
import { repositoryOf, type Mirror } from './mirror.js';
import type { RequestHints, Target, UpstreamRouter } from './upstream-router.js';

/** A repository as a request names it: the service for it, and how the access rules and the catalog name it. */
export interface ResolvedRepository {
  service: ContentService;
  /** The name the access rules and the catalog use: bare for hosted repositories and the default upstream's. */
  catalogName: string;
  /** Content from an upstream marked private (with auth, served only to callers a rule names). */
  private: boolean;
  /** The upstream's registry name ('' for a hosted repository), for the access log. */
  registry: string;
}

export class RepositoryPolicy {
  private readonly hostedPatterns: RegExp[];

  /** `hosted`: globs over repository names (`team/**`); with no upstream at all, every repository is hosted. */
  constructor(
    private readonly router: UpstreamRouter,
    private readonly mirror: Mirror,
    private readonly hosted: HostedRepositories,
    hostedGlobs: readonly string[],
  ) {
    this.hostedPatterns = hostedGlobs.map(globToRegExp);
  }

  /**
   * Hosted when the name matches a hosted glob (or nothing is mirrored), unless the request names an upstream with
   * containerd's `ns`; otherwise the upstream the router picks.
   */
  resolve(name: string, hints: RequestHints): ResolvedRepository {
    if (this.isHosted(name, hints)) {
      return { service: this.hosted.repository(name), catalogName: name, private: false, registry: '' };
    }
    const target = this.router.pick(name, hints);
    return { service: new MirroredRepository(this.mirror, target), catalogName: catalogNameOf(target, this.router.defaultRegistry), private: target.upstream?.settings.private === true, registry: target.registry };
  }

  /** Where a repository's content is kept, as resolve() would serve it (a mount's source). */
  repositoryOf(name: string, hints: RequestHints): RepositoryRef {
    return this.resolve(name, hints).service.repository;
  }

  private isHosted(name: string, hints: RequestHints): boolean {
    if (this.router.all.length === 0) return true;
    if (hints.namespace !== undefined && this.router.mirrors(hints.namespace)) return false;
    return this.hostedPatterns.some((pattern) => pattern.test(name));
  }
}

/** A mirrored repository: the mirror's content for one target; no writes (a mirror is read-only for what it mirrors). */
class MirroredRepository implements ContentService {
  readonly writes = undefined;
  readonly repository: RepositoryRef;

  constructor(
    private readonly mirror: Mirror,
    private readonly target: Target,
  ) {
    this.repository = repositoryOf(target);
  }

  blob(digest: Digest, method: 'GET' | 'HEAD', rangeHeader: string | undefined, delivery: BlobDelivery): Promise<BlobAnswer> {
    return this.mirror.blob(this.target, digest, method, rangeHeader, delivery);
  }

  manifest(reference: Reference, accept: string | string[] | undefined): Promise<ManifestAnswer> {
    return this.mirror.manifest(this.target, reference, accept);
  }

  tags(page: Page): Promise<TagList> {
    return this.mirror.tags(this.target, this.target.clientName, page);
  }

  referrers(subject: Digest): Promise<ReferrersAnswer> {
    return this.mirror.referrers(this.target, subject);
  }
}

/** The repository as the rules and the catalog name it: the default upstream's bare, any other's under its registry. */
export function catalogNameOf(target: Target, defaultRegistry: string): string {
  return target.registry === defaultRegistry || target.registry === '' ? target.name : `${target.registry}/${target.name}`;
}
