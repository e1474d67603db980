// Reads a docker-registry 0.9 configuration file (flavor sections, `<<:` merges, `_env:NAME[:default]`
// values) and translates it into regmirror's own configuration input, with a warning for what it cannot honour.
// docs/v1-configuration.md documents the mapping; keep the two in step.

import { parse as parseYaml, type Tags } from 'yaml';
import { ConfigError } from './config-error.js';
import { configSchema, type ConfigInput } from './schema.js';

/** docker-registry's flavor when SETTINGS_FLAVOR is not set. */
const DEFAULT_FLAVOR = 'dev';
/** The section every flavor is merged over. */
const COMMON = 'common';
const ENV_PREFIX = '_env:';
const MERGE_KEY = '<<';

type Mapping = Record<string, unknown>;
type V1Input = NonNullable<ConfigInput['v1']>;

export interface LegacyRequest {
  /** The file, for messages. */
  file: string;
  /** `--flavor`, when given. */
  flavor: string | undefined;
  /** Read for SETTINGS_FLAVOR and for `_env:` values. */
  environment: NodeJS.ProcessEnv;
}

export interface LegacyTranslation {
  /** The section used: the flavor asked for, or `common` when the default flavor has no section. */
  flavor: string;
  input: ConfigInput;
  warnings: string[];
}

const REGMIRROR_KEYS = new Set(Object.keys(configSchema.shape));

/**
 * A docker-registry file is a mapping of flavor sections, at least one holding a docker-registry key.
 * A file with any of regmirror's own top-level keys is never one, whatever else it holds.
 */
export function isLegacyDocument(document: Mapping): boolean {
  const keys = Object.keys(document);
  if (keys.length === 0 || keys.some((key) => REGMIRROR_KEYS.has(key))) return false;
  const sections = Object.values(document);
  if (!sections.every((section) => section === null || isMapping(section))) return false;
  return sections.some((section) => isMapping(section) && sectionKeys(section).some(isLegacyKey));
}

/** The section's keys, with those it merges in (`<<:` is a plain key when the caller parsed without merges). */
function sectionKeys(section: Mapping): string[] {
  const merged = section[MERGE_KEY];
  const sources = Array.isArray(merged) ? merged : [merged];
  return [...Object.keys(section), ...sources.flatMap((source) => (isMapping(source) ? Object.keys(source) : []))];
}

function isLegacyKey(key: string): boolean {
  return Object.hasOwn(MAPPED_KEYS, key) || ignoredKey(key) !== undefined;
}

export function translateLegacyConfig(text: string, request: LegacyRequest): LegacyTranslation {
  const document = parseLegacyYaml(text, `configuration file ${request.file}`);
  if (!isMapping(document)) throw new ConfigError(`configuration file ${request.file} must be a mapping of flavors`);
  const { flavor, section, warnings } = selectFlavor(document, request);
  const translation = new Translation(flavor, warnings);
  const resolved = resolveEnvValues(section, '', translation, request.environment) as Mapping;
  for (const [key, value] of Object.entries(resolved)) {
    const mapped = MAPPED_KEYS[key];
    if (mapped !== undefined) {
      mapped(value, translation);
      continue;
    }
    const ignored = ignoredKey(key);
    if (ignored === undefined) translation.warn(key, 'unknown key, ignored');
    else if ((ignored.inEffect ?? isSet)(value, resolved)) translation.warn(key, `ignored: ${ignored.reason}`);
  }
  return { flavor, input: translation.input, warnings: translation.warnings };
}

// PyYAML's YAML 1.1 booleans: not the single letters y/n, which the yaml package's 1.1 schema also reads as such.
const PYTHON_TRUE = /^(?:yes|Yes|YES|true|True|TRUE|on|On|ON)$/;
const PYTHON_FALSE = /^(?:no|No|NO|false|False|FALSE|off|Off|OFF)$/;
const BOOLEAN_TAG = 'tag:yaml.org,2002:bool';

function pythonBooleans(tags: Tags): Tags {
  return tags.map((tag) => {
    if (typeof tag !== 'object' || tag.collection !== undefined || tag.tag !== BOOLEAN_TAG || tag.identify === undefined) return tag;
    return { ...tag, test: tag.identify(true) ? PYTHON_TRUE : PYTHON_FALSE };
  });
}

/** YAML as docker-registry's PyYAML read it: YAML 1.1 scalars (yes/no, 010 octal), with `<<:` merges. */
function parseLegacyYaml(text: string, what: string): unknown {
  try {
    return parseYaml(text, { version: '1.1', merge: true, customTags: pythonBooleans }) ?? null;
  } catch (error) {
    throw new ConfigError(`${what} is not valid YAML: ${(error as Error).message}`, { cause: error });
  }
}

/**
 * The flavor from --flavor, else SETTINGS_FLAVOR, else dev, merged key by key over `common` (docker-registry
 * 0.9 did that only through `<<: *common`, which its sample and every flavor written for it carry anyway).
 */
function selectFlavor(document: Mapping, request: LegacyRequest): { flavor: string; section: Mapping; warnings: string[] } {
  const fromEnvironment = request.environment.SETTINGS_FLAVOR === '' ? undefined : request.environment.SETTINGS_FLAVOR;
  const asked = request.flavor ?? fromEnvironment;
  const flavor = asked ?? DEFAULT_FLAVOR;
  const flavors = Object.keys(document).join(', ');
  const common = flavorSection(document, COMMON, request.file);
  if (Object.hasOwn(document, flavor)) {
    return { flavor, section: { ...common, ...flavorSection(document, flavor, request.file) }, warnings: [] };
  }
  if (asked !== undefined) {
    const origin = request.flavor !== undefined ? '--flavor' : 'SETTINGS_FLAVOR';
    throw new ConfigError(`invalid configuration: flavor ${flavor} (from ${origin}) is missing in ${request.file}; its flavors: ${flavors}`);
  }
  if (!Object.hasOwn(document, COMMON)) {
    throw new ConfigError(
      `invalid configuration: ${request.file} has neither a ${DEFAULT_FLAVOR} (the default flavor) nor a ${COMMON} section; ` +
        `choose a flavor with --flavor or SETTINGS_FLAVOR (its flavors: ${flavors})`,
    );
  }
  const notice = `${request.file} has no ${DEFAULT_FLAVOR} flavor (the default): using ${COMMON} alone; choose a flavor with --flavor or SETTINGS_FLAVOR (its flavors: ${flavors})`;
  return { flavor: COMMON, section: common, warnings: [notice] };
}

function flavorSection(document: Mapping, name: string, file: string): Mapping {
  const value = document[name];
  if (value === undefined || value === null) return {};
  if (!isMapping(value)) throw new ConfigError(`invalid configuration: flavor ${name} in ${file} must be a mapping of keys`);
  return value;
}

/** `_env:NAME[:default]` anywhere, as docker-registry: the variable's value (else the default), read as YAML. */
function resolveEnvValues(value: unknown, key: string, translation: Translation, environment: NodeJS.ProcessEnv): unknown {
  if (typeof value === 'string' && value.startsWith(ENV_PREFIX)) return resolveEnvReference(value, key, translation, environment);
  if (Array.isArray(value)) return value.map((item, index) => resolveEnvValues(item, `${key}.${index}`, translation, environment));
  if (!isMapping(value)) return value;
  const entries = Object.entries(value).map(([name, item]) => [name, resolveEnvValues(item, key === '' ? name : `${key}.${name}`, translation, environment)]);
  return Object.fromEntries(entries) as Mapping;
}

function resolveEnvReference(reference: string, key: string, translation: Translation, environment: NodeJS.ProcessEnv): unknown {
  const rest = reference.slice(ENV_PREFIX.length);
  const colon = rest.indexOf(':');
  const variable = colon === -1 ? rest : rest.slice(0, colon);
  const fallback = colon === -1 ? '' : rest.slice(colon + 1);
  const value = environment[variable];
  // The message names the variable, never its value: it may be a password.
  const what = value === undefined ? `the default of ${ENV_PREFIX}${variable}` : `the value of ${variable}`;
  try {
    return parseYaml(value ?? fallback, { version: '1.1', customTags: pythonBooleans }) ?? null;
  } catch (error) {
    throw translation.problem(key, `${what} is not valid YAML`, error);
  }
}

/** What one flavor section becomes: regmirror's input, and the warnings on the way. */
class Translation {
  /** A docker-registry storage_path holds v1 content at its top: `images/`, `repositories/`. */
  readonly v1: V1Input = { storagePrefix: '' };
  readonly input: ConfigInput = { v1: this.v1 };

  constructor(
    private readonly flavor: string,
    readonly warnings: string[],
  ) {}

  warn(key: string, message: string): void {
    this.warnings.push(`${key} (docker-registry flavor ${this.flavor}): ${message}`);
  }

  problem(key: string, message: string, cause?: unknown): ConfigError {
    return new ConfigError(`invalid configuration: ${key} (docker-registry flavor ${this.flavor}): ${message}`, cause === undefined ? undefined : { cause });
  }

  optionalString(value: unknown, key: string): string | undefined {
    if (value === null || value === undefined || value === '') return undefined;
    if (typeof value !== 'string') throw this.problem(key, `expected a string, got ${describe(value)}`);
    return value;
  }

  optionalBoolean(value: unknown, key: string): boolean | undefined {
    if (value === null || value === undefined) return undefined;
    if (typeof value !== 'boolean') throw this.problem(key, `expected true or false, got ${describe(value)}`);
    return value;
  }

  optionalUrl(value: unknown, key: string): string | undefined {
    const text = this.optionalString(value, key);
    if (text !== undefined && !(URL.canParse(text) && /^https?:$/.test(new URL(text).protocol))) {
      // Not repeated: a URL may carry credentials.
      throw this.problem(key, 'expected an http(s) URL');
    }
    return text;
  }
}

/** docker-registry's loglevel (a Python logging level name) → regmirror's log.level. */
const LOG_LEVELS: Record<string, NonNullable<NonNullable<ConfigInput['log']>['level']>> = {
  debug: 'debug',
  info: 'info',
  warn: 'warn',
  warning: 'warn',
  error: 'error',
  critical: 'fatal',
  fatal: 'fatal',
};

/** The keys regmirror honours; each reads its (env-resolved) value into the translation. */
const MAPPED_KEYS: Record<string, (value: unknown, translation: Translation) => void> = {
  storage: (value, translation) => {
    const kind = translation.optionalString(value, 'storage')?.toLowerCase();
    if (kind !== undefined && kind !== 'local' && kind !== 'file') {
      throw translation.problem('storage', `storage ${kind} is not supported yet; regmirror stores on the local filesystem (storage: local)`);
    }
  },
  storage_path: (value, translation) => {
    const storagePath = translation.optionalString(value, 'storage_path');
    if (storagePath !== undefined) translation.input.data = storagePath;
  },
  loglevel: (value, translation) => {
    const name = translation.optionalString(value, 'loglevel');
    if (name === undefined) return;
    const level = LOG_LEVELS[name.toLowerCase()];
    if (level === undefined) throw translation.problem('loglevel', `expected one of ${Object.keys(LOG_LEVELS).join(', ')}, got ${name}`);
    translation.input.log = { level };
  },
  standalone: (value, translation) => {
    const standalone = translation.optionalBoolean(value, 'standalone');
    if (standalone !== undefined) translation.v1.standalone = standalone;
  },
  storage_redirect: (value, translation) => {
    const redirect = translation.optionalBoolean(value, 'storage_redirect');
    if (redirect === undefined) return;
    translation.v1.storageRedirect = redirect;
    if (redirect) translation.warn('storage_redirect', 'no effect on local storage (it takes effect with the S3 store)');
  },
  nginx_x_accel_redirect: (value, translation) => {
    const prefix = translation.optionalString(value, 'nginx_x_accel_redirect');
    if (prefix !== undefined) translation.v1.nginxXAccelRedirect = prefix;
  },
  mirroring: (value, translation) => {
    if (value === null || value === undefined) return;
    if (!isMapping(value)) throw translation.problem('mirroring', `expected a mapping of source, source_index, tags_cache_ttl, got ${describe(value)}`);
    const { source, source_index: sourceIndex, tags_cache_ttl: ttl, ...unknown } = value;
    for (const key of Object.keys(unknown)) translation.warn(`mirroring.${key}`, 'unknown key, ignored');
    const sourceUrl = translation.optionalUrl(source, 'mirroring.source');
    const indexUrl = translation.optionalUrl(sourceIndex, 'mirroring.source_index');
    const ttlSeconds = ttl ?? undefined;
    if (ttlSeconds !== undefined && !(typeof ttlSeconds === 'number' && Number.isFinite(ttlSeconds) && ttlSeconds >= 0)) {
      throw translation.problem('mirroring.tags_cache_ttl', `expected a number of seconds, got ${describe(ttlSeconds)}`);
    }
    if (sourceUrl === undefined) {
      if (indexUrl !== undefined) translation.warn('mirroring.source_index', 'ignored: mirroring is off without mirroring.source');
      return;
    }
    // A number is a count of seconds to the schema's duration, as tags_cache_ttl always was.
    translation.v1.mirroring = { source: sourceUrl, sourceIndex: indexUrl, tagsCacheTtl: ttlSeconds };
  },
};

interface IgnoredKey {
  /** The key, or a prefix ending in `_`. */
  name: string;
  reason: string;
  /** Whether docker-registry would have acted on the value; by default, when it is set at all. */
  inEffect?: (value: unknown, section: Mapping) => boolean;
}

const STORAGE_OPTION = 'an option of another storage driver; regmirror stores on the local filesystem';
const NOT_MAILED = 'errors are logged, not mailed';
const WITHOUT_INDEX = 'regmirror validates no tokens against a separate index';

/** docker-registry keys regmirror knows and does without. */
const IGNORED_KEYS: readonly IgnoredKey[] = [
  { name: 'search_backend', reason: 'search over local repositories is always on, with no backend to configure' },
  { name: 'sqlalchemy_index_database', reason: 'search needs no database', inEffect: (value, section) => isSet(value) && isSet(section.search_backend) },
  { name: 'cache', reason: 'tags are cached in the metadata store; Redis is not needed', inEffect: enabledBy('host') },
  { name: 'cache_lru', reason: 'small files are read from the local store; Redis is not needed', inEffect: enabledBy('host') },
  { name: 'secret_key', reason: 'regmirror keeps no sessions; the tokens it hands out are its own' },
  { name: 'privileged_key', reason: 'privileged access with an RSA key is not supported' },
  { name: 'index_endpoint', reason: WITHOUT_INDEX, inEffect: (value, section) => isSet(value) && section.standalone === false },
  { name: 'disable_token_auth', reason: WITHOUT_INDEX, inEffect: (value, section) => isSet(value) && section.standalone === false },
  { name: 'debug', reason: '_ping carries no debug information' },
  { name: 'issue', reason: 'regmirror answers / with its own banner' },
  { name: 'email_exceptions', reason: NOT_MAILED, inEffect: enabledBy('smtp_host') },
  { name: 'email_', reason: NOT_MAILED },
  { name: 'smtp_', reason: NOT_MAILED },
  { name: 'from_addr', reason: NOT_MAILED },
  { name: 'to_addr', reason: NOT_MAILED },
  { name: 'bugsnag', reason: 'errors are logged, not reported to bugsnag' },
  { name: 'cors', reason: 'CORS headers are not sent', inEffect: enabledBy('origins') },
  { name: 'gunicorn_', reason: 'regmirror is one Node.js process; --listen sets its address' },
  { name: 'storage_alternate', reason: STORAGE_OPTION },
  { name: 'oauth2', reason: STORAGE_OPTION },
  { name: 'cloudfront', reason: STORAGE_OPTION },
  ...['s3_', 'boto_', 'azure_', 'gs_', 'swift_', 'glance_', 'elliptics_', 'oss_'].map((prefix) => ({ name: prefix, reason: STORAGE_OPTION })),
];

function ignoredKey(key: string): IgnoredKey | undefined {
  return IGNORED_KEYS.find(({ name }) => (name.endsWith('_') ? key.startsWith(name) : key === name));
}

/** A feature docker-registry turned on only when one of its keys was set (cache.host, cors.origins …). */
function enabledBy(subkey: string): (value: unknown) => boolean {
  return (value) => isMapping(value) && isSet(value[subkey]);
}

/** Set: not null, '', false, nor a list or mapping of only such values (`_env:` without a default gives null). */
function isSet(value: unknown): boolean {
  if (value === null || value === undefined || value === '' || value === false) return false;
  if (Array.isArray(value)) return value.some(isSet);
  if (isMapping(value)) return Object.values(value).some(isSet);
  return true;
}

function isMapping(value: unknown): value is Mapping {
  return typeof value === 'object' && value !== null && !Array.isArray(value) && !(value instanceof Date);
}

function describe(value: unknown): string {
  if (typeof value === 'string') return JSON.stringify(value);
  if (typeof value === 'number' || typeof value === 'boolean') return String(value);
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'a list';
  return value instanceof Date ? 'a date' : 'a mapping';
}
