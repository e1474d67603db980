// Picks the upstream a request is for, in order: containerd's `?ns=<registry>`, a path prefix naming a
// registry or an alias (/v2/ghcr.io/owner/img/…), the Host the request was sent to, else the default
// (the first configured: what dockerd and podman mirrors reach). Docker Hub names get `library/`.

import { dockerHubName, isDockerHub } from '../oci/name.js';
import { RegistryError } from '../registry/errors.js';
import type { UpstreamClient, UpstreamClientOptions } from './upstream-client.js';

/** One upstream as configured: how clients reach it, how to talk to it, how long its tags stay fresh. */
export interface UpstreamSettings extends UpstreamClientOptions {
  /** Path prefixes besides the registry name that route to it. */
  aliases: string[];
  /** Host names (without port, lower case) whose requests route to it. */
  hosts: string[];
  tagFreshnessMs: number;
  maxStalenessMs: number;
  /** With auth: anonymous callers get nothing cached from it, whatever the rules for anonymous say. */
  private: boolean;
}

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
  /** The name as the client wrote it (with any path prefix), for what goes back to the client. */
  clientName: string;
  /** How the upstream was chosen. */
  via: 'namespace' | 'prefix' | 'host' | 'default' | 'none';
}

export interface RequestHints {
  /** containerd's `ns` query parameter. */
  namespace?: string | undefined;
  /** The Host header. */
  host?: string | undefined;
}

/** Docker Hub's other names, as clients may write them in a path prefix or `ns`. */
const DOCKER_HUB_NAMES = ['docker.io', 'index.docker.io', 'registry-1.docker.io'];

export class UpstreamRouter {
  private readonly byName = new Map<string, Upstream>();
  private readonly byHost = new Map<string, Upstream>();

  constructor(private readonly upstreams: readonly Upstream[]) {
    for (const upstream of upstreams) {
      const { registry, aliases, hosts } = upstream.settings;
      const names = isDockerHub(registry) ? [registry, ...DOCKER_HUB_NAMES] : [registry];
      for (const name of [...names, ...aliases]) if (!this.byName.has(name)) this.byName.set(name, upstream);
      for (const host of hosts) this.byHost.set(host, upstream);
    }
  }

  get all(): readonly Upstream[] {
    return this.upstreams;
  }

  /** The default upstream's registry name ('' for a plain registry): its repositories need no prefix. */
  get defaultRegistry(): string {
    return this.upstreams[0]?.settings.registry ?? '';
  }

  /** Whether a registry name (as containerd's `ns` gives it) is one this mirror mirrors. */
  mirrors(registry: string): boolean {
    return this.byName.has(registry);
  }

  /** The target for a repository name as a client sent it. */
  pick(clientName: string, hints: RequestHints = {}): Target {
    if (hints.namespace !== undefined) {
      const upstream = this.byName.get(hints.namespace);
      if (upstream === undefined) throw new RegistryError('NAME_UNKNOWN', { message: `registry ${hints.namespace} is not mirrored here` });
      return this.target(upstream, clientName, clientName, 'namespace');
    }
    const slash = clientName.indexOf('/');
    if (slash > 0) {
      const upstream = this.byName.get(clientName.slice(0, slash));
      if (upstream !== undefined) return this.target(upstream, clientName.slice(slash + 1), clientName, 'prefix');
    }
    const host = hints.host === undefined ? undefined : hostWithoutPort(hints.host);
    const byHost = host === undefined ? undefined : this.byHost.get(host);
    if (byHost !== undefined) return this.target(byHost, clientName, clientName, 'host');
    const fallback = this.upstreams[0];
    if (fallback === undefined) return { upstream: undefined, registry: '', name: clientName, clientName, via: 'none' };
    return this.target(fallback, clientName, clientName, 'default');
  }

  private target(upstream: Upstream, name: string, clientName: string, via: Target['via']): Target {
    const registry = upstream.settings.registry;
    return { upstream, registry, name: isDockerHub(registry) ? dockerHubName(name) : name, clientName, via };
  }
}

function hostWithoutPort(host: string): string {
  const lower = host.toLowerCase();
  if (lower.startsWith('[')) return lower.slice(0, lower.indexOf(']') + 1);
  const colon = lower.lastIndexOf(':');
  return colon === -1 ? lower : lower.slice(0, colon);
}
