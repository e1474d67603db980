// Tests for reading docker-registry 0.9 configuration files: detection, flavors, YAML merges, `_env:`
// values, every mapped key, the warnings and the refusals. The environment is always a fake object.

import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { isLegacyDocument, translateLegacyConfig, type LegacyTranslation } from './legacy.js';
import { ConfigError } from './config-error.js';
import { loadSettings, type ConfigFlags, type LoadedSettings } from './load.js';
import type { ConfigInput } from './schema.js';

const directory = mkdtempSync(path.join(tmpdir(), 'regmirror-legacy-'));
let fileCount = 0;
after(() => rmSync(directory, { recursive: true, force: true }));

/** The configuration of the seed document, as written there. */
const SEED = `
# The \`common' part is automatically included (and possibly overriden by all
# other flavors)
common: &common
    loglevel: debug
    mirroring:
        source: https://your_private_registry_domain
        #source_index: https://index.docker.io
        tags_cache_ttl: 172800  # seconds

local:
    <<: *common
    storage: local
    storage_path: /tmp/registry
`;

function translate(yaml: string, environment: NodeJS.ProcessEnv = {}, flavor?: string): LegacyTranslation {
  return translateLegacyConfig(yaml, { file: 'config.yml', flavor, environment });
}

/** The v1 input of a one-flavor file (dev, the default flavor). */
function v1Of(dev: string, environment: NodeJS.ProcessEnv = {}): ConfigInput['v1'] {
  return translate(`dev:\n${indent(dev)}`, environment).input.v1;
}

function warningsOf(dev: string, environment: NodeJS.ProcessEnv = {}): string[] {
  return translate(`dev:\n${indent(dev)}`, environment).warnings;
}

function indent(text: string): string {
  return text
    .split('\n')
    .map((line) => `  ${line}`)
    .join('\n');
}

function load(yaml: string, environment: NodeJS.ProcessEnv = {}, flags: ConfigFlags = {}): LoadedSettings {
  const file = path.join(directory, `config-${++fileCount}.yml`);
  writeFileSync(file, yaml);
  return loadSettings({ config: file, ...flags }, environment);
}

/** Asserts that fn throws a ConfigError whose message contains every fragment (a failure shows the error). */
function assertConfigError(fn: () => unknown, ...fragments: string[]): void {
  assert.throws(fn, (error: unknown) => error instanceof ConfigError && fragments.every((fragment) => error.message.includes(fragment)));
}

describe('isLegacyDocument', () => {
  const cases: { name: string; document: Record<string, unknown>; legacy: boolean }[] = [
    { name: 'the seed: common and local', document: { common: { loglevel: 'debug' }, local: { storage: 'local' } }, legacy: true },
    { name: 'common alone', document: { common: { mirroring: { source: 'https://a.example' } } }, legacy: true },
    { name: 'one flavor of ignored keys', document: { prod: { search_backend: 'sqlalchemy', secret_key: 'x' } }, legacy: true },
    { name: 'one flavor of prefixed keys', document: { s3: { s3_bucket: 'b' } }, legacy: true },
    { name: 'a flavor that only merges (parsed without merges)', document: { c: { storage_path: '/r' }, prod: { '<<': { storage_path: '/r' } } }, legacy: true },
    { name: 'a flavor that merges a list', document: { prod: { '<<': [{ x: 1 }, { loglevel: 'info' }] } }, legacy: true },
    { name: 'an empty flavor beside a real one', document: { test: null, dev: { standalone: true } }, legacy: true },
    { name: 'regmirror: listen and data', document: { listen: ':5000', data: '/d' }, legacy: false },
    { name: 'regmirror: v1 holds docker-registry-like keys', document: { v1: { standalone: true, mirroring: { source: 'https://a.example' } } }, legacy: false },
    { name: 'regmirror: log', document: { log: { level: 'debug' } }, legacy: false },
    { name: 'regmirror: cache, a docker-registry key one level down', document: { cache: { host: 'redis' } }, legacy: false },
    { name: 'regmirror: timeouts', document: { timeouts: { connect: '1s' } }, legacy: false },
    { name: 'regmirror: upstreams', document: { upstreams: [{ url: 'https://a.example' }] }, legacy: false },
    { name: 'a regmirror key beside flavors', document: { common: { loglevel: 'info' }, listen: ':5000' }, legacy: false },
    { name: 'an empty document', document: {}, legacy: false },
    { name: 'sections without a docker-registry key', document: { common: { foo: 1 } }, legacy: false },
    { name: 'a scalar beside a flavor', document: { common: { loglevel: 'info' }, version: 1 }, legacy: false },
    { name: 'a list beside a flavor', document: { common: { loglevel: 'info' }, hosts: ['a'] }, legacy: false },
    { name: 'a typo of a regmirror key', document: { listne: ':5000' }, legacy: false },
  ];
  for (const { name, document, legacy } of cases) {
    it(`${name} → ${legacy ? 'docker-registry' : 'regmirror'}`, () => {
      assert.equal(isLegacyDocument(document), legacy);
    });
  }
});

describe('flavors', () => {
  const file = `
common:
  loglevel: info
  storage_path: /common
dev:
  storage_path: /dev
local:
  storage_path: /local
  loglevel: error
`;
  const cases: { name: string; environment: NodeJS.ProcessEnv; flag?: string; flavor: string; data: string; level: string }[] = [
    { name: 'dev by default, over common', environment: {}, flavor: 'dev', data: '/dev', level: 'info' },
    { name: 'SETTINGS_FLAVOR', environment: { SETTINGS_FLAVOR: 'local' }, flavor: 'local', data: '/local', level: 'error' },
    { name: '--flavor before SETTINGS_FLAVOR', environment: { SETTINGS_FLAVOR: 'local' }, flag: 'dev', flavor: 'dev', data: '/dev', level: 'info' },
    { name: 'an empty SETTINGS_FLAVOR as unset', environment: { SETTINGS_FLAVOR: '' }, flavor: 'dev', data: '/dev', level: 'info' },
    { name: 'common asked for', environment: {}, flag: 'common', flavor: 'common', data: '/common', level: 'info' },
  ];
  for (const { name, environment, flag, flavor, data, level } of cases) {
    it(name, () => {
      const translation = translate(file, environment, flag);
      assert.equal(translation.flavor, flavor);
      assert.equal(translation.input.data, data);
      assert.equal(translation.input.log?.level, level);
      assert.deepEqual(translation.warnings, []);
    });
  }

  it('uses common alone, with a notice, when the default flavor has no section', () => {
    const translation = translate('common:\n  storage_path: /common\nlocal:\n  storage_path: /local\n');
    assert.equal(translation.flavor, 'common');
    assert.equal(translation.input.data, '/common');
    assert.equal(translation.warnings.length, 1);
    assert.match(translation.warnings[0] ?? '', /no dev flavor .*using common alone.*--flavor or SETTINGS_FLAVOR.*common, local/);
  });

  const missing: { name: string; yaml: string; environment: NodeJS.ProcessEnv; flag?: string; fragments: string[] }[] = [
    { name: 'a --flavor that is missing', yaml: file, environment: {}, flag: 'prod', fragments: ['flavor prod', '--flavor', 'missing in config.yml', 'common, dev, local'] },
    { name: 'a SETTINGS_FLAVOR that is missing', yaml: file, environment: { SETTINGS_FLAVOR: 'prod' }, fragments: ['flavor prod', 'SETTINGS_FLAVOR'] },
    {
      name: 'neither dev nor common',
      yaml: 'local:\n  storage: local\nprod:\n  storage: s3\n',
      environment: {},
      fragments: ['neither a dev', 'nor a common', 'local, prod'],
    },
    { name: 'a flavor that is not a mapping', yaml: 'dev: local\ncommon:\n  storage: local\n', environment: {}, fragments: ['flavor dev', 'mapping'] },
  ];
  for (const { name, yaml, environment, flag, fragments } of missing) {
    it(`refuses ${name}`, () => {
      assertConfigError(() => translate(yaml, environment, flag), ...fragments);
    });
  }

  it('merges a flavor without <<: over common, key by key, not deeper', () => {
    const translation = translate(`
common:
  loglevel: warn
  mirroring: { source: https://common.example, tags_cache_ttl: 60 }
dev:
  mirroring: { source: https://dev.example }
`);
    assert.equal(translation.input.log?.level, 'warn');
    assert.deepEqual(translation.input.v1?.mirroring, { source: 'https://dev.example', sourceIndex: undefined, tagsCacheTtl: undefined });
  });

  it('takes an empty flavor section as common alone', () => {
    const translation = translate('common:\n  storage_path: /common\ndev:\n');
    assert.equal(translation.flavor, 'dev');
    assert.equal(translation.input.data, '/common');
    assert.deepEqual(translation.warnings, []);
  });
});

describe('YAML as docker-registry read it', () => {
  it('follows anchors and <<: merges, a flavor overriding what it merges', () => {
    const translation = translate(
      `
common: &common
  loglevel: debug
  storage_path: /common
local: &local
  <<: *common
  storage_path: /local
dev:
  <<: *local
  loglevel: error
`,
    );
    assert.deepEqual([translation.input.log?.level, translation.input.data], ['error', '/local']);
  });

  it('merges a list of mappings, the first winning', () => {
    const translation = translate('a: &a { storage_path: /a }\nb: &b { storage_path: /b, loglevel: info }\ndev:\n  <<: [*a, *b]\n');
    assert.deepEqual([translation.input.log?.level, translation.input.data], ['info', '/a']);
  });

  const scalars: { yaml: string; standalone: boolean | undefined }[] = [
    { yaml: 'yes', standalone: true },
    { yaml: 'On', standalone: true },
    { yaml: 'TRUE', standalone: true },
    { yaml: 'no', standalone: false },
    { yaml: 'off', standalone: false },
    { yaml: 'False', standalone: false },
    { yaml: '~', standalone: undefined },
  ];
  for (const { yaml, standalone } of scalars) {
    it(`reads standalone: ${yaml} as PyYAML did`, () => {
      assert.equal(v1Of(`standalone: ${yaml}`)?.standalone, standalone);
    });
  }

  it('keeps y and n strings, as PyYAML did', () => {
    assertConfigError(() => v1Of('standalone: y'), 'standalone', 'expected true or false', '"y"');
  });

  it('reads YAML 1.1 octal and sexagesimal numbers', () => {
    assert.equal(v1Of('mirroring: { source: https://a.example, tags_cache_ttl: 010 }')?.mirroring?.tagsCacheTtl, 8);
    assert.equal(v1Of('mirroring: { source: https://a.example, tags_cache_ttl: 1:30 }')?.mirroring?.tagsCacheTtl, 90);
  });

  it('reports YAML it cannot parse', () => {
    assertConfigError(() => translate('dev: [unclosed\n'), 'config.yml', 'not valid YAML');
  });
});

describe('_env: values', () => {
  const cases: { name: string; value: string; environment: NodeJS.ProcessEnv; expected: unknown }[] = [
    { name: 'the variable', value: '_env:STORAGE_PATH', environment: { STORAGE_PATH: '/srv' }, expected: '/srv' },
    { name: 'the variable before the default', value: '_env:STORAGE_PATH:/tmp/registry', environment: { STORAGE_PATH: '/srv' }, expected: '/srv' },
    { name: 'the default when unset', value: '_env:STORAGE_PATH:/tmp/registry', environment: {}, expected: '/tmp/registry' },
    { name: 'a default holding colons', value: '_env:STORAGE_PATH:/a:b:c', environment: {}, expected: '/a:b:c' },
    { name: 'nothing when unset without a default', value: '_env:STORAGE_PATH', environment: {}, expected: undefined },
    { name: 'nothing when set empty', value: '_env:STORAGE_PATH:/tmp/registry', environment: { STORAGE_PATH: '' }, expected: undefined },
    { name: 'nothing for an empty default', value: '"_env:STORAGE_PATH:"', environment: {}, expected: undefined },
    { name: 'a string not starting with _env:', value: 'x_env:STORAGE_PATH', environment: { STORAGE_PATH: '/srv' }, expected: 'x_env:STORAGE_PATH' },
  ];
  for (const { name, value, environment, expected } of cases) {
    it(`gives ${name}`, () => {
      assert.equal(translate(`dev:\n  storage_path: ${value}\n`, environment).input.data, expected);
    });
  }

  const MIRROR = 'mirroring: { source: https://a.example, tags_cache_ttl: _env:TTL:172800 }';
  const typed: { name: string; dev: string; environment: NodeJS.ProcessEnv; pick: (v1: ConfigInput['v1']) => unknown; expected: unknown }[] = [
    { name: 'a boolean', dev: 'standalone: _env:STANDALONE:true', environment: { STANDALONE: 'false' }, pick: (v1) => v1?.standalone, expected: false },
    { name: 'a PyYAML boolean', dev: 'standalone: _env:STANDALONE:true', environment: { STANDALONE: 'no' }, pick: (v1) => v1?.standalone, expected: false },
    { name: 'a boolean default', dev: 'standalone: _env:STANDALONE:true', environment: {}, pick: (v1) => v1?.standalone, expected: true },
    { name: 'a number', dev: MIRROR, environment: { TTL: '3600' }, pick: (v1) => v1?.mirroring?.tagsCacheTtl, expected: 3600 },
    { name: 'a number default', dev: MIRROR, environment: {}, pick: (v1) => v1?.mirroring?.tagsCacheTtl, expected: 172800 },
    {
      name: 'a URL with a port',
      dev: 'mirroring: { source: _env:SOURCE }',
      environment: { SOURCE: 'https://up.example:5000' },
      pick: (v1) => v1?.mirroring?.source,
      expected: 'https://up.example:5000',
    },
  ];
  for (const { name, dev, environment, pick, expected } of typed) {
    it(`reads ${name} as YAML`, () => {
      assert.equal(pick(v1Of(dev, environment)), expected);
    });
  }

  it('resolves values inside lists', () => {
    assert.deepEqual(warningsOf('cors:\n  origins: [_env:CORS_ORIGIN]'), []);
    assert.equal(warningsOf('cors:\n  origins: [_env:CORS_ORIGIN]', { CORS_ORIGIN: 'https://ui.example' }).length, 1);
  });

  it('resolves values of the selected flavor only', () => {
    assert.equal(translate('dev:\n  storage_path: /d\nprod:\n  storage_path: _env:P\n', { P: '[unclosed' }).input.data, '/d');
  });

  it('names the key and the variable of a value that is not YAML, never the value', () => {
    assert.throws(
      () => v1Of('mirroring:\n  source: _env:SOURCE', { SOURCE: '[secret-unclosed' }),
      (error: unknown) =>
        error instanceof ConfigError &&
        error.message.includes('mirroring.source') &&
        error.message.includes('the value of SOURCE') &&
        !error.message.includes('secret'),
    );
    assertConfigError(() => v1Of('mirroring:\n  source: "_env:SOURCE:[x"'), 'mirroring.source', 'the default of _env:SOURCE');
  });
});

describe('mapped keys', () => {
  it('storage_path: the data directory, with v1 content at its top', () => {
    const { settings, warnings } = load('local:\n  storage: local\n  storage_path: /srv/registry\n', { SETTINGS_FLAVOR: 'local' });
    assert.equal(settings.dataDir, '/srv/registry');
    assert.equal(settings.v1.storagePrefix, '');
    assert.deepEqual(warnings, []);
  });

  it('without storage_path: the default data directory, still laid out as a storage_path', () => {
    const { settings } = load('common:\n  loglevel: info\ndev:\n  storage: local\n');
    assert.equal(settings.dataDir, './data');
    assert.equal(settings.v1.storagePrefix, '');
  });

  const levels: [string, string][] = [
    ['debug', 'debug'],
    ['info', 'info'],
    ['warn', 'warn'],
    ['warning', 'warn'],
    ['error', 'error'],
    ['critical', 'fatal'],
    ['fatal', 'fatal'],
    ['DEBUG', 'debug'],
    ['Warning', 'warn'],
  ];
  for (const [loglevel, level] of levels) {
    it(`loglevel ${loglevel} → log.level ${level}`, () => {
      assert.equal(load(`dev:\n  loglevel: ${loglevel}\n`).settings.logLevel, level);
    });
  }

  it('mirroring: v1 mirroring, the TTL in seconds', () => {
    const { settings, warnings } = load(
      'dev:\n  mirroring:\n    source: https://registry-1.docker.io/\n    source_index: https://index.docker.io\n    tags_cache_ttl: 3600\n',
    );
    assert.deepEqual(settings.v1.mirroring, {
      source: 'https://registry-1.docker.io',
      sourceIndex: 'https://index.docker.io',
      tagsCacheTtlMs: 3_600_000,
      credentials: undefined,
      trustedHosts: [],
    });
    assert.deepEqual(settings.upstreams, [], 'the v2 side does not mirror the v1 source');
    assert.deepEqual(warnings, []);
  });

  it('mirroring without tags_cache_ttl: 48 hours, as docker-registry', () => {
    assert.equal(load('dev:\n  mirroring: { source: http://up.example }\n').settings.v1.mirroring?.tagsCacheTtlMs, 172_800_000);
  });

  it('mirroring without a source: no mirroring, silently (the sample sets the TTL always)', () => {
    const { settings, warnings } = load('dev:\n  mirroring:\n    source: _env:MIRROR_SOURCE\n    tags_cache_ttl: _env:MIRROR_TAGS_CACHE_TTL:172800\n');
    assert.equal(settings.v1.mirroring, undefined);
    assert.deepEqual(warnings, []);
  });

  const v1Keys: { yaml: string; expected: Partial<LoadedSettings['settings']['v1']> }[] = [
    { yaml: 'standalone: false', expected: { standalone: false } },
    { yaml: 'standalone: true', expected: { standalone: true } },
    { yaml: 'nginx_x_accel_redirect: /registry_data', expected: { nginxXAccelRedirect: '/registry_data' } },
    { yaml: 'nginx_x_accel_redirect: _env:NGINX_X_ACCEL_REDIRECT', expected: { nginxXAccelRedirect: undefined } },
    { yaml: 'storage_redirect: false', expected: { storageRedirect: false } },
    { yaml: 'storage_redirect: _env:STORAGE_REDIRECT', expected: { storageRedirect: false } },
  ];
  for (const { yaml, expected } of v1Keys) {
    it(`${yaml} → v1 ${JSON.stringify(expected)}`, () => {
      const { settings, warnings } = load(`dev:\n  ${yaml}\n`);
      for (const [key, value] of Object.entries(expected)) assert.equal(settings.v1[key as keyof typeof expected], value, key);
      assert.deepEqual(warnings, []);
    });
  }

  it('storage_redirect: true is kept, with a warning that local storage has no use for it', () => {
    const { settings, warnings } = load('dev:\n  storage_redirect: true\n');
    assert.equal(settings.v1.storageRedirect, true);
    assert.equal(warnings.length, 1);
    assert.match(warnings[0] ?? '', /^storage_redirect \(docker-registry flavor dev\): no effect on local storage/);
  });

  for (const storage of ['local', 'file', 'Local', '_env:STORAGE:local']) {
    it(`accepts storage: ${storage}`, () => {
      assert.deepEqual(load(`dev:\n  storage: ${storage}\n`).warnings, []);
    });
  }

  it('keeps v1 enabled and its defaults', () => {
    const { settings } = load('dev:\n  storage: local\n');
    assert.deepEqual(settings.v1, { enabled: true, standalone: true, mirroring: undefined, storagePrefix: '', nginxXAccelRedirect: undefined, storageRedirect: false });
  });
});

describe('warnings', () => {
  const ignored: { yaml: string; key: string; reason: RegExp }[] = [
    { yaml: 'search_backend: sqlalchemy', key: 'search_backend', reason: /search over local repositories is always on/ },
    { yaml: 'cache: { host: redis, port: 6379, db: 0 }', key: 'cache', reason: /Redis is not needed/ },
    { yaml: 'cache_lru: { host: redis, port: 6379 }', key: 'cache_lru', reason: /Redis is not needed/ },
    { yaml: 'secret_key: s3cr3t', key: 'secret_key', reason: /its own/ },
    { yaml: 'privileged_key: /etc/key.pem', key: 'privileged_key', reason: /not supported/ },
    { yaml: 'debug: true', key: 'debug', reason: /_ping/ },
    { yaml: 'issue: "docker-registry server"', key: 'issue', reason: /banner/ },
    { yaml: 'email_exceptions: { smtp_host: mail.example }', key: 'email_exceptions', reason: /not mailed/ },
    { yaml: 'email_from: a@example.com', key: 'email_from', reason: /not mailed/ },
    { yaml: 'smtp_host: mail.example', key: 'smtp_host', reason: /not mailed/ },
    { yaml: 'from_addr: a@example.com', key: 'from_addr', reason: /not mailed/ },
    { yaml: 'to_addr: b@example.com', key: 'to_addr', reason: /not mailed/ },
    { yaml: 'bugsnag: apikey', key: 'bugsnag', reason: /bugsnag/ },
    { yaml: 'cors: { origins: "*" }', key: 'cors', reason: /CORS/ },
    { yaml: 'gunicorn_workers: 8', key: 'gunicorn_workers', reason: /one Node\.js process/ },
    { yaml: 's3_bucket: b', key: 's3_bucket', reason: /another storage driver/ },
    { yaml: 'boto_host: h', key: 'boto_host', reason: /another storage driver/ },
    { yaml: 'storage_alternate: local', key: 'storage_alternate', reason: /another storage driver/ },
    { yaml: 'standalone: false\nindex_endpoint: https://index.example', key: 'index_endpoint', reason: /separate index/ },
    { yaml: 'standalone: false\ndisable_token_auth: true', key: 'disable_token_auth', reason: /separate index/ },
    { yaml: 'search_backend: sqlalchemy\nsqlalchemy_index_database: sqlite:////tmp/r.db', key: 'sqlalchemy_index_database', reason: /no database/ },
  ];
  for (const { yaml, key, reason } of ignored) {
    it(`${key}, set: a warning naming it`, () => {
      const warnings = warningsOf(yaml).filter((warning) => warning.startsWith(`${key} `));
      assert.equal(warnings.length, 1, JSON.stringify(warningsOf(yaml)));
      assert.match(warnings[0] ?? '', new RegExp(`^${key} \\(docker-registry flavor dev\\): ignored: `));
      assert.match(warnings[0] ?? '', reason);
    });
  }

  const silent: { name: string; yaml: string }[] = [
    { name: 'search_backend unset', yaml: 'search_backend: _env:SEARCH_BACKEND' },
    { name: 'a Redis cache without a host', yaml: 'cache: { host: _env:CACHE_REDIS_HOST, port: _env:CACHE_REDIS_PORT, db: _env:CACHE_REDIS_DB:0 }' },
    { name: 'CORS without origins', yaml: 'cors: { origins: _env:CORS_ORIGINS, headers: "_env:CORS_HEADERS:[Content-Type]" }' },
    { name: 'email without an SMTP host', yaml: 'email_exceptions: { smtp_host: _env:SMTP_HOST, smtp_port: 25 }' },
    { name: 'debug: false', yaml: 'debug: false' },
    { name: 'index_endpoint when standalone', yaml: 'index_endpoint: https://index.docker.io' },
    { name: 'disable_token_auth when standalone', yaml: 'standalone: true\ndisable_token_auth: true' },
    { name: 'sqlalchemy_index_database without search_backend', yaml: 'sqlalchemy_index_database: sqlite:////tmp/r.db' },
    { name: 'an empty list', yaml: 'bugsnag: []' },
  ];
  for (const { name, yaml } of silent) {
    it(`no warning for ${name}`, () => {
      assert.deepEqual(warningsOf(yaml), []);
    });
  }

  it('names an unknown key, and goes on', () => {
    assert.deepEqual(warningsOf('storage: local\nfrobnicate: 1'), ['frobnicate (docker-registry flavor dev): unknown key, ignored']);
  });

  it('names an unknown mirroring key', () => {
    assert.deepEqual(warningsOf('mirroring: { source: https://a.example, source_auth: x }'), ['mirroring.source_auth (docker-registry flavor dev): unknown key, ignored']);
  });

  it('says that source_index does nothing without a source', () => {
    assert.deepEqual(warningsOf('mirroring: { source_index: https://index.example }'), [
      'mirroring.source_index (docker-registry flavor dev): ignored: mirroring is off without mirroring.source',
    ]);
  });

  it('returns the warnings from loadSettings, one each', () => {
    const { warnings } = load('common:\n  search_backend: sqlalchemy\n  bugsnag: key\n  frobnicate: 1\n');
    assert.equal(warnings.length, 4);
    assert.match(warnings[0] ?? '', /no dev flavor/);
  });
});

describe('refusals', () => {
  const cases: { name: string; yaml: string; fragments: string[] }[] = [
    { name: 'storage s3', yaml: 'storage: s3', fragments: ['storage (docker-registry flavor dev)', 'storage s3 is not supported yet'] },
    { name: 'storage S3, in any case', yaml: 'storage: S3', fragments: ['storage s3 is not supported yet'] },
    { name: 'storage glance', yaml: 'storage: glance', fragments: ['storage glance is not supported yet'] },
    { name: 'a storage that is not a string', yaml: 'storage: 1', fragments: ['storage', 'expected a string'] },
    { name: 'an unknown loglevel', yaml: 'loglevel: loud', fragments: ['loglevel', 'loud', 'debug, info'] },
    { name: 'a standalone that is not a boolean', yaml: 'standalone: maybe', fragments: ['standalone', 'expected true or false', '"maybe"'] },
    { name: 'a storage_redirect that is not a boolean', yaml: 'storage_redirect: 1', fragments: ['storage_redirect', 'expected true or false'] },
    { name: 'a storage_path that is not a string', yaml: 'storage_path: [a]', fragments: ['storage_path', 'expected a string, got a list'] },
    { name: 'mirroring that is not a mapping', yaml: 'mirroring: true', fragments: ['mirroring', 'expected a mapping'] },
    { name: 'a source that is not a URL', yaml: 'mirroring: { source: up.example }', fragments: ['mirroring.source', 'http(s) URL'] },
    { name: 'a source of another scheme', yaml: 'mirroring: { source: "ftp://up.example" }', fragments: ['mirroring.source', 'http(s) URL'] },
    { name: 'a bad source_index', yaml: 'mirroring: { source: https://a.example, source_index: nope }', fragments: ['mirroring.source_index'] },
    { name: 'a TTL with a unit', yaml: 'mirroring: { source: https://a.example, tags_cache_ttl: 2d }', fragments: ['mirroring.tags_cache_ttl', 'number of seconds', '"2d"'] },
    { name: 'a negative TTL', yaml: 'mirroring: { source: https://a.example, tags_cache_ttl: -1 }', fragments: ['mirroring.tags_cache_ttl'] },
  ];
  for (const { name, yaml, fragments } of cases) {
    it(`refuses ${name}`, () => {
      assertConfigError(() => load(`dev:\n  ${yaml}\n`), 'invalid configuration', ...fragments);
    });
  }

  it('never repeats a bad URL, which may carry credentials', () => {
    assert.throws(
      () => load('dev:\n  mirroring: { source: "https://bob:hunter2@" }\n'),
      (error: unknown) => error instanceof ConfigError && error.message.includes('mirroring.source') && !error.message.includes('hunter2'),
    );
  });

  it('refuses the flavor chosen, not another', () => {
    assert.doesNotThrow(() => load('dev:\n  storage: local\nprod:\n  storage: s3\n'));
    assertConfigError(() => load('dev:\n  storage: local\nprod:\n  storage: s3\n', { SETTINGS_FLAVOR: 'prod' }), 'flavor prod', 'storage s3 is not supported yet');
  });
});

describe('layers over a docker-registry file', () => {
  const yaml = 'local:\n  loglevel: error\n  storage: local\n  storage_path: /from/file\n';

  it('--listen, --data and --log-level override it', () => {
    const { settings } = load(yaml, { SETTINGS_FLAVOR: 'local' }, { listen: '127.0.0.1:7000', data: '/from/flag', logLevel: 'debug' });
    assert.deepEqual(settings.listen, { host: '127.0.0.1', port: 7000 });
    assert.equal(settings.dataDir, '/from/flag');
    assert.equal(settings.logLevel, 'debug');
    assert.equal(settings.v1.storagePrefix, '');
  });

  it('REGMIRROR_* variables override it', () => {
    const { settings } = load(yaml, { SETTINGS_FLAVOR: 'local', REGMIRROR_DATA: '/from/env', REGMIRROR_LOG_LEVEL: 'info', REGMIRROR_LISTEN: ':6000' });
    assert.deepEqual([settings.dataDir, settings.logLevel, settings.listen.port], ['/from/env', 'info', 6000]);
  });

  it('--flavor chooses its section', () => {
    assert.equal(load(`${yaml}dev:\n  storage_path: /dev\n`, {}, { flavor: 'local' }).settings.dataDir, '/from/file');
  });

  it('--flavor with a regmirror file is an error', () => {
    assertConfigError(() => load('listen: ":5000"\n', {}, { flavor: 'local' }), '--flavor', 'regmirror');
  });

  it('--flavor without a file is an error', () => {
    assertConfigError(() => loadSettings({ flavor: 'local' }, {}), '--flavor', '--config');
  });

  it('SETTINGS_FLAVOR means nothing to a regmirror file', () => {
    assert.deepEqual(load('listen: ":5001"\n', { SETTINGS_FLAVOR: 'prod' }).warnings, []);
  });
});

describe('the seed configuration', () => {
  it('with SETTINGS_FLAVOR=local, mirrors its source into /tmp/registry', () => {
    const { settings, warnings } = load(SEED, { SETTINGS_FLAVOR: 'local' });
    assert.equal(settings.dataDir, '/tmp/registry');
    assert.equal(settings.logLevel, 'debug');
    assert.deepEqual(settings.v1, {
      enabled: true,
      standalone: true,
      mirroring: { source: 'https://your_private_registry_domain', sourceIndex: undefined, tagsCacheTtlMs: 172_800_000, credentials: undefined, trustedHosts: [] },
      storagePrefix: '',
      nginxXAccelRedirect: undefined,
      storageRedirect: false,
    });
    assert.deepEqual(warnings, []);
  });

  it('is the regmirror file docs/v1-configuration.md says it is', () => {
    const equivalent = 'data: /tmp/registry\nlog:\n  level: debug\nv1:\n  storagePrefix: ""\n  mirroring:\n    source: https://your_private_registry_domain\n    tagsCacheTtl: 172800\n';
    assert.deepEqual(load(SEED, { SETTINGS_FLAVOR: 'local' }), load(equivalent));
  });

  it('without a flavor, runs common alone with a notice', () => {
    const { settings, warnings } = load(SEED);
    assert.equal(settings.dataDir, './data');
    assert.equal(settings.v1.mirroring?.source, 'https://your_private_registry_domain');
    assert.equal(warnings.length, 1);
    assert.match(warnings[0] ?? '', /no dev flavor/);
  });
});

/** A file in the shape of docker-registry's own sample: every option behind `_env:`, several flavors. */
describe('a sample-style configuration', () => {
  const SAMPLE = `
common: &common
  issue: '"docker-registry server"'
  loglevel: _env:LOGLEVEL:info
  debug: _env:DEBUG:false
  standalone: _env:STANDALONE:true
  index_endpoint: _env:INDEX_ENDPOINT:https://index.docker.io
  storage_redirect: _env:STORAGE_REDIRECT
  disable_token_auth: _env:DISABLE_TOKEN_AUTH
  privileged_key: _env:PRIVILEGED_KEY
  search_backend: _env:SEARCH_BACKEND
  sqlalchemy_index_database: _env:SQLALCHEMY_INDEX_DATABASE:sqlite:////tmp/docker-registry.db
  mirroring:
    source: _env:MIRROR_SOURCE
    source_index: _env:MIRROR_SOURCE_INDEX
    tags_cache_ttl: _env:MIRROR_TAGS_CACHE_TTL:172800
  cache:
    host: _env:CACHE_REDIS_HOST
    port: _env:CACHE_REDIS_PORT
    db: _env:CACHE_REDIS_DB:0
  cors:
    origins: _env:CORS_ORIGINS
    headers: _env:CORS_HEADERS:[Content-Type]
local: &local
  <<: *common
  storage: local
  storage_path: _env:STORAGE_PATH:/tmp/registry
s3: &s3
  <<: *common
  storage: s3
  s3_bucket: _env:AWS_BUCKET
  storage_path: _env:STORAGE_PATH:/registry
dev:
  <<: *local
  loglevel: _env:LOGLEVEL:debug
  debug: _env:DEBUG:true
  search_backend: _env:SEARCH_BACKEND:sqlalchemy
prod:
  <<: *s3
`;

  it('runs dev, warning only about what dev turns on', () => {
    const { settings, warnings } = load(SAMPLE);
    assert.equal(settings.dataDir, '/tmp/registry');
    assert.equal(settings.logLevel, 'debug');
    assert.equal(settings.v1.mirroring, undefined);
    assert.deepEqual(
      warnings.map((warning) => warning.split(' ')[0]),
      ['issue', 'debug', 'search_backend', 'sqlalchemy_index_database'],
    );
  });

  it('runs local as a mirror when the environment says so', () => {
    const { settings, warnings } = load(SAMPLE, {
      SETTINGS_FLAVOR: 'local',
      MIRROR_SOURCE: 'https://registry-1.docker.io',
      MIRROR_TAGS_CACHE_TTL: '600',
      STORAGE_PATH: '/srv/registry',
      LOGLEVEL: 'warn',
      CACHE_REDIS_HOST: 'redis',
    });
    assert.deepEqual([settings.dataDir, settings.logLevel], ['/srv/registry', 'warn']);
    assert.deepEqual(settings.v1.mirroring, { source: 'https://registry-1.docker.io', sourceIndex: undefined, tagsCacheTtlMs: 600_000, credentials: undefined, trustedHosts: [] });
    assert.deepEqual(
      warnings.map((warning) => warning.split(' ')[0]),
      ['issue', 'cache'],
    );
  });

  it('refuses prod: s3', () => {
    assertConfigError(() => load(SAMPLE, { SETTINGS_FLAVOR: 'prod' }), 'storage s3 is not supported yet');
  });
});
