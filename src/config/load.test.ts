// Tests for building Settings: defaults, the YAML file, REGMIRROR_* variables, flags, and the errors
// that name the bad key. The environment is always a fake object, never process.env.

import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { makeTestCa, type IssuedCertificate, type TestCa } from '../../test/support/certificates.js';
import { ConfigError } from './config-error.js';
import { loadSettings, parseListen, parseUpstreamFlag, type ConfigFlags, type ListenAddress, type Settings } from './load.js';
import type { UpstreamInput } from './schema.js';

const DEFAULT_CIRCUIT = { failureThreshold: 5, backoffBase: 1_000, backoffMax: 300_000 };
const DEFAULT_V1 = {
  enabled: true,
  standalone: true,
  mirroring: undefined,
  storagePrefix: 'v1',
  nginxXAccelRedirect: undefined,
  storageRedirect: false,
};
const DEFAULT_TIMEOUTS: Settings['timeouts'] = {
  connect: 10_000,
  responseHeaders: 30_000,
  bodyIdle: 60_000,
  manifest: 30_000,
  fill: 1_800_000,
  clientIdle: 60_000,
  shutdownGrace: 30_000,
  uploadIdle: 3_600_000,
};
const DEFAULT_LIMITS = { uploadSize: 10 * 1024 ** 3, sendBuffers: 64 * 1024 ** 2, uploadSessions: 1_000 };
const DEFAULT_CACHE_BOUND: Settings['cacheBound'] = { maxSizeBytes: undefined, minFreeSpace: { percent: 5 }, inUseWindowMs: 60_000, maxAgeMs: undefined };
const DEFAULT_GC: Settings['gc'] = { intervalMs: 3_600_000, graceMs: 3_600_000 };
const DEFAULT_PREFETCH: Settings['prefetch'] = { intervalMs: 3_600_000, platforms: [], images: [] };
const FIVE_MINUTES = 300_000;
const SEVEN_DAYS = 7 * 86_400_000;

let directory: string;
let fileCount = 0;

before(async () => {
  directory = await mkdtemp(path.join(tmpdir(), 'regmirror-config-'));
});

after(async () => {
  await rm(directory, { recursive: true, force: true });
});

/** Writes a file into the test's temporary directory and returns its path. */
async function writeTemporary(text: string, name = `config-${++fileCount}.yaml`): Promise<string> {
  const file = path.join(directory, name);
  await writeFile(file, text);
  return file;
}

/** loadSettings for regmirror's own configuration, which never warns. */
function settingsOf(flags: ConfigFlags, environment: NodeJS.ProcessEnv): Settings {
  const { settings, warnings } = loadSettings(flags, environment);
  assert.deepEqual(warnings, []);
  return settings;
}

/** Asserts that fn throws a ConfigError whose message contains every fragment. */
function assertConfigError(fn: () => unknown, ...fragments: string[]): void {
  assert.throws(fn, (error: unknown) => {
    assert.ok(error instanceof ConfigError, `expected a ConfigError, got ${String(error)}`);
    assert.equal(error.name, 'ConfigError');
    for (const fragment of fragments) {
      assert.ok(error.message.includes(fragment), `message ${JSON.stringify(error.message)} does not mention ${JSON.stringify(fragment)}`);
    }
    return true;
  });
}

describe('loadSettings: defaults', () => {
  it('runs a plain registry on :5000 with ./data', () => {
    assert.deepEqual(settingsOf({}, {}), {
      listen: { host: undefined, port: 5000 },
      dataDir: './data',
      storage: { driver: 'fs' },
      logLevel: 'info',
      upstreams: [],
      hosted: { globs: [], deleteEnabled: true },
      v1: DEFAULT_V1,
      offload: { xAccelRedirect: undefined },
      circuit: DEFAULT_CIRCUIT,
      timeouts: DEFAULT_TIMEOUTS,
      limits: DEFAULT_LIMITS,
      notFoundTtlMs: 30_000,
      cacheBound: DEFAULT_CACHE_BOUND,
      auth: undefined,
      gc: DEFAULT_GC,
      prefetch: DEFAULT_PREFETCH,
      adminListen: undefined,
      tls: undefined,
      metadata: { driver: 'sqlite' },
      cluster: undefined,
    });
  });

  it('gives an upstream the cache defaults in milliseconds', () => {
    const settings = settingsOf({ upstream: ['docker.io=https://registry-1.docker.io'] }, {});
    assert.deepEqual(settings.upstreams, [
      {
        registry: 'docker.io',
        wireName: 'docker.io',
        aliases: [],
        hosts: [],
        url: 'https://registry-1.docker.io',
        credentials: undefined,
        trustedHosts: [],
        tagFreshnessMs: FIVE_MINUTES,
        maxStalenessMs: SEVEN_DAYS,
        private: false,
      },
    ]);
  });

  it('treats an empty file as no file', async () => {
    const file = await writeTemporary('');
    assert.deepEqual(settingsOf({ config: file }, {}), settingsOf({}, {}));
  });

  it('ignores empty environment variables', () => {
    const settings = settingsOf({}, { REGMIRROR_LISTEN: '', REGMIRROR_TIMEOUTS_CONNECT: '', REGMIRROR_UPSTREAMS: '' });
    assert.deepEqual(settings.listen, { host: undefined, port: 5000 });
    assert.equal(settings.timeouts.connect, 10_000);
    assert.deepEqual(settings.upstreams, []);
  });

  it('does not read process.env when given an environment', () => {
    const variable = 'REGMIRROR_LISTEN';
    const saved = process.env[variable];
    process.env[variable] = '127.0.0.1:1234';
    try {
      assert.deepEqual(settingsOf({}, {}).listen, { host: undefined, port: 5000 });
    } finally {
      if (saved === undefined) delete process.env[variable];
      else process.env[variable] = saved;
    }
  });
});

describe('loadSettings: the YAML file', () => {
  it('reads every section, durations in any unit', async () => {
    const file = await writeTemporary(`
listen: 127.0.0.1:8080
data: /var/lib/regmirror
log:
  level: debug
cache:
  tagFreshness: 1m
  maxStaleness: 1d
  notFoundTtl: 10s
timeouts:
  connect: 2s
  responseHeaders: 45
  bodyIdle: 1.5m
  manifest: 20s
  fill: 1h
  clientIdle: 2m
  shutdownGrace: 500ms
  uploadIdle: 10m
limits:
  uploadSize: 2GiB
  sendBuffers: 16MiB
  uploadSessions: 50
hosted: [team/**, internal/*]
delete:
  enabled: false
admin:
  listen: 127.0.0.1:9090
offload:
  xAccelRedirect: /_regmirror_data
upstreams:
  - registry: docker.io
    url: https://registry-1.docker.io/
    tagFreshness: 10m
    credentials:
      username: bob
      password: secret
  - url: https://ghcr.io
    maxStaleness: 2h
`);
    assert.deepEqual(settingsOf({ config: file }, {}), {
      listen: { host: '127.0.0.1', port: 8080 },
      dataDir: '/var/lib/regmirror',
      storage: { driver: 'fs' },
      logLevel: 'debug',
      upstreams: [
        {
          registry: 'docker.io',
          wireName: 'docker.io',
          aliases: [],
          hosts: [],
          url: 'https://registry-1.docker.io',
          credentials: { username: 'bob', password: 'secret' },
          trustedHosts: [],
          tagFreshnessMs: 600_000,
          maxStalenessMs: 86_400_000,
          private: false,
        },
        { registry: 'ghcr.io', wireName: 'registry', aliases: [], hosts: [], url: 'https://ghcr.io', credentials: undefined, trustedHosts: [], tagFreshnessMs: 60_000, maxStalenessMs: 7_200_000, private: false },
      ],
      v1: DEFAULT_V1,
      offload: { xAccelRedirect: '/_regmirror_data' },
      circuit: DEFAULT_CIRCUIT,
      timeouts: { connect: 2_000, responseHeaders: 45_000, bodyIdle: 90_000, manifest: 20_000, fill: 3_600_000, clientIdle: 120_000, shutdownGrace: 500, uploadIdle: 600_000 },
      limits: { uploadSize: 2 * 1024 ** 3, sendBuffers: 16 * 1024 ** 2, uploadSessions: 50 },
      hosted: { globs: ['team/**', 'internal/*'], deleteEnabled: false },
      notFoundTtlMs: 10_000,
      cacheBound: DEFAULT_CACHE_BOUND,
      auth: undefined,
      gc: DEFAULT_GC,
      prefetch: DEFAULT_PREFETCH,
      adminListen: { host: '127.0.0.1', port: 9090 },
      tls: undefined,
      metadata: { driver: 'sqlite' },
      cluster: undefined,
    });
  });

  it('reads the cache bound, GC and prefetch sections', async () => {
    const file = await writeTemporary(`
cache:
  maxSize: 200GiB
  minFreeSpace: 2.5%
  inUseWindow: 2m
  maxAge: 30d
gc:
  interval: 0
  grace: 10m
prefetch:
  interval: 15m
  platforms: [linux/amd64, linux/arm64/v8]
  images: [docker.io/library/alpine:3.20, ghcr.io/org/app@sha256:${'a'.repeat(64)}]
`);
    const settings = settingsOf({ config: file }, {});
    assert.deepEqual(settings.cacheBound, { maxSizeBytes: 200 * 1024 ** 3, minFreeSpace: { percent: 2.5 }, inUseWindowMs: 120_000, maxAgeMs: 30 * 86_400_000 });
    assert.deepEqual(settings.gc, { intervalMs: 0, graceMs: 600_000 });
    assert.deepEqual(settings.prefetch, {
      intervalMs: 900_000,
      platforms: ['linux/amd64', 'linux/arm64/v8'],
      images: ['docker.io/library/alpine:3.20', `ghcr.io/org/app@sha256:${'a'.repeat(64)}`],
    });
  });

  // Regression: zod 4's .default() inside a section skipped the duration transform, so a file that set
  // one timeout got the others in seconds read as milliseconds (responseHeaders: 30 ms).
  it('keeps the other defaults of a section that sets one key', async () => {
    const file = await writeTemporary('timeouts:\n  connect: 3s\ncache:\n  maxStaleness: 1d\n');
    const settings = settingsOf({ config: file, upstream: ['https://quay.io'] }, {});
    assert.deepEqual(settings.timeouts, { ...DEFAULT_TIMEOUTS, connect: 3_000 });
    assert.equal(settings.upstreams[0]?.tagFreshnessMs, FIVE_MINUTES);
    assert.equal(settings.upstreams[0]?.maxStalenessMs, 86_400_000);
  });

  it('keeps the other defaults when one timeout comes from the environment', () => {
    const settings = settingsOf({}, { REGMIRROR_TIMEOUTS_FILL: '10m', REGMIRROR_CACHE_TAG_FRESHNESS: '30s', REGMIRROR_UPSTREAMS: 'https://quay.io' });
    assert.deepEqual(settings.timeouts, { ...DEFAULT_TIMEOUTS, fill: 600_000 });
    assert.equal(settings.upstreams[0]?.tagFreshnessMs, 30_000);
    assert.equal(settings.upstreams[0]?.maxStalenessMs, SEVEN_DAYS);
  });
});

describe('loadSettings: layers', () => {
  let file: string;
  before(async () => {
    file = await writeTemporary(`
listen: 127.0.0.1:7000
data: /from/file
log: { level: warn }
timeouts: { connect: 1s, bodyIdle: 2s }
upstreams:
  - registry: file.example
    url: https://file.example
`);
  });

  it('environment variables override the file', () => {
    const settings = settingsOf(
      { config: file },
      {
        REGMIRROR_LISTEN: ':6000',
        REGMIRROR_DATA: '/from/env',
        REGMIRROR_LOG_LEVEL: 'error',
        REGMIRROR_TIMEOUTS_CONNECT: '5s',
        REGMIRROR_UPSTREAMS: 'docker.io=https://registry-1.docker.io, https://ghcr.io,https://quay.io:8443',
      },
    );
    assert.deepEqual(settings.listen, { host: undefined, port: 6000 });
    assert.equal(settings.dataDir, '/from/env');
    assert.equal(settings.logLevel, 'error');
    assert.deepEqual(settings.timeouts, { ...DEFAULT_TIMEOUTS, connect: 5_000, bodyIdle: 2_000 });
    assert.deepEqual(
      settings.upstreams.map((upstream) => [upstream.registry, upstream.url]),
      [
        ['docker.io', 'https://registry-1.docker.io'],
        ['ghcr.io', 'https://ghcr.io'],
        ['quay.io:8443', 'https://quay.io:8443'],
      ],
    );
  });

  it('every timeout and cache variable lands on its key', () => {
    const settings = settingsOf(
      {},
      {
        REGMIRROR_TIMEOUTS_CONNECT: '1s',
        REGMIRROR_TIMEOUTS_RESPONSE_HEADERS: '2s',
        REGMIRROR_TIMEOUTS_BODY_IDLE: '3s',
        REGMIRROR_TIMEOUTS_FILL: '4s',
        REGMIRROR_TIMEOUTS_SHUTDOWN_GRACE: '5s',
        REGMIRROR_TIMEOUTS_MANIFEST: '8s',
        REGMIRROR_TIMEOUTS_CLIENT_IDLE: '9s',
        REGMIRROR_TIMEOUTS_UPLOAD_IDLE: '11s',
        REGMIRROR_LIMITS_UPLOAD_SESSIONS: '12',
        REGMIRROR_HOSTED: 'team/** internal/*',
        REGMIRROR_DELETE_ENABLED: 'false',
        REGMIRROR_CACHE_TAG_FRESHNESS: '6s',
        REGMIRROR_CACHE_MAX_STALENESS: '7s',
        REGMIRROR_CACHE_NOT_FOUND_TTL: '10s',
        REGMIRROR_LIMITS_UPLOAD_SIZE: '1MiB',
        REGMIRROR_LIMITS_SEND_BUFFERS: '2MiB',
        REGMIRROR_ADMIN_LISTEN: '127.0.0.1:9091',
        REGMIRROR_UPSTREAMS: 'https://ghcr.io',
      },
    );
    assert.deepEqual(settings.timeouts, { connect: 1_000, responseHeaders: 2_000, bodyIdle: 3_000, manifest: 8_000, fill: 4_000, clientIdle: 9_000, shutdownGrace: 5_000, uploadIdle: 11_000 });
    assert.equal(settings.notFoundTtlMs, 10_000);
    assert.deepEqual(settings.limits, { uploadSize: 1024 * 1024, sendBuffers: 2 * 1024 * 1024, uploadSessions: 12 });
    assert.deepEqual(settings.hosted, { globs: ['team/**', 'internal/*'], deleteEnabled: false });
    assert.deepEqual(settings.adminListen, { host: '127.0.0.1', port: 9091 });
    assert.equal(settings.upstreams[0]?.tagFreshnessMs, 6_000);
    assert.equal(settings.upstreams[0]?.maxStalenessMs, 7_000);
  });

  it('flags override the environment and the file', () => {
    const settings = settingsOf(
      { config: file, listen: '[::1]:9000', data: '/from/flags', logLevel: 'trace', upstream: ['flag.example=https://mirror.example'] },
      { REGMIRROR_LISTEN: ':6000', REGMIRROR_DATA: '/from/env', REGMIRROR_LOG_LEVEL: 'error', REGMIRROR_UPSTREAMS: 'https://ghcr.io' },
    );
    assert.deepEqual(settings.listen, { host: '::1', port: 9000 });
    assert.equal(settings.dataDir, '/from/flags');
    assert.equal(settings.logLevel, 'trace');
    assert.deepEqual(
      settings.upstreams.map((upstream) => [upstream.registry, upstream.url]),
      [['flag.example', 'https://mirror.example']],
    );
  });

  it('the offload prefix comes from the file or REGMIRROR_OFFLOAD_X_ACCEL_REDIRECT, without its trailing slash', async () => {
    const offloading = await writeTemporary('offload:\n  xAccelRedirect: /_regmirror_data/\n');
    assert.deepEqual(settingsOf({ config: offloading }, {}).offload, { xAccelRedirect: '/_regmirror_data' });
    assert.deepEqual(settingsOf({ config: offloading }, { REGMIRROR_OFFLOAD_X_ACCEL_REDIRECT: '/from-env' }).offload, { xAccelRedirect: '/from-env' });
    // '/' maps the whole URI space: redirects become /blobs/….
    assert.deepEqual(settingsOf({}, { REGMIRROR_OFFLOAD_X_ACCEL_REDIRECT: '/' }).offload, { xAccelRedirect: '' });
  });

  it('an empty --upstream list leaves the upstreams alone', () => {
    const settings = settingsOf({ config: file, upstream: [] }, {});
    assert.deepEqual(
      settings.upstreams.map((upstream) => upstream.registry),
      ['file.example'],
    );
  });
});

describe('loadSettings: cache bound, GC and prefetch from variables and flags', () => {
  it('takes every key from its REGMIRROR_* variable, lists split on spaces and commas', () => {
    const settings = settingsOf(
      {},
      {
        REGMIRROR_CACHE_MAX_SIZE: '10GiB',
        REGMIRROR_CACHE_MIN_FREE_SPACE: '1GiB',
        REGMIRROR_CACHE_IN_USE_WINDOW: '30s',
        REGMIRROR_CACHE_MAX_AGE: '7d',
        REGMIRROR_GC_INTERVAL: '2h',
        REGMIRROR_GC_GRACE: '5m',
        REGMIRROR_PREFETCH_INTERVAL: '1m',
        REGMIRROR_PREFETCH_PLATFORMS: 'linux/amd64,linux/arm64',
        REGMIRROR_PREFETCH_IMAGES: 'docker.io/library/alpine:3.20 quay.io/org/tool:1',
      },
    );
    assert.deepEqual(settings.cacheBound, { maxSizeBytes: 10 * 1024 ** 3, minFreeSpace: { bytes: 1024 ** 3 }, inUseWindowMs: 30_000, maxAgeMs: 7 * 86_400_000 });
    assert.deepEqual(settings.gc, { intervalMs: 7_200_000, graceMs: 300_000 });
    assert.deepEqual(settings.prefetch, { intervalMs: 60_000, platforms: ['linux/amd64', 'linux/arm64'], images: ['docker.io/library/alpine:3.20', 'quay.io/org/tool:1'] });
  });

  it('takes --cache-max-size over the variable', () => {
    assert.equal(settingsOf({ cacheMaxSize: '3MiB' }, { REGMIRROR_CACHE_MAX_SIZE: '10GiB' }).cacheBound.maxSizeBytes, 3 * 1024 ** 2);
  });

  it('refuses a bad size, percentage, platform or image, naming the key', () => {
    assertConfigError(() => settingsOf({ cacheMaxSize: 'lots' }, {}), 'cache.maxSize', 'not a size');
    assertConfigError(() => settingsOf({}, { REGMIRROR_CACHE_MIN_FREE_SPACE: '150%' }), 'cache.minFreeSpace', 'percentage below 100');
    assertConfigError(() => settingsOf({}, { REGMIRROR_CACHE_MIN_FREE_SPACE: '-3%' }), 'cache.minFreeSpace');
    assertConfigError(() => settingsOf({}, { REGMIRROR_PREFETCH_PLATFORMS: 'amd64' }), 'prefetch.platforms.0', 'OS/ARCH');
    assertConfigError(() => settingsOf({}, { REGMIRROR_CACHE_IN_USE_WINDOW: 'soon' }), 'cache.inUseWindow', 'not a duration');
    assertConfigError(() => settingsOf({}, { REGMIRROR_PREFETCH_IMAGES: 'docker.io/library/alpine:3.20 Alpine:3' }), 'prefetch.images.1', 'invalid repository name', 'Alpine:3');
  });

  it('refuses hosted repositories’ knobs past their limits, naming the key', () => {
    assertConfigError(() => settingsOf({}, { REGMIRROR_LIMITS_UPLOAD_SESSIONS: '0' }), 'limits.uploadSessions');
    assertConfigError(() => settingsOf({}, { REGMIRROR_LIMITS_UPLOAD_SESSIONS: '100001' }), 'limits.uploadSessions');
    assertConfigError(() => settingsOf({}, { REGMIRROR_LIMITS_UPLOAD_SESSIONS: 'many' }), 'limits.uploadSessions');
    assertConfigError(() => settingsOf({}, { REGMIRROR_TIMEOUTS_UPLOAD_IDLE: '500ms' }), 'timeouts.uploadIdle', 'at least 1s');
    assertConfigError(() => settingsOf({}, { REGMIRROR_HOSTED: 'team/** Team/*' }), 'hosted.1', 'glob');
    assertConfigError(() => settingsOf({}, { REGMIRROR_DELETE_ENABLED: 'sometimes' }), 'delete.enabled', 'true or false');
    assert.deepEqual(settingsOf({}, { REGMIRROR_LIMITS_UPLOAD_SESSIONS: '100000' }).limits.uploadSessions, 100_000);
  });
});

describe('loadSettings: auth and access', () => {
  it('reads auth and the access rules, with their defaults', async () => {
    const file = await writeTemporary(`
auth:
  htpasswd: /etc/regmirror/htpasswd
access:
  - users: [alice, ci-bot]
    repositories: ["**"]
    actions: [pull]
  - users: [anonymous]
    repositories: ["library/*"]
    actions: [pull]
`);
    assert.deepEqual(settingsOf({ config: file }, {}).auth, {
      htpasswd: '/etc/regmirror/htpasswd',
      service: 'regmirror',
      realm: undefined,
      tokenKey: undefined,
      tokenLifetimeMs: 300_000,
      failedLogins: { limit: 10, windowMs: 60_000 },
      access: [
        { users: ['alice', 'ci-bot'], repositories: ['**'], actions: ['pull'] },
        { users: ['anonymous'], repositories: ['library/*'], actions: ['pull'] },
      ],
      externalIssuer: undefined,
    });
  });

  it('reads an external issuer, and refuses one without keys or a realm', async () => {
    const file = await writeTemporary('auth:\n  realm: https://login.example/token\n  token:\n    issuer: https://login.example\n    jwks: /etc/regmirror/jwks.json\n');
    const auth = settingsOf({ config: file }, {}).auth;
    assert.deepEqual(auth && [auth.htpasswd, auth.externalIssuer], [undefined, { issuer: 'https://login.example', publicKeys: [], jwks: '/etc/regmirror/jwks.json' }]);
    const noKeys = await writeTemporary('auth:\n  realm: https://login.example/token\n  token:\n    issuer: https://login.example\n');
    assertConfigError(() => settingsOf({ config: noKeys }, {}), 'auth.token.issuer needs auth.token.publicKeys or auth.token.jwks');
    const noRealm = await writeTemporary('auth:\n  token:\n    issuer: https://login.example\n    publicKeys: [/k.pem]\n');
    assertConfigError(() => settingsOf({ config: noRealm }, {}), 'auth.realm must name');
    const nothing = await writeTemporary('auth:\n  service: x\n');
    assertConfigError(() => settingsOf({ config: nothing }, {}), 'give auth.htpasswd, auth.token.issuer, or both');
  });

  it('takes the auth keys from their variables', () => {
    const auth = settingsOf({}, { REGMIRROR_AUTH_HTPASSWD: '/h', REGMIRROR_AUTH_SERVICE: 'mirror', REGMIRROR_AUTH_REALM: 'https://m.example/auth/token', REGMIRROR_AUTH_TOKEN_KEY: '/k.pem', REGMIRROR_AUTH_TOKEN_LIFETIME: '2m' }).auth;
    assert.deepEqual(auth && [auth.htpasswd, auth.service, auth.realm, auth.tokenKey, auth.tokenLifetimeMs], ['/h', 'mirror', 'https://m.example/auth/token', '/k.pem', 120_000]);
  });

  it('refuses rules without auth, an unknown action and a bad glob', async () => {
    const noAuth = await writeTemporary('access: [{users: [a], repositories: ["**"], actions: [pull]}]\n');
    assertConfigError(() => settingsOf({ config: noAuth }, {}), 'access: rules need auth');
    const badAction = await writeTemporary('auth: {htpasswd: /h}\naccess: [{users: [a], repositories: ["**"], actions: [steal]}]\n');
    assertConfigError(() => settingsOf({ config: badAction }, {}), 'access.0.actions.0');
    const badGlob = await writeTemporary('auth: {htpasswd: /h}\naccess: [{users: [a], repositories: ["Library/ A"], actions: [pull]}]\n');
    assertConfigError(() => settingsOf({ config: badGlob }, {}), 'access.0.repositories.0');
  });
});

describe('parseUpstreamFlag', () => {
  const cases: { input: string; expected: UpstreamInput }[] = [
    { input: 'docker.io=https://registry-1.docker.io', expected: { registry: 'docker.io', url: 'https://registry-1.docker.io' } },
    { input: 'https://ghcr.io', expected: { url: 'https://ghcr.io' } },
    { input: 'http://h/p?x=y', expected: { url: 'http://h/p?x=y' } },
    { input: 'local=http://h:5000/p?x=y', expected: { registry: 'local', url: 'http://h:5000/p?x=y' } },
    { input: '=https://a.example', expected: { url: '=https://a.example' } },
  ];
  for (const { input, expected } of cases) {
    it(`${input} → ${JSON.stringify(expected)}`, () => {
      assert.deepEqual(parseUpstreamFlag(input), expected);
    });
  }

  it('names a plain URL by its host, port included, and drops trailing slashes', () => {
    const settings = settingsOf({ upstream: ['http://registry.local:5001/', 'http://h/p?x=y'] }, {});
    assert.deepEqual(
      settings.upstreams.map((upstream) => [upstream.registry, upstream.url]),
      [
        ['registry.local:5001', 'http://registry.local:5001'],
        ['h', 'http://h/p?x=y'],
      ],
    );
  });
});

describe('parseListen', () => {
  const valid: { input: string; expected: ListenAddress }[] = [
    { input: ':5000', expected: { host: undefined, port: 5000 } },
    { input: '127.0.0.1:80', expected: { host: '127.0.0.1', port: 80 } },
    { input: '[::]:5000', expected: { host: '::', port: 5000 } },
    { input: '[::1]:443', expected: { host: '::1', port: 443 } },
    { input: 'localhost:1', expected: { host: 'localhost', port: 1 } },
    { input: '0.0.0.0:65535', expected: { host: '0.0.0.0', port: 65535 } },
    { input: ' :5000 ', expected: { host: undefined, port: 5000 } },
  ];
  for (const { input, expected } of valid) {
    it(`${JSON.stringify(input)} → ${JSON.stringify(expected)}`, () => {
      assert.deepEqual(parseListen(input), expected);
    });
  }

  const invalid = ['5000', ':99999', ':65536', 'a:b', ':', '', 'host:', '::1:5000', '[::1]', ':123456', 'a:5000:1', ':-1'];
  for (const input of invalid) {
    it(`rejects ${JSON.stringify(input)}`, () => {
      assertConfigError(() => parseListen(input), 'listen');
    });
  }

  it('rejects a bad listen address from the environment', () => {
    assertConfigError(() => settingsOf({}, { REGMIRROR_LISTEN: '5000' }), 'listen', '5000');
  });
});

describe('loadSettings: invalid configuration', () => {
  const files: { name: string; yaml: string; fragments: string[] }[] = [
    { name: 'an unknown top-level key', yaml: 'listne: :5000\n', fragments: ['listne'] },
    { name: 'an unknown timeout', yaml: 'timeouts:\n  conect: 5s\n', fragments: ['timeouts', 'conect'] },
    { name: 'an unknown upstream key', yaml: 'upstreams:\n  - url: https://a.example\n    mirror: true\n', fragments: ['upstreams.0', 'mirror'] },
    { name: 'a bad url', yaml: 'upstreams:\n  - url: not a url\n', fragments: ['upstreams.0.url'] },
    { name: 'a url of another scheme', yaml: 'upstreams:\n  - url: https://ok.example\n  - url: ftp://a.example\n', fragments: ['upstreams.1.url'] },
    { name: 'a bad timeout', yaml: 'timeouts:\n  connect: soon\n', fragments: ['timeouts.connect', 'not a duration: soon'] },
    { name: 'a negative duration', yaml: 'cache:\n  tagFreshness: -5\n', fragments: ['cache.tagFreshness'] },
    { name: 'a bad upstream duration', yaml: 'upstreams:\n  - url: https://a.example\n    maxStaleness: 5y\n', fragments: ['upstreams.0.maxStaleness'] },
    { name: 'a bad log level', yaml: 'log:\n  level: loud\n', fragments: ['log.level'] },
    { name: 'a listen of the wrong type', yaml: 'listen: 5000\n', fragments: ['listen'] },
    { name: 'upstreams not a list', yaml: 'upstreams: https://a.example\n', fragments: ['upstreams'] },
    { name: 'an empty registry name', yaml: 'upstreams:\n  - registry: ""\n    url: https://a.example\n', fragments: ['upstreams.0.registry'] },
    {
      name: 'two password sources',
      yaml: 'upstreams:\n  - url: https://a.example\n    credentials: { username: u, password: p, passwordEnv: P }\n',
      fragments: ['upstreams.0.credentials', 'exactly one'],
    },
    {
      name: 'no password source',
      yaml: 'upstreams:\n  - url: https://a.example\n    credentials: { username: u }\n',
      fragments: ['upstreams.0.credentials', 'exactly one'],
    },
    {
      name: 'no username',
      yaml: 'upstreams:\n  - url: https://a.example\n    credentials: { password: p }\n',
      fragments: ['upstreams.0.credentials.username'],
    },
    { name: 'an offload prefix that is no URI path', yaml: 'offload:\n  xAccelRedirect: data\n', fragments: ['offload.xAccelRedirect', 'URI path prefix'] },
    { name: 'an unknown offload key', yaml: 'offload:\n  sendfile: true\n', fragments: ['offload', 'sendfile'] },
    { name: 'a bad size', yaml: 'limits:\n  uploadSize: huge\n', fragments: ['limits.uploadSize', 'not a size: huge'] },
    { name: 'a negative size', yaml: 'limits:\n  sendBuffers: -1\n', fragments: ['limits.sendBuffers'] },
    { name: 'a bad admin listen address', yaml: 'admin:\n  listen: nowhere\n', fragments: ['admin.listen'] },
    { name: 'a trusted host that is not a host name', yaml: 'upstreams:\n  - url: https://a.example\n    trustedHosts: ["blobs.internal/x"]\n', fragments: ['upstreams.0.trustedHosts.0'] },
    { name: 'a bad manifest deadline', yaml: 'timeouts:\n  manifest: forever\n', fragments: ['timeouts.manifest'] },
    { name: 'YAML that is a list', yaml: '- a\n- b\n', fragments: ['must be a mapping'] },
    { name: 'YAML that is a scalar', yaml: 'hello\n', fragments: ['must be a mapping'] },
    { name: 'YAML that does not parse', yaml: 'listen: [unclosed\n', fragments: ['not valid YAML'] },
  ];
  for (const { name, yaml, fragments } of files) {
    it(`reports ${name}`, async () => {
      const file = await writeTemporary(yaml);
      assertConfigError(() => settingsOf({ config: file }, {}), ...fragments);
    });
  }

  it('reports a file it cannot read', () => {
    const missing = path.join(directory, 'missing.yaml');
    assertConfigError(() => settingsOf({ config: missing }, {}), 'cannot read configuration file', missing);
  });

  it('reports a bad duration from the environment under its key', () => {
    assertConfigError(() => settingsOf({}, { REGMIRROR_TIMEOUTS_CONNECT: 'fast' }), 'timeouts.connect');
  });

  it('reports a bad upstream from the environment under its index', () => {
    assertConfigError(() => settingsOf({}, { REGMIRROR_UPSTREAMS: 'https://ok.example not-a-url' }), 'upstreams.1.url');
  });

  it('reports a bad log level from a flag', () => {
    assertConfigError(() => settingsOf({ logLevel: 'verbose' }, {}), 'log.level');
  });

  it('reports a registry listed twice', () => {
    assertConfigError(
      () => settingsOf({ upstream: ['ghcr.io=https://ghcr.io', 'ghcr.io=https://mirror.example'] }, {}),
      'upstreams',
      'ghcr.io is listed twice',
    );
  });

  it('reports a registry listed twice when one is named by its URL', () => {
    assertConfigError(() => settingsOf({ upstream: ['https://ghcr.io', 'ghcr.io=https://mirror.example'] }, {}), 'ghcr.io is listed twice');
  });
});

describe('loadSettings: credentials', () => {
  it('reads the password from the named environment variable', async () => {
    const file = await writeTemporary('upstreams:\n  - url: https://a.example\n    credentials: { username: u, passwordEnv: A_PASSWORD }\n');
    const settings = settingsOf({ config: file }, { A_PASSWORD: 's3cret' });
    assert.deepEqual(settings.upstreams[0]?.credentials, { username: 'u', password: 's3cret' });
  });

  it('reports a password variable that is not set, naming the key and the variable', async () => {
    const file = await writeTemporary(
      'upstreams:\n  - url: https://a.example\n  - url: https://b.example\n    credentials: { username: u, passwordEnv: B_PASSWORD }\n',
    );
    assertConfigError(() => settingsOf({ config: file }, {}), 'upstreams.1.credentials.passwordEnv', 'B_PASSWORD');
  });

  it('reads the password from a file, without its final newline', async () => {
    const secret = await writeTemporary('file-secret\n', 'password.txt');
    const file = await writeTemporary(`upstreams:\n  - url: https://a.example\n    credentials: { username: u, passwordFile: ${JSON.stringify(secret)} }\n`);
    const settings = settingsOf({ config: file }, {});
    assert.deepEqual(settings.upstreams[0]?.credentials, { username: 'u', password: 'file-secret' });
  });

  it('keeps a password file without a final newline whole', async () => {
    const secret = await writeTemporary('p\r\nq', 'password-crlf.txt');
    const file = await writeTemporary(`upstreams:\n  - url: https://a.example\n    credentials: { username: u, passwordFile: ${JSON.stringify(secret)} }\n`);
    assert.deepEqual(settingsOf({ config: file }, {}).upstreams[0]?.credentials, { username: 'u', password: 'p\r\nq' });
  });

  it('reports a password file it cannot read, naming the key', async () => {
    const missing = path.join(directory, 'no-such-password');
    const file = await writeTemporary(`upstreams:\n  - url: https://a.example\n    credentials: { username: u, passwordFile: ${JSON.stringify(missing)} }\n`);
    assertConfigError(() => settingsOf({ config: file }, {}), 'upstreams.0.credentials.passwordFile', missing);
  });

  it('refuses credentials in an upstream URL without repeating them', () => {
    for (const url of ['https://bob:hunter2@registry.example', 'https://hunter2@registry.example']) {
      assert.throws(
        () => settingsOf({ upstream: [url] }, {}),
        (error: unknown) =>
          error instanceof ConfigError && error.message.includes('upstreams.0.url') && !error.message.includes('hunter2'),
      );
    }
  });

  it('never puts a password in an error message', async () => {
    const file = await writeTemporary(
      'upstreams:\n  - url: https://a.example\n    credentials: { username: u, password: hunter2 }\n  - url: https://a.example\n',
    );
    assert.throws(
      () => settingsOf({ config: file }, {}),
      (error: unknown) => error instanceof ConfigError && error.message.includes('listed twice') && !error.message.includes('hunter2'),
    );
  });
});

describe('loadSettings: storage', () => {
  const S3_YAML = [
    'storage:',
    '  driver: s3',
    '  s3:',
    '    bucket: regmirror',
    '    region: eu-west-3',
    '    endpoint: https://s3.example:9000/',
    '    forcePathStyle: true',
    '    prefix: cache',
    '    accessKeyEnv: S3_KEY',
    '    secretKeyEnv: S3_SECRET',
    '    requestTimeout: 45s',
    '    redirect: true',
    '    redirectTtl: 2m',
    '',
  ].join('\n');

  it('keeps content in the data directory by default', () => {
    assert.deepEqual(settingsOf({}, {}).storage, { driver: 'fs' });
  });

  it('reads every s3 key, the prefix made a folder and the credentials read from the variables named', async () => {
    const file = await writeTemporary(S3_YAML);
    assert.deepEqual(settingsOf({ config: file }, { S3_KEY: 'AKIDEXAMPLE', S3_SECRET: 'wJalrXUtnFEMI' }).storage, {
      driver: 's3',
      s3: {
        bucket: 'regmirror',
        region: 'eu-west-3',
        endpoint: 'https://s3.example:9000',
        forcePathStyle: true,
        prefix: 'cache/',
        credentials: { accessKeyId: 'AKIDEXAMPLE', secretAccessKey: 'wJalrXUtnFEMI' },
        requestTimeoutMs: 45_000,
        redirectTtlMs: 120_000,
      },
    });
  });

  it('gives s3 its defaults: us-east-1, AWS’s endpoint, virtual-hosted style, no prefix, the SDK’s credentials, 30 s, no redirect', async () => {
    const file = await writeTemporary('storage:\n  driver: s3\n  s3: { bucket: regmirror }\n');
    assert.deepEqual(settingsOf({ config: file }, {}).storage, {
      driver: 's3',
      s3: { bucket: 'regmirror', region: 'us-east-1', endpoint: undefined, forcePathStyle: false, prefix: '', credentials: undefined, requestTimeoutMs: 30_000, redirectTtlMs: undefined },
    });
  });

  it('takes every key from REGMIRROR_STORAGE_* variables over the file', async () => {
    const file = await writeTemporary(S3_YAML);
    const settings = settingsOf(
      { config: file },
      {
        REGMIRROR_STORAGE_DRIVER: 's3',
        REGMIRROR_STORAGE_S3_BUCKET: 'other',
        REGMIRROR_STORAGE_S3_REGION: 'us-west-2',
        REGMIRROR_STORAGE_S3_ENDPOINT: 'http://127.0.0.1:8080',
        REGMIRROR_STORAGE_S3_FORCE_PATH_STYLE: 'false',
        REGMIRROR_STORAGE_S3_PREFIX: 'team/cache/',
        REGMIRROR_STORAGE_S3_ACCESS_KEY_ENV: 'OTHER_KEY',
        REGMIRROR_STORAGE_S3_SECRET_KEY_ENV: 'OTHER_SECRET',
        REGMIRROR_STORAGE_S3_REQUEST_TIMEOUT: '5s',
        REGMIRROR_STORAGE_S3_REDIRECT: 'true',
        REGMIRROR_STORAGE_S3_REDIRECT_TTL: '30s',
        OTHER_KEY: 'k',
        OTHER_SECRET: 's',
      },
    );
    assert.deepEqual(settings.storage, {
      driver: 's3',
      s3: { bucket: 'other', region: 'us-west-2', endpoint: 'http://127.0.0.1:8080', forcePathStyle: false, prefix: 'team/cache/', credentials: { accessKeyId: 'k', secretAccessKey: 's' }, requestTimeoutMs: 5_000, redirectTtlMs: 30_000 },
    });
    const fromVariablesAlone = settingsOf({}, { REGMIRROR_STORAGE_DRIVER: 's3', REGMIRROR_STORAGE_S3_BUCKET: 'cache', REGMIRROR_STORAGE_S3_FORCE_PATH_STYLE: 'true' }).storage;
    assert.ok(fromVariablesAlone.driver === 's3' && fromVariablesAlone.s3.forcePathStyle && fromVariablesAlone.s3.bucket === 'cache');
    const redirectOff = settingsOf({ config: file }, { S3_KEY: 'k', S3_SECRET: 's', REGMIRROR_STORAGE_S3_REDIRECT: 'false' }).storage;
    assert.ok(redirectOff.driver === 's3' && redirectOff.s3.redirectTtlMs === undefined, 'the variable turns the file’s redirect off');
  });

  it('takes a redirect TTL from 1s to 1h, with the redirect on', async () => {
    for (const [ttl, ms] of [['1s', 1_000], ['1h', 3_600_000], ['5m', 300_000]] as const) {
      const file = await writeTemporary(`storage: { driver: s3, s3: { bucket: cache, redirect: true, redirectTtl: ${ttl} } }\n`);
      const storage = settingsOf({ config: file }, {}).storage;
      assert.ok(storage.driver === 's3' && storage.s3.redirectTtlMs === ms, ttl);
    }
    const defaulted = await writeTemporary('storage: { driver: s3, s3: { bucket: cache, redirect: true } }\n');
    const storage = settingsOf({ config: defaulted }, {}).storage;
    assert.ok(storage.driver === 's3' && storage.s3.redirectTtlMs === 300_000, 'five minutes by default');
  });

  it('does not watch the free space of the data directory’s disk for a bucket, and says so when asked to', async () => {
    assert.deepEqual(settingsOf({}, { REGMIRROR_STORAGE_DRIVER: 's3', REGMIRROR_STORAGE_S3_BUCKET: 'cache' }).cacheBound.minFreeSpace, { bytes: 0 });
    const file = await writeTemporary('cache: { minFreeSpace: 10% }\nstorage: { driver: s3, s3: { bucket: cache } }\n');
    const { settings, warnings } = loadSettings({ config: file }, {});
    assert.deepEqual(settings.cacheBound.minFreeSpace, { bytes: 0 });
    assert.equal(warnings.length, 1);
    assert.match(warnings[0] ?? '', /^cache\.minFreeSpace: no effect with storage\.driver: s3/);
  });

  const invalid: { name: string; yaml: string; environment?: NodeJS.ProcessEnv; fragments: string[] }[] = [
    { name: 'an unknown driver', yaml: 'storage: { driver: gcs }\n', fragments: ['storage.driver'] },
    { name: 's3 without its section', yaml: 'storage: { driver: s3 }\n', fragments: ['storage.s3', 'required with driver: s3'] },
    { name: 's3 without a bucket', yaml: 'storage: { driver: s3, s3: { region: us-east-1 } }\n', fragments: ['storage.s3.bucket'] },
    { name: 'an s3 section with the fs driver', yaml: 'storage: { s3: { bucket: cache } }\n', fragments: ['storage.s3', 'applies with driver: s3 only'] },
    { name: 'a bucket name with a slash', yaml: 'storage: { driver: s3, s3: { bucket: a/b } }\n', fragments: ['storage.s3.bucket', 'bucket name'] },
    { name: 'a bad region', yaml: 'storage: { driver: s3, s3: { bucket: cache, region: "Europe (Paris)" } }\n', fragments: ['storage.s3.region'] },
    { name: 'an endpoint that is no URL', yaml: 'storage: { driver: s3, s3: { bucket: cache, endpoint: s3.example } }\n', fragments: ['storage.s3.endpoint'] },
    { name: 'an endpoint of another scheme', yaml: 'storage: { driver: s3, s3: { bucket: cache, endpoint: "ftp://s3.example" } }\n', fragments: ['storage.s3.endpoint'] },
    { name: 'a forcePathStyle that is no boolean', yaml: 'storage: { driver: s3, s3: { bucket: cache, forcePathStyle: sometimes } }\n', fragments: ['storage.s3.forcePathStyle'] },
    { name: 'a prefix with a leading slash', yaml: 'storage: { driver: s3, s3: { bucket: cache, prefix: /cache } }\n', fragments: ['storage.s3.prefix'] },
    { name: 'a prefix with an empty part', yaml: 'storage: { driver: s3, s3: { bucket: cache, prefix: a//b } }\n', fragments: ['storage.s3.prefix'] },
    { name: 'a prefix with a .. part', yaml: 'storage: { driver: s3, s3: { bucket: cache, prefix: a/../b } }\n', fragments: ['storage.s3.prefix'] },
    { name: 'an access key variable without its secret', yaml: 'storage: { driver: s3, s3: { bucket: cache, accessKeyEnv: K } }\n', fragments: ['storage.s3', 'both accessKeyEnv and secretKeyEnv'] },
    { name: 'a variable name that is no name', yaml: 'storage: { driver: s3, s3: { bucket: cache, accessKeyEnv: "my key", secretKeyEnv: S } }\n', fragments: ['storage.s3.accessKeyEnv'] },
    { name: 'a bad request timeout', yaml: 'storage: { driver: s3, s3: { bucket: cache, requestTimeout: soon } }\n', fragments: ['storage.s3.requestTimeout', 'not a duration'] },
    { name: 'a request timeout of zero', yaml: 'storage: { driver: s3, s3: { bucket: cache, requestTimeout: 0 } }\n', fragments: ['storage.s3.requestTimeout', 'more than 0'] },
    { name: 'an unknown s3 key', yaml: 'storage: { driver: s3, s3: { bucket: cache, redirects: true } }\n', fragments: ['storage.s3', 'redirects'] },
    { name: 'a redirect that is no boolean', yaml: 'storage: { driver: s3, s3: { bucket: cache, redirect: sometimes } }\n', fragments: ['storage.s3.redirect'] },
    { name: 'a redirect TTL under a second', yaml: 'storage: { driver: s3, s3: { bucket: cache, redirect: true, redirectTtl: 500ms } }\n', fragments: ['storage.s3.redirectTtl', 'from 1s to 1h'] },
    { name: 'a redirect TTL over an hour', yaml: 'storage: { driver: s3, s3: { bucket: cache, redirect: true, redirectTtl: 2h } }\n', fragments: ['storage.s3.redirectTtl', 'from 1s to 1h'] },
    { name: 'a redirect TTL that is no duration', yaml: 'storage: { driver: s3, s3: { bucket: cache, redirectTtl: later } }\n', fragments: ['storage.s3.redirectTtl', 'not a duration'] },
    { name: 'an unknown storage key', yaml: 'storage: { driver: fs, path: /srv }\n', fragments: ['storage', 'path'] },
    {
      name: 'a credentials variable that is not set',
      yaml: 'storage: { driver: s3, s3: { bucket: cache, accessKeyEnv: S3_KEY, secretKeyEnv: S3_SECRET } }\n',
      environment: { S3_KEY: 'k' },
      fragments: ['storage.s3.secretKeyEnv', 'S3_SECRET is not set'],
    },
    {
      name: 'the v2 nginx offload with s3',
      yaml: 'offload: { xAccelRedirect: /_data }\nstorage: { driver: s3, s3: { bucket: cache } }\n',
      fragments: ['offload.xAccelRedirect', 'storage.driver: s3', 'in the bucket'],
    },
    {
      name: 'the v1 nginx offload with s3',
      yaml: 'v1: { nginxXAccelRedirect: /_data }\nstorage: { driver: s3, s3: { bucket: cache } }\n',
      fragments: ['v1.nginxXAccelRedirect', 'storage.driver: s3'],
    },
  ];
  for (const { name, yaml, environment, fragments } of invalid) {
    it(`reports ${name}`, async () => {
      const file = await writeTemporary(yaml);
      assertConfigError(() => settingsOf({ config: file }, environment ?? {}), ...fragments);
    });
  }

  it('reports a bad driver from the environment under its key', () => {
    assertConfigError(() => settingsOf({}, { REGMIRROR_STORAGE_DRIVER: 'S3' }), 'storage.driver');
    assertConfigError(() => settingsOf({}, { REGMIRROR_STORAGE_DRIVER: 's3', REGMIRROR_STORAGE_S3_BUCKET: 'cache', REGMIRROR_STORAGE_S3_FORCE_PATH_STYLE: 'yes' }), 'storage.s3.forcePathStyle', 'true or false');
  });

  it('refuses credentials in the endpoint, and never repeats a secret in an error', async () => {
    assert.throws(
      () => settingsOf({}, { REGMIRROR_STORAGE_DRIVER: 's3', REGMIRROR_STORAGE_S3_BUCKET: 'cache', REGMIRROR_STORAGE_S3_ENDPOINT: 'https://AKID:hunter2@s3.example' }),
      (error: unknown) => error instanceof ConfigError && error.message.includes('storage.s3.endpoint') && !error.message.includes('hunter2') && !error.message.includes('AKID'),
    );
    const file = await writeTemporary('storage: { driver: s3, s3: { bucket: "b b", accessKeyEnv: K, secretKeyEnv: S } }\n');
    assert.throws(
      () => settingsOf({ config: file }, { K: 'AKIDEXAMPLE', S: 'hunter2' }),
      (error: unknown) => error instanceof ConfigError && error.message.includes('storage.s3.bucket') && !error.message.includes('hunter2') && !error.message.includes('AKIDEXAMPLE'),
    );
  });
});

describe('loadSettings: TLS', () => {
  let ca: TestCa;
  let server: IssuedCertificate;
  let other: IssuedCertificate;

  before(async () => {
    ca = await makeTestCa();
    server = await ca.issueServer('server');
    other = await ca.issueServer('other');
  });

  after(async () => {
    await ca?.destroy();
  });

  it('is off by default: plain http', () => {
    assert.equal(settingsOf({}, {}).tls, undefined);
  });

  it('reads the paths from the file, and from REGMIRROR_TLS_* over it', async () => {
    const file = await writeTemporary(`tls:\n  certificate: ${JSON.stringify(other.certificateFile)}\n  key: ${JSON.stringify(other.keyFile)}\n`);
    assert.deepEqual(settingsOf({ config: file }, {}).tls, { certificate: other.certificateFile, key: other.keyFile, clientCA: undefined });
    const environment = { REGMIRROR_TLS_CERTIFICATE: server.certificateFile, REGMIRROR_TLS_KEY: server.keyFile, REGMIRROR_TLS_CLIENT_CA: ca.caFile };
    assert.deepEqual(settingsOf({ config: file }, environment).tls, { certificate: server.certificateFile, key: server.keyFile, clientCA: ca.caFile });
  });

  it('refuses a certificate without its key, a key without its certificate, a client CA without either', () => {
    assertConfigError(() => settingsOf({}, { REGMIRROR_TLS_CERTIFICATE: server.certificateFile }), 'tls.key', 'required with tls.certificate');
    assertConfigError(() => settingsOf({}, { REGMIRROR_TLS_KEY: server.keyFile }), 'tls.certificate', 'required with tls.key');
    assertConfigError(() => settingsOf({}, { REGMIRROR_TLS_CLIENT_CA: ca.caFile }), 'tls.certificate', 'required with tls.clientCA');
  });

  it('refuses a file it cannot read, naming the key and the file', () => {
    const missing = path.join(directory, 'no-such.pem');
    assertConfigError(() => settingsOf({}, { REGMIRROR_TLS_CERTIFICATE: missing, REGMIRROR_TLS_KEY: server.keyFile }), 'tls.certificate', missing, 'ENOENT');
    assertConfigError(() => settingsOf({}, { REGMIRROR_TLS_CERTIFICATE: server.certificateFile, REGMIRROR_TLS_KEY: missing }), 'tls.key', missing);
    const files = { REGMIRROR_TLS_CERTIFICATE: server.certificateFile, REGMIRROR_TLS_KEY: server.keyFile };
    assertConfigError(() => settingsOf({}, { ...files, REGMIRROR_TLS_CLIENT_CA: missing }), 'tls.clientCA', missing);
  });

  it('refuses a key of another certificate, naming the key', () => {
    assertConfigError(
      () => settingsOf({}, { REGMIRROR_TLS_CERTIFICATE: server.certificateFile, REGMIRROR_TLS_KEY: other.keyFile }),
      'tls.key',
      other.keyFile,
      'does not match the certificate',
    );
  });

  it('refuses files that hold no PEM certificate or key, without repeating the key', async () => {
    const garbage = await writeTemporary('not a certificate\n', 'garbage.pem');
    const files = { REGMIRROR_TLS_CERTIFICATE: server.certificateFile, REGMIRROR_TLS_KEY: server.keyFile };
    assertConfigError(() => settingsOf({}, { ...files, REGMIRROR_TLS_CERTIFICATE: garbage }), 'tls.certificate', 'no PEM certificate');
    // Swapped: the certificate where the key belongs, and the key where the certificate belongs.
    assertConfigError(() => settingsOf({}, { ...files, REGMIRROR_TLS_KEY: server.certificateFile }), 'tls.key', 'no unencrypted PEM private key');
    assert.throws(
      () => settingsOf({}, { ...files, REGMIRROR_TLS_CERTIFICATE: server.keyFile }),
      (error: unknown) => error instanceof ConfigError && error.message.includes('tls.certificate') && !error.message.includes(server.key.split('\n')[1] ?? 'BEGIN'),
    );
    assertConfigError(() => settingsOf({}, { ...files, REGMIRROR_TLS_CLIENT_CA: garbage }), 'tls.clientCA', 'no PEM certificate');
  });
});

describe('loadSettings: metadata', () => {
  it('reads the postgres driver from the file, the password from the variable it names, pool and timeout defaults', async () => {
    const file = await writeTemporary('metadata:\n  driver: postgres\n  url: postgres://regmirror@db.example:5432/regmirror\n  passwordEnv: DB_PASSWORD\n');
    assert.deepEqual(settingsOf({ config: file }, { DB_PASSWORD: 'hunter2' }).metadata, {
      driver: 'postgres',
      url: 'postgres://regmirror@db.example:5432/regmirror',
      password: 'hunter2',
      poolSize: 10,
      statementTimeoutMs: 10_000,
    });
  });

  it('takes every key from its REGMIRROR_METADATA_* variable, over the file', async () => {
    const file = await writeTemporary('metadata:\n  driver: sqlite\n');
    const settings = settingsOf(
      { config: file },
      {
        REGMIRROR_METADATA_DRIVER: 'postgres',
        REGMIRROR_METADATA_URL: 'postgresql://regmirror@127.0.0.1/cache?sslmode=require',
        REGMIRROR_METADATA_PASSWORD_ENV: 'PGPW',
        PGPW: 'pw',
        REGMIRROR_METADATA_POOL_SIZE: '25',
        REGMIRROR_METADATA_STATEMENT_TIMEOUT: '2.5s',
      },
    );
    assert.deepEqual(settings.metadata, { driver: 'postgres', url: 'postgresql://regmirror@127.0.0.1/cache?sslmode=require', password: 'pw', poolSize: 25, statementTimeoutMs: 2_500 });
  });

  it('leaves the password to PostgreSQL\'s own ways (PGPASSWORD, ~/.pgpass) when no variable is named', () => {
    const settings = settingsOf({}, { REGMIRROR_METADATA_DRIVER: 'postgres', REGMIRROR_METADATA_URL: 'postgres://regmirror@db.example/regmirror' });
    assert.deepEqual(settings.metadata, { driver: 'postgres', url: 'postgres://regmirror@db.example/regmirror', password: undefined, poolSize: 10, statementTimeoutMs: 10_000 });
  });

  const invalid: { name: string; yaml: string; fragments: string[] }[] = [
    { name: 'an unknown driver', yaml: 'metadata:\n  driver: mysql\n', fragments: ['metadata.driver'] },
    { name: 'postgres without a URL', yaml: 'metadata:\n  driver: postgres\n', fragments: ['metadata.url', 'required with metadata.driver: postgres'] },
    { name: 'a URL for sqlite', yaml: 'metadata:\n  url: postgres://db.example/r\n', fragments: ['metadata.url', 'only with metadata.driver: postgres'] },
    { name: 'a password variable for sqlite', yaml: 'metadata:\n  passwordEnv: PW\n', fragments: ['metadata.passwordEnv', 'only with metadata.driver: postgres'] },
    { name: 'a URL of another scheme', yaml: 'metadata:\n  driver: postgres\n  url: mysql://db.example/r\n', fragments: ['metadata.url', 'postgres://'] },
    { name: 'a URL that is none', yaml: 'metadata:\n  driver: postgres\n  url: db.example\n', fragments: ['metadata.url', 'not a URL'] },
    { name: 'a password variable that is no name', yaml: 'metadata:\n  driver: postgres\n  url: postgres://db.example/r\n  passwordEnv: "$PW"\n', fragments: ['metadata.passwordEnv'] },
    { name: 'a pool of none', yaml: 'metadata:\n  driver: postgres\n  url: postgres://db.example/r\n  poolSize: 0\n', fragments: ['metadata.poolSize'] },
    { name: 'a pool that is no number', yaml: 'metadata:\n  driver: postgres\n  url: postgres://db.example/r\n  poolSize: many\n', fragments: ['metadata.poolSize'] },
    { name: 'a bad statement timeout', yaml: 'metadata:\n  driver: postgres\n  url: postgres://db.example/r\n  statementTimeout: soon\n', fragments: ['metadata.statementTimeout', 'not a duration'] },
    { name: 'a statement timeout of 0', yaml: 'metadata:\n  driver: postgres\n  url: postgres://db.example/r\n  statementTimeout: 0\n', fragments: ['metadata.statementTimeout', 'more than 0'] },
    { name: 'an unknown metadata key', yaml: 'metadata:\n  driver: postgres\n  url: postgres://db.example/r\n  password: x\n', fragments: ['metadata', 'password'] },
  ];
  for (const { name, yaml, fragments } of invalid) {
    it(`reports ${name}`, async () => {
      const file = await writeTemporary(yaml);
      assertConfigError(() => settingsOf({ config: file }, {}), ...fragments);
    });
  }

  it('reports a password variable that is not set, naming the key and the variable', () => {
    assertConfigError(
      () => settingsOf({}, { REGMIRROR_METADATA_DRIVER: 'postgres', REGMIRROR_METADATA_URL: 'postgres://db.example/r', REGMIRROR_METADATA_PASSWORD_ENV: 'DB_PW' }),
      'metadata.passwordEnv',
      'DB_PW is not set',
    );
  });

  it('refuses a password in the URL, without repeating it', () => {
    for (const url of ['postgres://regmirror:hunter2@db.example/r', 'postgres://regmirror@db.example/r?password=hunter2']) {
      assert.throws(
        () => settingsOf({}, { REGMIRROR_METADATA_DRIVER: 'postgres', REGMIRROR_METADATA_URL: url }),
        (error: unknown) => error instanceof ConfigError && error.message.includes('metadata.url') && error.message.includes('passwordEnv') && !error.message.includes('hunter2'),
      );
    }
  });
});

describe('loadSettings: cluster', () => {
  const engines = {
    REGMIRROR_METADATA_DRIVER: 'postgres',
    REGMIRROR_METADATA_URL: 'postgres://regmirror@db.example/regmirror',
    REGMIRROR_STORAGE_DRIVER: 's3',
    REGMIRROR_STORAGE_S3_BUCKET: 'regmirror',
  };

  it('reads advertise and the secret file (one trailing newline removed), from the file and from REGMIRROR_CLUSTER_*', async () => {
    const secretFile = await writeTemporary('0123456789abcdef-secret\n');
    const file = await writeTemporary(`cluster:\n  advertise: http://10.0.0.5:5000/\n  secretFile: ${secretFile}\n`);
    assert.deepEqual(settingsOf({ config: file }, engines).cluster, { advertise: 'http://10.0.0.5:5000', secret: '0123456789abcdef-secret' });
    const fromEnvironment = settingsOf({}, { ...engines, REGMIRROR_CLUSTER_ADVERTISE: 'https://node-2.internal:5443', REGMIRROR_CLUSTER_SECRET_FILE: secretFile });
    assert.deepEqual(fromEnvironment.cluster, { advertise: 'https://node-2.internal:5443', secret: '0123456789abcdef-secret' });
  });

  it('refuses cluster mode without PostgreSQL and S3', async () => {
    const secretFile = await writeTemporary('0123456789abcdef\n');
    const cluster = { REGMIRROR_CLUSTER_ADVERTISE: 'http://10.0.0.5:5000', REGMIRROR_CLUSTER_SECRET_FILE: secretFile };
    assertConfigError(() => settingsOf({}, cluster), 'cluster', 'metadata.driver: postgres and storage.driver: s3');
    assertConfigError(() => settingsOf({}, { ...cluster, REGMIRROR_METADATA_DRIVER: 'postgres', REGMIRROR_METADATA_URL: 'postgres://db.example/r' }), 'storage.driver: s3');
    assertConfigError(() => settingsOf({}, { ...cluster, REGMIRROR_STORAGE_DRIVER: 's3', REGMIRROR_STORAGE_S3_BUCKET: 'regmirror' }), 'metadata.driver: postgres');
  });

  it('refuses cluster mode with htpasswd logins but no auth.token.key shared by the nodes', async () => {
    const secretFile = await writeTemporary('0123456789abcdef\n');
    const htpasswd = await writeTemporary('user:$2y$05$abcdefghijklmnopqrstuu1234567890123456789012345678901\n');
    const withAuth = { ...engines, REGMIRROR_CLUSTER_ADVERTISE: 'http://10.0.0.5:5000', REGMIRROR_CLUSTER_SECRET_FILE: secretFile, REGMIRROR_AUTH_HTPASSWD: htpasswd };
    assertConfigError(() => settingsOf({}, withAuth), 'auth.token.key', 'shared by the nodes');
    const key = await writeTemporary('-----BEGIN PRIVATE KEY-----\n');
    assert.deepEqual(settingsOf({}, { ...withAuth, REGMIRROR_AUTH_TOKEN_KEY: key }).cluster, { advertise: 'http://10.0.0.5:5000', secret: '0123456789abcdef' });
  });

  it('refuses a secret shorter than 16 characters, or a file it cannot read, without repeating the secret', async () => {
    const short = await writeTemporary('fifteen-chars-x\n');
    assert.throws(
      () => settingsOf({}, { ...engines, REGMIRROR_CLUSTER_ADVERTISE: 'http://10.0.0.5:5000', REGMIRROR_CLUSTER_SECRET_FILE: short }),
      (error: unknown) => error instanceof ConfigError && error.message.includes('at least 16 characters') && !error.message.includes('fifteen-chars-x'),
    );
    const missing = path.join(directory, 'no-such-secret');
    assertConfigError(() => settingsOf({}, { ...engines, REGMIRROR_CLUSTER_ADVERTISE: 'http://10.0.0.5:5000', REGMIRROR_CLUSTER_SECRET_FILE: missing }), 'cluster.secretFile', 'cannot read');
  });

  const invalid: { name: string; yaml: string; fragments: string[] }[] = [
    { name: 'advertise without a secret', yaml: 'cluster:\n  advertise: http://10.0.0.5:5000\n', fragments: ['cluster.secretFile', 'required with cluster.advertise'] },
    { name: 'a secret without advertise', yaml: 'cluster:\n  secretFile: /run/secret\n', fragments: ['cluster.advertise', 'required with cluster.secretFile'] },
    { name: 'an advertise that is no URL', yaml: 'cluster:\n  advertise: 10.0.0.5:5000\n  secretFile: /s\n', fragments: ['cluster.advertise'] },
    { name: 'an advertise of another scheme', yaml: 'cluster:\n  advertise: ftp://10.0.0.5\n  secretFile: /s\n', fragments: ['cluster.advertise', 'http://'] },
    { name: 'an advertise with a path', yaml: 'cluster:\n  advertise: http://10.0.0.5:5000/mirror\n  secretFile: /s\n', fragments: ['cluster.advertise', 'no path'] },
    { name: 'an advertise with credentials', yaml: 'cluster:\n  advertise: http://u:p@10.0.0.5:5000\n  secretFile: /s\n', fragments: ['cluster.advertise', 'no credentials'] },
    { name: 'an unknown cluster key', yaml: 'cluster:\n  secret: x\n', fragments: ['cluster', 'secret'] },
  ];
  for (const { name, yaml, fragments } of invalid) {
    it(`reports ${name}`, async () => {
      const file = await writeTemporary(yaml);
      assertConfigError(() => settingsOf({ config: file }, {}), ...fragments);
    });
  }
});
