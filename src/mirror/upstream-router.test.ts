// UpstreamRouter.pick: ns first, then a path prefix (registry name or alias), then Host, then the default.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { RegistryError } from '../registry/errors.js';
import type { UpstreamClient } from './upstream-client.js';
import { UpstreamRouter, type Upstream, type UpstreamSettings } from './upstream-router.js';

function upstream(registry: string, extra: Partial<UpstreamSettings> = {}): Upstream {
  const settings: UpstreamSettings = {
    registry,
    wireName: registry,
    url: `https://${registry}`,
    aliases: [],
    hosts: [],
    credentials: undefined,
    trustedHosts: [],
    tagFreshnessMs: 1,
    maxStalenessMs: 1,
    private: false,
    ...extra,
  };
  // The router reads settings only; the client is never called here.
  return { settings, client: {} as UpstreamClient };
}

describe('UpstreamRouter.pick', () => {
  const hub = upstream('docker.io');
  const ghcr = upstream('ghcr.io', { aliases: ['gh'], hosts: ['ghcr.mirror.example'] });
  const quay = upstream('quay.io', { hosts: ['quay.mirror.example'] });
  const router = new UpstreamRouter([hub, ghcr, quay]);

  const cases: Array<{ what: string; name: string; namespace?: string; host?: string; registry: string; expected: string; via: string }> = [
    { what: 'default, one component', name: 'alpine', registry: 'docker.io', expected: 'library/alpine', via: 'default' },
    { what: 'default, two components', name: 'team/app', registry: 'docker.io', expected: 'team/app', via: 'default' },
    { what: 'ns', name: 'owner/img', namespace: 'ghcr.io', registry: 'ghcr.io', expected: 'owner/img', via: 'namespace' },
    { what: 'ns docker.io adds library/', name: 'alpine', namespace: 'docker.io', registry: 'docker.io', expected: 'library/alpine', via: 'namespace' },
    { what: 'ns beats prefix', name: 'ghcr.io/x', namespace: 'quay.io', registry: 'quay.io', expected: 'ghcr.io/x', via: 'namespace' },
    { what: 'prefix', name: 'ghcr.io/owner/img', registry: 'ghcr.io', expected: 'owner/img', via: 'prefix' },
    { what: 'alias prefix', name: 'gh/owner/img', registry: 'ghcr.io', expected: 'owner/img', via: 'prefix' },
    { what: 'docker.io prefix adds library/', name: 'docker.io/alpine', registry: 'docker.io', expected: 'library/alpine', via: 'prefix' },
    { what: 'registry-1.docker.io prefix', name: 'registry-1.docker.io/library/alpine', registry: 'docker.io', expected: 'library/alpine', via: 'prefix' },
    { what: 'prefix beats host', name: 'quay.io/a/b', host: 'ghcr.mirror.example', registry: 'quay.io', expected: 'a/b', via: 'prefix' },
    { what: 'host', name: 'owner/img', host: 'ghcr.mirror.example:5000', registry: 'ghcr.io', expected: 'owner/img', via: 'host' },
    { what: 'host, case-insensitive', name: 'owner/img', host: 'QUAY.mirror.example', registry: 'quay.io', expected: 'owner/img', via: 'host' },
    { what: 'unknown host: default', name: 'owner/img', host: 'other.example', registry: 'docker.io', expected: 'owner/img', via: 'default' },
    { what: 'a lone registry name is a repository', name: 'ghcr.io', registry: 'docker.io', expected: 'library/ghcr.io', via: 'default' },
  ];
  for (const c of cases) {
    it(c.what, () => {
      const target = router.pick(c.name, { namespace: c.namespace, host: c.host });
      assert.equal(target.registry, c.registry);
      assert.equal(target.name, c.expected);
      assert.equal(target.via, c.via);
      assert.equal(target.clientName, c.name);
    });
  }

  it('refuses an ns that is not mirrored', () => {
    assert.throws(() => router.pick('a/b', { namespace: 'example.com' }), (error: unknown) => error instanceof RegistryError && error.code === 'NAME_UNKNOWN');
  });

  it('is a plain registry with no upstream', () => {
    const plain = new UpstreamRouter([]);
    assert.deepEqual(plain.pick('alpine'), { upstream: undefined, registry: '', name: 'alpine', clientName: 'alpine', via: 'none' });
    assert.equal(plain.defaultRegistry, '');
  });
});
