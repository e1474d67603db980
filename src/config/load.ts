// Builds the running configuration: the YAML file (regmirror's own, or a docker-registry 0.9 one translated
// by legacy.ts), then REGMIRROR_* variables, then flags, validated by the one schema and resolved.

import { readFileSync } from 'node:fs';
import { parse as parseYaml } from 'yaml';
import { ConfigError } from './config-error.js';
import { isLegacyDocument, translateLegacyConfig } from './legacy.js';
import { configSchema, type Config, type FreeSpace, type UpstreamInput } from './schema.js';
import { readTlsFiles, type TlsFiles } from './tls-files.js';
import type { MetadataSettings } from '../meta/open-metadata-store.js';
import type { UpstreamSettings } from '../mirror/upstream-router.js';
import type { StorageSettings } from '../store/open-object-store.js';
import type { Credentials } from '../upstream/credentials.js';
import type { V1SourceOptions } from '../v1/source-client.js';

export interface ListenAddress {
  /** undefined: every interface. */
  host: string | undefined;
  port: number;
}

export interface V1MirroringSettings extends V1SourceOptions {
  tagsCacheTtlMs: number;
}

export interface V1Settings {
  enabled: boolean;
  standalone: boolean;
  mirroring: V1MirroringSettings | undefined;
  storagePrefix: string;
  nginxXAccelRedirect: string | undefined;
  storageRedirect: boolean;
}

export interface OffloadSettings {
  /** A URI prefix (no trailing slash) nginx maps to the data directory; undefined: Node sends every blob itself. */
  xAccelRedirect: string | undefined;
}

/** The bound on the cache, and how eviction treats images in use. */
export interface CacheBoundSettings {
  /** undefined: no size bound (free space still bounds it). */
  maxSizeBytes: number | undefined;
  minFreeSpace: FreeSpace;
  inUseWindowMs: number;
  /** undefined: content is never evicted for its age. */
  maxAgeMs: number | undefined;
}

export interface GcSettings {
  /** 0: only on demand. */
  intervalMs: number;
  /** Content read, fetched or written this recently is never collected. */
  graceMs: number;
}

export interface PrefetchSettings {
  intervalMs: number;
  /** OS/ARCH[/VARIANT] of an index's children to fetch; empty: every one. */
  platforms: string[];
  /** REGISTRY/NAME:TAG or REGISTRY/NAME@DIGEST. */
  images: string[];
}

export interface AuthSettings {
  /** undefined: logins live with the external issuer only. */
  htpasswd: string | undefined;
  service: string;
  realm: string | undefined;
  tokenKey: string | undefined;
  tokenLifetimeMs: number;
  failedLogins: { limit: number; windowMs: number };
  access: Config['access'];
  /** Tokens of another issuer accepted too. */
  externalIssuer: { issuer: string; publicKeys: string[]; jwks: string | undefined } | undefined;
}

export interface Settings {
  listen: ListenAddress;
  dataDir: string;
  storage: StorageSettings;
  logLevel: Config['log']['level'];
  /** The first is the default upstream; empty for a plain registry. */
  upstreams: UpstreamSettings[];
  /** Repositories served here alone (globs; with no upstream, every one), and whether clients may delete there. */
  hosted: { globs: string[]; deleteEnabled: boolean };
  v1: V1Settings;
  offload: OffloadSettings;
  circuit: Config['circuit'];
  timeouts: Config['timeouts'];
  limits: Config['limits'];
  /** How long an upstream's "not found" is remembered. */
  notFoundTtlMs: number;
  cacheBound: CacheBoundSettings;
  /** undefined: no client authentication (every client may pull everything). */
  auth: AuthSettings | undefined;
  gc: GcSettings;
  prefetch: PrefetchSettings;
  /** Where /metrics and /_regmirror/* are served instead of the registry's listener; undefined: on it. */
  adminListen: ListenAddress | undefined;
  /** TLS on the registry's listener and the admin one, checked at load; undefined: plain http. */
  tls: TlsFiles | undefined;
  metadata: MetadataSettings;
  /** undefined: a single node (the default). */
  cluster: ClusterSettings | undefined;
}

export interface ClusterSettings {
  /** This node's URL for the other nodes, without a trailing slash. */
  advertise: string;
  /** The shared secret, read from cluster.secretFile at start-up. */
  secret: string;
}

/** The shortest shared secret accepted. */
export const MIN_CLUSTER_SECRET_LENGTH = 16;

export interface ConfigFlags {
  config?: string;
  listen?: string;
  data?: string;
  upstream?: string[];
  logLevel?: string;
  cacheMaxSize?: string;
  /** The section of a docker-registry configuration file to use. */
  flavor?: string;
}

export interface LoadedSettings {
  settings: Settings;
  /** What the configuration asks for that regmirror does not do; the caller logs them. */
  warnings: string[];
}

type Layer = Record<string, unknown>;

/** Environment variables and where they land in the file's shape. */
const ENVIRONMENT_KEYS: ReadonlyArray<readonly [string, readonly string[]]> = [
  ['REGMIRROR_LISTEN', ['listen']],
  ['REGMIRROR_DATA', ['data']],
  ['REGMIRROR_LOG_LEVEL', ['log', 'level']],
  ['REGMIRROR_STORAGE_DRIVER', ['storage', 'driver']],
  ['REGMIRROR_STORAGE_S3_BUCKET', ['storage', 's3', 'bucket']],
  ['REGMIRROR_STORAGE_S3_REGION', ['storage', 's3', 'region']],
  ['REGMIRROR_STORAGE_S3_ENDPOINT', ['storage', 's3', 'endpoint']],
  ['REGMIRROR_STORAGE_S3_FORCE_PATH_STYLE', ['storage', 's3', 'forcePathStyle']],
  ['REGMIRROR_STORAGE_S3_PREFIX', ['storage', 's3', 'prefix']],
  ['REGMIRROR_STORAGE_S3_ACCESS_KEY_ENV', ['storage', 's3', 'accessKeyEnv']],
  ['REGMIRROR_STORAGE_S3_SECRET_KEY_ENV', ['storage', 's3', 'secretKeyEnv']],
  ['REGMIRROR_STORAGE_S3_REQUEST_TIMEOUT', ['storage', 's3', 'requestTimeout']],
  ['REGMIRROR_STORAGE_S3_REDIRECT', ['storage', 's3', 'redirect']],
  ['REGMIRROR_STORAGE_S3_REDIRECT_TTL', ['storage', 's3', 'redirectTtl']],
  ['REGMIRROR_CACHE_TAG_FRESHNESS', ['cache', 'tagFreshness']],
  ['REGMIRROR_CACHE_MAX_STALENESS', ['cache', 'maxStaleness']],
  ['REGMIRROR_CACHE_NOT_FOUND_TTL', ['cache', 'notFoundTtl']],
  ['REGMIRROR_CACHE_MAX_SIZE', ['cache', 'maxSize']],
  ['REGMIRROR_CACHE_MIN_FREE_SPACE', ['cache', 'minFreeSpace']],
  ['REGMIRROR_CACHE_IN_USE_WINDOW', ['cache', 'inUseWindow']],
  ['REGMIRROR_CACHE_MAX_AGE', ['cache', 'maxAge']],
  ['REGMIRROR_AUTH_HTPASSWD', ['auth', 'htpasswd']],
  ['REGMIRROR_AUTH_SERVICE', ['auth', 'service']],
  ['REGMIRROR_AUTH_REALM', ['auth', 'realm']],
  ['REGMIRROR_AUTH_TOKEN_KEY', ['auth', 'token', 'key']],
  ['REGMIRROR_AUTH_TOKEN_LIFETIME', ['auth', 'token', 'lifetime']],
  ['REGMIRROR_AUTH_TOKEN_ISSUER', ['auth', 'token', 'issuer']],
  ['REGMIRROR_AUTH_TOKEN_JWKS', ['auth', 'token', 'jwks']],
  ['REGMIRROR_GC_INTERVAL', ['gc', 'interval']],
  ['REGMIRROR_GC_GRACE', ['gc', 'grace']],
  ['REGMIRROR_PREFETCH_INTERVAL', ['prefetch', 'interval']],
  ['REGMIRROR_LIMITS_UPLOAD_SIZE', ['limits', 'uploadSize']],
  ['REGMIRROR_LIMITS_SEND_BUFFERS', ['limits', 'sendBuffers']],
  ['REGMIRROR_LIMITS_UPLOAD_SESSIONS', ['limits', 'uploadSessions']],
  ['REGMIRROR_DELETE_ENABLED', ['delete', 'enabled']],
  ['REGMIRROR_ADMIN_LISTEN', ['admin', 'listen']],
  ['REGMIRROR_TLS_CERTIFICATE', ['tls', 'certificate']],
  ['REGMIRROR_TLS_KEY', ['tls', 'key']],
  ['REGMIRROR_TLS_CLIENT_CA', ['tls', 'clientCA']],
  ['REGMIRROR_OFFLOAD_X_ACCEL_REDIRECT', ['offload', 'xAccelRedirect']],
  ['REGMIRROR_CIRCUIT_FAILURE_THRESHOLD', ['circuit', 'failureThreshold']],
  ['REGMIRROR_CIRCUIT_BACKOFF_BASE', ['circuit', 'backoffBase']],
  ['REGMIRROR_CIRCUIT_BACKOFF_MAX', ['circuit', 'backoffMax']],
  ['REGMIRROR_TIMEOUTS_CONNECT', ['timeouts', 'connect']],
  ['REGMIRROR_TIMEOUTS_RESPONSE_HEADERS', ['timeouts', 'responseHeaders']],
  ['REGMIRROR_TIMEOUTS_BODY_IDLE', ['timeouts', 'bodyIdle']],
  ['REGMIRROR_TIMEOUTS_MANIFEST', ['timeouts', 'manifest']],
  ['REGMIRROR_TIMEOUTS_FILL', ['timeouts', 'fill']],
  ['REGMIRROR_TIMEOUTS_CLIENT_IDLE', ['timeouts', 'clientIdle']],
  ['REGMIRROR_TIMEOUTS_SHUTDOWN_GRACE', ['timeouts', 'shutdownGrace']],
  ['REGMIRROR_TIMEOUTS_UPLOAD_IDLE', ['timeouts', 'uploadIdle']],
  ['REGMIRROR_METADATA_DRIVER', ['metadata', 'driver']],
  ['REGMIRROR_METADATA_URL', ['metadata', 'url']],
  ['REGMIRROR_METADATA_PASSWORD_ENV', ['metadata', 'passwordEnv']],
  ['REGMIRROR_METADATA_POOL_SIZE', ['metadata', 'poolSize']],
  ['REGMIRROR_METADATA_STATEMENT_TIMEOUT', ['metadata', 'statementTimeout']],
  ['REGMIRROR_CLUSTER_ADVERTISE', ['cluster', 'advertise']],
  ['REGMIRROR_CLUSTER_SECRET_FILE', ['cluster', 'secretFile']],
];
/** A space- or comma-separated list of `[REGISTRY=]URL`, replacing the file's upstreams. */
const ENVIRONMENT_UPSTREAMS = 'REGMIRROR_UPSTREAMS';
/** Lists given as one variable, their items separated by spaces or commas, replacing the file's. */
const ENVIRONMENT_LISTS: ReadonlyArray<readonly [string, readonly string[]]> = [
  ['REGMIRROR_PREFETCH_PLATFORMS', ['prefetch', 'platforms']],
  ['REGMIRROR_PREFETCH_IMAGES', ['prefetch', 'images']],
  ['REGMIRROR_HOSTED', ['hosted']],
];

export function loadSettings(flags: ConfigFlags, environment: NodeJS.ProcessEnv = process.env): LoadedSettings {
  const { input, warnings } = readConfigFile(flags, environment);
  for (const [variable, keyPath] of ENVIRONMENT_KEYS) {
    const value = environment[variable];
    if (value !== undefined && value !== '') setPath(input, keyPath, value);
  }
  for (const [variable, keyPath] of ENVIRONMENT_LISTS) {
    const value = environment[variable];
    if (value !== undefined && value !== '') setPath(input, keyPath, splitList(value));
  }
  const environmentUpstreams = environment[ENVIRONMENT_UPSTREAMS];
  if (environmentUpstreams) input.upstreams = splitList(environmentUpstreams).map(parseUpstreamFlag);
  if (flags.listen !== undefined) input.listen = flags.listen;
  if (flags.data !== undefined) input.data = flags.data;
  if (flags.logLevel !== undefined) setPath(input, ['log', 'level'], flags.logLevel);
  if (flags.cacheMaxSize !== undefined) setPath(input, ['cache', 'maxSize'], flags.cacheMaxSize);
  if (flags.upstream !== undefined && flags.upstream.length > 0) input.upstreams = flags.upstream.map(parseUpstreamFlag);
  const settings = resolveSettings(validate(input), environment);
  if (settings.storage.driver === 's3' && (input.cache as Layer | undefined)?.minFreeSpace !== undefined) {
    warnings.push('cache.minFreeSpace: no effect with storage.driver: s3 (the content is in the bucket, not on a disk to watch); bound it with cache.maxSize');
  }
  return { settings, warnings };
}

function readConfigFile(flags: ConfigFlags, environment: NodeJS.ProcessEnv): { input: Layer; warnings: string[] } {
  const file = flags.config;
  if (file === undefined) {
    if (flags.flavor !== undefined) throw new ConfigError('--flavor needs a docker-registry configuration file (--config FILE)');
    return { input: {}, warnings: [] };
  }
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (error) {
    throw new ConfigError(`cannot read configuration file ${file}: ${(error as Error).message}`, { cause: error });
  }
  let document: unknown;
  try {
    document = parseYaml(text);
  } catch (error) {
    throw new ConfigError(`configuration file ${file} is not valid YAML: ${(error as Error).message}`, { cause: error });
  }
  if (document !== null && document !== undefined && (typeof document !== 'object' || Array.isArray(document))) {
    throw new ConfigError(`configuration file ${file} must be a mapping of keys`);
  }
  const layer = (document ?? {}) as Layer;
  if (isLegacyDocument(layer)) {
    const { input, warnings } = translateLegacyConfig(text, { file, flavor: flags.flavor, environment });
    return { input, warnings };
  }
  if (flags.flavor !== undefined) throw new ConfigError(`--flavor applies to docker-registry configuration files; ${file} is a regmirror one`);
  return { input: layer, warnings: [] };
}

function splitList(value: string): string[] {
  return value.split(/[\s,]+/).filter(Boolean);
}

function setPath(target: Layer, keyPath: readonly string[], value: unknown): void {
  let node = target;
  for (const key of keyPath.slice(0, -1)) {
    const next = node[key];
    if (typeof next !== 'object' || next === null) node[key] = {};
    node = node[key] as Layer;
  }
  node[keyPath[keyPath.length - 1] ?? ''] = value;
}

/** `[REGISTRY=]URL`: the `REGISTRY=` prefix counts only before the URL's scheme. */
export function parseUpstreamFlag(text: string): UpstreamInput {
  const scheme = text.indexOf('://');
  const equals = text.indexOf('=');
  if (equals > 0 && (scheme === -1 || equals < scheme)) {
    return { registry: text.slice(0, equals), url: text.slice(equals + 1) };
  }
  return { url: text };
}

function validate(input: Layer): Config {
  const result = configSchema.safeParse(input);
  if (result.success) return result.data;
  const problems = result.error.issues.map((issue) => {
    const key = issue.path.length > 0 ? issue.path.join('.') : '(top level)';
    return `${key}: ${issue.message}`;
  });
  throw new ConfigError(`invalid configuration: ${problems.join('; ')}`);
}

export function parseListen(text: string, key = 'listen'): ListenAddress {
  const match = /^(?:\[([^\]]+)\]|([^:]*)):(\d{1,5})$/.exec(text.trim());
  const port = Number(match?.[3]);
  if (!match || !Number.isInteger(port) || port > 65535) {
    throw new ConfigError(`invalid configuration: ${key}: expected HOST:PORT, :PORT or [IPv6]:PORT, got ${text}`);
  }
  const host = match[1] ?? match[2];
  return { host: host === '' ? undefined : host, port };
}

function resolveSettings(config: Config, environment: NodeJS.ProcessEnv): Settings {
  const upstreams = config.upstreams.map((upstream, index): UpstreamSettings => {
    const url = upstream.url.replace(/\/+$/, '');
    const parsed = new URL(url);
    if (parsed.username !== '' || parsed.password !== '') {
      // They would be logged with the URL and never sent: refuse, without repeating them.
      throw new ConfigError(`invalid configuration: upstreams.${index}.url: put credentials under upstreams.${index}.credentials, not in the URL`);
    }
    return {
      registry: upstream.registry ?? parsed.host,
      // A name derived from the URL may be an internal address, which clients must not learn.
      wireName: upstream.registry ?? 'registry',
      aliases: upstream.aliases,
      hosts: upstream.hosts.map((host) => host.toLowerCase()),
      url,
      credentials: upstream.credentials && resolveCredentials(upstream.credentials, `upstreams.${index}.credentials`, environment),
      trustedHosts: upstream.trustedHosts,
      tagFreshnessMs: upstream.tagFreshness ?? config.cache.tagFreshness,
      maxStalenessMs: upstream.maxStaleness ?? config.cache.maxStaleness,
      private: upstream.private,
    };
  });
  const seen = new Set<string>();
  for (const upstream of upstreams) {
    if (seen.has(upstream.registry)) throw new ConfigError(`invalid configuration: upstreams: ${upstream.registry} is listed twice`);
    seen.add(upstream.registry);
  }
  if (config.access.length > 0 && config.auth === undefined) {
    throw new ConfigError('invalid configuration: access: rules need auth (auth.htpasswd or auth.token.issuer) to know who asks');
  }
  const storage = resolveStorage(config.storage, environment);
  if (storage.driver === 's3') {
    // nginx sends files of the data directory: with s3 there are none to send.
    const offloads = { 'offload.xAccelRedirect': config.offload.xAccelRedirect, 'v1.nginxXAccelRedirect': config.v1.nginxXAccelRedirect };
    const offload = Object.entries(offloads).find(([, prefix]) => prefix !== undefined)?.[0];
    if (offload !== undefined) throw new ConfigError(`invalid configuration: ${offload}: nginx can send only files of the data directory, and with storage.driver: s3 the content is in the bucket; leave it unset`);
  }
  return {
    listen: parseListen(config.listen),
    dataDir: config.data,
    storage,
    logLevel: config.log.level,
    upstreams,
    hosted: { globs: config.hosted, deleteEnabled: config.delete.enabled },
    v1: resolveV1(config.v1, environment),
    offload: { xAccelRedirect: config.offload.xAccelRedirect?.replace(/\/+$/, '') },
    circuit: config.circuit,
    timeouts: config.timeouts,
    limits: config.limits,
    notFoundTtlMs: config.cache.notFoundTtl,
    cacheBound: {
      maxSizeBytes: config.cache.maxSize,
      // The free space of the data directory's disk bounds what is cached there; a bucket has no such bound.
      minFreeSpace: storage.driver === 's3' ? { bytes: 0 } : config.cache.minFreeSpace,
      inUseWindowMs: config.cache.inUseWindow,
      maxAgeMs: config.cache.maxAge,
    },
    auth: config.auth && {
      htpasswd: config.auth.htpasswd,
      service: config.auth.service,
      realm: config.auth.realm,
      tokenKey: config.auth.token.key,
      tokenLifetimeMs: config.auth.token.lifetime,
      failedLogins: { limit: config.auth.failedLogins.limit, windowMs: config.auth.failedLogins.window },
      access: config.access,
      externalIssuer:
        config.auth.token.issuer === undefined ? undefined : { issuer: config.auth.token.issuer, publicKeys: config.auth.token.publicKeys, jwks: config.auth.token.jwks },
    },
    gc: { intervalMs: config.gc.interval, graceMs: config.gc.grace },
    prefetch: { intervalMs: config.prefetch.interval, platforms: config.prefetch.platforms, images: config.prefetch.images },
    adminListen: config.admin.listen === undefined ? undefined : parseListen(config.admin.listen, 'admin.listen'),
    tls: resolveTls(config.tls),
    metadata: resolveMetadata(config.metadata, environment),
    cluster: resolveCluster(config, storage),
  };
}

function resolveCluster(config: Config, storage: StorageSettings): ClusterSettings | undefined {
  const { advertise, secretFile } = config.cluster;
  if (advertise === undefined || secretFile === undefined) return undefined;
  // The nodes share content and records through the engines: a data directory or a SQLite file is one node's.
  if (config.metadata.driver !== 'postgres' || storage.driver !== 's3') {
    throw new ConfigError('invalid configuration: cluster: needs metadata.driver: postgres and storage.driver: s3 (the nodes share the database and the bucket)');
  }
  // A key generated into one node's data directory signs tokens no other node can verify: behind a load balancer a
  // client's token from one node would be refused by the next.
  if (config.auth?.htpasswd !== undefined && config.auth.token.key === undefined) {
    throw new ConfigError('invalid configuration: auth.token.key: required in a cluster with auth.htpasswd (one signing key file shared by the nodes, so a token one node issues is valid on all)');
  }
  let secret: string;
  try {
    secret = readFileSync(secretFile, 'utf8').replace(/\r?\n$/, '');
  } catch (error) {
    throw new ConfigError(`invalid configuration: cluster.secretFile: cannot read ${secretFile}`, { cause: error });
  }
  if (secret.length < MIN_CLUSTER_SECRET_LENGTH) {
    throw new ConfigError(`invalid configuration: cluster.secretFile: the secret must be at least ${MIN_CLUSTER_SECRET_LENGTH} characters`);
  }
  return { advertise: advertise.replace(/\/+$/, ''), secret };
}

function resolveMetadata(metadata: Config['metadata'], environment: NodeJS.ProcessEnv): MetadataSettings {
  if (metadata.driver === 'sqlite') return { driver: 'sqlite' };
  let password: string | undefined;
  if (metadata.passwordEnv !== undefined) {
    password = environment[metadata.passwordEnv];
    if (password === undefined) throw new ConfigError(`invalid configuration: metadata.passwordEnv: ${metadata.passwordEnv} is not set`);
  }
  // The schema made sure of it with this driver.
  const url = metadata.url ?? '';
  return { driver: 'postgres', url, password, poolSize: metadata.poolSize, statementTimeoutMs: metadata.statementTimeout };
}

/** The TLS files, read once here so that a missing file or a key of another certificate stops the start (status 2). */
function resolveTls(tls: Config['tls']): TlsFiles | undefined {
  if (tls.certificate === undefined || tls.key === undefined) return undefined;
  const files = { certificate: tls.certificate, key: tls.key, clientCA: tls.clientCA };
  readTlsFiles(files);
  return files;
}

function resolveStorage(storage: Config['storage'], environment: NodeJS.ProcessEnv): StorageSettings {
  const s3 = storage.s3;
  if (storage.driver === 'fs' || s3 === undefined) return { driver: 'fs' };
  if (s3.endpoint !== undefined) {
    const endpoint = new URL(s3.endpoint);
    if (endpoint.username !== '' || endpoint.password !== '') {
      throw new ConfigError('invalid configuration: storage.s3.endpoint: no credentials in the URL; name their variables in storage.s3.accessKeyEnv and secretKeyEnv');
    }
  }
  return {
    driver: 's3',
    s3: {
      bucket: s3.bucket,
      region: s3.region,
      endpoint: s3.endpoint?.replace(/\/+$/, ''),
      forcePathStyle: s3.forcePathStyle,
      prefix: s3.prefix === '' || s3.prefix.endsWith('/') ? s3.prefix : `${s3.prefix}/`,
      credentials:
        s3.accessKeyEnv === undefined || s3.secretKeyEnv === undefined
          ? undefined
          : { accessKeyId: secretFrom(environment, s3.accessKeyEnv, 'storage.s3.accessKeyEnv'), secretAccessKey: secretFrom(environment, s3.secretKeyEnv, 'storage.s3.secretKeyEnv') },
      requestTimeoutMs: s3.requestTimeout,
      redirectTtlMs: s3.redirect ? s3.redirectTtl : undefined,
    },
  };
}

/** The value of the variable a key names; never repeated in an error. */
function secretFrom(environment: NodeJS.ProcessEnv, variable: string, key: string): string {
  const value = environment[variable];
  if (value === undefined || value === '') throw new ConfigError(`invalid configuration: ${key}: ${variable} is not set`);
  return value;
}

function resolveV1(v1: Config['v1'], environment: NodeJS.ProcessEnv): V1Settings {
  const mirroring = v1.mirroring;
  return {
    enabled: v1.enabled,
    standalone: v1.standalone,
    mirroring: mirroring && {
      source: mirroring.source.replace(/\/+$/, ''),
      sourceIndex: mirroring.sourceIndex?.replace(/\/+$/, ''),
      tagsCacheTtlMs: mirroring.tagsCacheTtl,
      credentials: mirroring.credentials && resolveCredentials(mirroring.credentials, 'v1.mirroring.credentials', environment),
      trustedHosts: mirroring.trustedHosts,
    },
    storagePrefix: v1.storagePrefix,
    nginxXAccelRedirect: v1.nginxXAccelRedirect?.replace(/\/+$/, ''),
    storageRedirect: v1.storageRedirect,
  };
}

function resolveCredentials(
  credentials: NonNullable<Config['upstreams'][number]['credentials']>,
  key: string,
  environment: NodeJS.ProcessEnv,
): Credentials {
  if (credentials.password !== undefined) return { username: credentials.username, password: credentials.password };
  if (credentials.passwordEnv !== undefined) {
    const password = environment[credentials.passwordEnv];
    if (password === undefined) throw new ConfigError(`invalid configuration: ${key}.passwordEnv: ${credentials.passwordEnv} is not set`);
    return { username: credentials.username, password };
  }
  const file = credentials.passwordFile ?? '';
  try {
    return { username: credentials.username, password: readFileSync(file, 'utf8').replace(/\r?\n$/, '') };
  } catch (error) {
    throw new ConfigError(`invalid configuration: ${key}.passwordFile: cannot read ${file}`, { cause: error });
  }
}
