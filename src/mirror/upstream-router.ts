// Picks the upstream a request is for: containerd's `?ns=<registry>`, else the default (the first
// configured). Names on Docker Hub get `library/` as Hub needs.

import type { UpstreamSettings } from '../config/load.js';
import { dockerHubName, isDockerHub } from '../oci/name.js';
import { RegistryError } from '../registry/errors.js';
import type { UpstreamClient } from './upstream-client.js';

export interface Upstream {
  settings: UpstreamSettings;
  client: UpstreamClient;
}

/** Where a request's repository lives: its upstream (none for a plain registry) and its name there. */
export interface Target {
  upstream: Upstream | undefined;
  /** The registry name the content is kept under ('' for a plain registry). */
  registry: string;
  /** The repository name on that registry, normalised (library/ on Docker Hub). */
  name: string;
}

export class UpstreamRouter {
  private readonly byRegistry = new Map<string, Upstream>();

  constructor(private readonly upstreams: readonly Upstream[]) {
    for (const upstream of upstreams) this.byRegistry.set(upstream.settings.registry, upstream);
  }

  get all(): readonly Upstream[] {
    return this.upstreams;
  }

  /** The target for a repository name as a client sent it, with containerd's `ns` if any. */
  pick(name: string, namespace: string | undefined): Target {
    const upstream = namespace === undefined ? this.upstreams[0] : this.byRegistry.get(namespace) ?? this.aliasOf(namespace);
    if (namespace !== undefined && upstream === undefined) {
      throw new RegistryError('NAME_UNKNOWN', { message: `registry ${namespace} is not mirrored here` });
    }
    if (upstream === undefined) return { upstream: undefined, registry: '', name };
    const registry = upstream.settings.registry;
    return { upstream, registry, name: isDockerHub(registry) ? dockerHubName(name) : name };
  }

  /** Docker Hub answers to several names; containerd sends `docker.io`. */
  private aliasOf(namespace: string): Upstream | undefined {
    if (!isDockerHub(namespace)) return undefined;
    return this.upstreams.find((upstream) => isDockerHub(upstream.settings.registry));
  }
}
