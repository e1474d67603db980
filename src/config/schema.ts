// The one configuration schema (file, environment and flags all land here), with its defaults.
// docs/configuration.md documents every key; keep the two in step.

import { z } from 'zod';
import { parseDuration } from './duration.js';
import { parseSize } from './size.js';
import { parseImageReference } from '../oci/image-reference.js';
import { parsePlatform } from '../oci/platform.js';

const duration = z
  .union([z.string(), z.number()])
  .transform((value, context) => {
    const ms = parseDuration(value);
    if (ms === undefined) {
      context.addIssue({ code: 'custom', message: `not a duration: ${String(value)} (use e.g. 30s, 5m, 7d)` });
      return z.NEVER;
    }
    return ms;
  });

const size = z
  .union([z.string(), z.number()])
  .transform((value, context) => {
    const bytes = parseSize(value);
    if (bytes === undefined) {
      context.addIssue({ code: 'custom', message: `not a size: ${String(value)} (use e.g. 512KiB, 10MiB, 10GiB)` });
      return z.NEVER;
    }
    return bytes;
  });

/** Free space to keep on the data directory's filesystem: a size, or a percentage of the filesystem. */
export type FreeSpace = { bytes: number } | { percent: number };

const freeSpace = z
  .union([z.string(), z.number()])
  .transform((value, context): FreeSpace => {
    const percent = typeof value === 'string' ? /^\s*(\d+(?:\.\d+)?)\s*%\s*$/.exec(value) : null;
    if (percent !== null) {
      const share = Number(percent[1]);
      if (share < 100) return { percent: share };
    } else {
      const bytes = parseSize(value);
      if (bytes !== undefined) return { bytes };
    }
    context.addIssue({ code: 'custom', message: `not a size or a percentage below 100: ${String(value)} (use e.g. 5%, 20GiB, 0)` });
    return z.NEVER;
  });

/** true or false, also as the words a variable carries. */
const flag = z.union([z.boolean(), z.enum(['true', 'false']).transform((value) => value === 'true')], { error: 'expected true or false' });

/** The name of an environment variable that holds a secret (never the secret itself). */
const variableName = z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/, 'expected the name of an environment variable, e.g. S3_ACCESS_KEY');

/** Where content lives: the data directory (fs), or an S3 bucket. */
const storageSchema = z
  .object({
    driver: z.enum(['fs', 's3']).default('fs'),
    s3: z
      .object({
        bucket: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._-]{1,253}[A-Za-z0-9]$/, 'expected a bucket name (3 or more letters, digits, dots, hyphens)'),
        region: z.string().regex(/^[a-z0-9-]+$/, 'expected a region such as us-east-1').default('us-east-1'),
        /** An S3-compatible server; none: AWS's endpoint for the region. */
        endpoint: z.url({ protocol: /^https?$/ }).optional(),
        forcePathStyle: flag.default(false),
        /** A folder of the bucket every key goes under; '' for the whole bucket. */
        prefix: z
          .string()
          .regex(/^(?:[A-Za-z0-9_-][A-Za-z0-9._-]*(?:\/[A-Za-z0-9_-][A-Za-z0-9._-]*)*\/?)?$/, 'expected a folder such as cache/ or team/cache (no leading slash, no empty, . or .. part)')
          .default(''),
        accessKeyEnv: variableName.optional(),
        secretKeyEnv: variableName.optional(),
        requestTimeout: duration.default(30_000),
        /** A cached blob's GET answered with a 307 to a presigned URL of the bucket, instead of streamed. */
        redirect: flag.default(false),
        /** How long such a URL works. */
        redirectTtl: duration.default(300_000),
      })
      .strict()
      .refine((s3) => (s3.accessKeyEnv === undefined) === (s3.secretKeyEnv === undefined), {
        message: 'give both accessKeyEnv and secretKeyEnv, or neither (the SDK’s own credentials: AWS_* variables, profiles, instance roles)',
      })
      .refine((s3) => s3.requestTimeout > 0, { path: ['requestTimeout'], message: 'must be more than 0' })
      .refine((s3) => s3.redirectTtl >= 1_000 && s3.redirectTtl <= 3_600_000, { path: ['redirectTtl'], message: 'must be from 1s to 1h' })
      .optional(),
  })
  .strict()
  .superRefine((storage, context) => {
    if (storage.driver === 's3' && storage.s3 === undefined) context.addIssue({ code: 'custom', path: ['s3'], message: 'required with driver: s3 (at least s3.bucket)' });
    if (storage.driver === 'fs' && storage.s3 !== undefined) context.addIssue({ code: 'custom', path: ['s3'], message: 'applies with driver: s3 only' });
  });

/** An image as REGISTRY/NAME:TAG or REGISTRY/NAME@DIGEST, checked by the reference grammar. */
const imageReference = z.string().superRefine((value, context) => {
  const parsed = parseImageReference(value);
  if (!parsed.ok) context.addIssue({ code: 'custom', message: `${parsed.reason}: ${value} (expected REGISTRY/NAME:TAG or REGISTRY/NAME@DIGEST)` });
});

/** OS/ARCH or OS/ARCH/VARIANT, as docker's --platform. */
const platform = z.string().superRefine((value, context) => {
  const parsed = parsePlatform(value);
  if (!parsed.ok) context.addIssue({ code: 'custom', message: `${parsed.reason}; got ${value}` });
});

/** Host names (or addresses) on an internal network that an upstream may redirect the mirror to or name as its token realm. */
const trustedHosts = z.array(z.string().regex(/^[A-Za-z0-9.:_[\]-]+$/, 'expected a host name or an IP address, without a port')).default([]);

const credentials = z
  .object({
    username: z.string().min(1),
    password: z.string().optional(),
    passwordEnv: z.string().optional(),
    passwordFile: z.string().optional(),
  })
  .strict()
  .refine((value) => [value.password, value.passwordEnv, value.passwordFile].filter((v) => v !== undefined).length === 1, {
    message: 'give exactly one of password, passwordEnv, passwordFile',
  });

export const upstreamSchema = z
  .object({
    registry: z.string().min(1).optional(),
    url: z.url({ protocol: /^https?$/ }),
    /** Short path prefixes that also reach this upstream: /v2/<alias>/<name>/… */
    aliases: z.array(z.string().regex(/^[a-z0-9][a-z0-9.-]*$/)).default([]),
    /** Host names (virtual hosts) whose requests go to this upstream, e.g. ghcr.mirror.example. */
    hosts: z.array(z.string().min(1)).default([]),
    credentials: credentials.optional(),
    trustedHosts,
    tagFreshness: duration.optional(),
    maxStaleness: duration.optional(),
    /** With auth: what is cached from it is served only to callers a rule names (anonymous rules do not apply). */
    private: z.boolean().default(false),
  })
  .strict();

const v1MirroringSchema = z
  .object({
    source: z.url({ protocol: /^https?$/ }),
    sourceIndex: z.url({ protocol: /^https?$/ }).optional(),
    tagsCacheTtl: duration.default(172_800_000),
    credentials: credentials.optional(),
    trustedHosts,
  })
  .strict();

/** The Docker Registry v1 API, as docker-registry 0.9 served it (see docs/v1.md). */
const v1Schema = z
  .object({
    enabled: z.boolean().default(true),
    /** Act as its own index (users, tokens, repository images, search), as docker-registry's `standalone`. */
    standalone: z.boolean().default(true),
    mirroring: v1MirroringSchema.optional(),
    /** Where v1 data lives inside the data directory; '' serves a docker-registry 0.9 storage_path in place. */
    storagePrefix: z.string().regex(/^(?:[a-z0-9_-]+(?:\/[a-z0-9_-]+)*)?$/).default('v1'),
    /** docker-registry's nginx_x_accel_redirect: a URI prefix nginx maps to the data directory. */
    nginxXAccelRedirect: z.string().optional(),
    /** docker-registry's storage_redirect: takes effect with the S3 store; accepted and ignored on fs. */
    storageRedirect: z.boolean().default(false),
  })
  .strict();

/** Where the metadata lives: SQLite in the data directory, or a PostgreSQL database several nodes may share. */
const metadataSchema = z
  .object({
    driver: z.enum(['sqlite', 'postgres']).default('sqlite'),
    /** postgres://USER@HOST:PORT/DATABASE; the password comes from the variable passwordEnv names. */
    url: z.string().min(1).optional(),
    /** The name of an environment variable holding the database password (never the password itself). */
    passwordEnv: z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/, 'expected the name of an environment variable, e.g. REGMIRROR_DB_PASSWORD').optional(),
    poolSize: z.coerce.number().int().min(1).max(1000).default(10),
    statementTimeout: duration.default(10_000),
  })
  .strict()
  .superRefine((metadata, context) => {
    if (metadata.driver === 'postgres' && metadata.url === undefined) context.addIssue({ code: 'custom', path: ['url'], message: 'required with metadata.driver: postgres' });
    if (metadata.driver === 'sqlite') {
      for (const key of ['url', 'passwordEnv'] as const) {
        if (metadata[key] !== undefined) context.addIssue({ code: 'custom', path: [key], message: 'only with metadata.driver: postgres' });
      }
    }
    if (metadata.url !== undefined) {
      const problem = postgresUrlProblem(metadata.url);
      if (problem !== undefined) context.addIssue({ code: 'custom', path: ['url'], message: problem });
    }
    if (metadata.statementTimeout === 0) context.addIssue({ code: 'custom', path: ['statementTimeout'], message: 'must be more than 0 (a statement must not wait for ever)' });
  });

/** What is wrong with a PostgreSQL URL, never repeating it (it may hold a password). */
function postgresUrlProblem(text: string): string | undefined {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    return 'not a URL (expected postgres://USER@HOST:PORT/DATABASE)';
  }
  if (url.protocol !== 'postgres:' && url.protocol !== 'postgresql:') return `expected a postgres:// URL, not ${url.protocol}//`;
  // A password in the file would be logged and copied around with it.
  if (url.password !== '' || url.searchParams.has('password')) return 'put the password in the variable metadata.passwordEnv names, not in the URL';
  return undefined;
}

/**
 * Several nodes on one database and bucket (docs/cluster.md): how the others reach this one, and the secret they share
 * for the internal fill stream. Both or neither; with PostgreSQL and S3 only (checked when the settings resolve).
 */
const clusterSchema = z
  .object({
    /** http(s)://HOST:PORT of this node's registry listener, as the other nodes reach it. */
    advertise: z.string().min(1).optional(),
    /** A file holding the shared secret (at least 16 characters; one trailing newline removed). */
    secretFile: z.string().min(1).optional(),
  })
  .strict()
  .superRefine((cluster, context) => {
    if (cluster.advertise !== undefined && cluster.secretFile === undefined) context.addIssue({ code: 'custom', path: ['secretFile'], message: 'required with cluster.advertise' });
    if (cluster.advertise === undefined && cluster.secretFile !== undefined) context.addIssue({ code: 'custom', path: ['advertise'], message: 'required with cluster.secretFile' });
    if (cluster.advertise !== undefined) {
      const problem = advertiseProblem(cluster.advertise);
      if (problem !== undefined) context.addIssue({ code: 'custom', path: ['advertise'], message: problem });
    }
  });

function advertiseProblem(text: string): string | undefined {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    return 'not a URL (expected http://HOST:PORT)';
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') return `expected an http:// or https:// URL, not ${url.protocol}//`;
  if (url.username !== '' || url.password !== '') return 'no credentials in the URL (the nodes authenticate with cluster.secretFile)';
  if (url.pathname !== '/' || url.search !== '' || url.hash !== '') return 'only scheme, host and port (no path or query)';
  return undefined;
}

// zod 4's .default() skips the transform: defaults are given in milliseconds, the parsed (output) unit.
export const configSchema = z
  .object({
    listen: z.string().default(':5000'),
    data: z.string().default('./data'),
    storage: storageSchema.default({ driver: 'fs' }),
    log: z.object({ level: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info') }).strict().default({ level: 'info' }),
    upstreams: z.array(upstreamSchema).default([]),
    cache: z
      .object({
        tagFreshness: duration.default(300_000),
        maxStaleness: duration.default(7 * 86_400_000),
        notFoundTtl: duration.default(30_000),
        /** The most the cached content may take; past it, least recently used images are evicted. */
        maxSize: size.optional(),
        /** Free space to keep on the data directory's filesystem; below it, eviction runs too. */
        minFreeSpace: freeSpace.default({ percent: 5 }),
        /** Images read this recently are pulls in progress: evicted only when nothing else is left. */
        inUseWindow: duration.default(60_000),
        /** Evict what has not been read for this long, whatever the size. */
        maxAge: duration.optional(),
      })
      .strict()
      .default({ tagFreshness: 300_000, maxStaleness: 7 * 86_400_000, notFoundTtl: 30_000, minFreeSpace: { percent: 5 }, inUseWindow: 60_000 }),
    /** Client authentication: htpasswd logins, and the docker token flow with this mirror as its issuer. */
    auth: z
      .object({
        htpasswd: z.string().min(1).optional(),
        /** The `service` of the challenge and the audience of issued tokens. */
        service: z.string().min(1).default('regmirror'),
        /** The token realm's URL when clients must reach it by another name; default: this mirror's /auth/token. */
        realm: z.url({ protocol: /^https?$/ }).optional(),
        token: z
          .object({
            key: z.string().min(1).optional(),
            lifetime: duration.default(300_000),
            /** Tokens of this issuer (`iss`) are accepted too, checked against publicKeys or jwks. */
            issuer: z.string().min(1).optional(),
            publicKeys: z.array(z.string().min(1)).default([]),
            jwks: z.string().min(1).optional(),
          })
          .strict()
          .default({ lifetime: 300_000, publicKeys: [] }),
        failedLogins: z
          .object({ limit: z.coerce.number().int().min(1).default(10), window: duration.default(60_000) })
          .strict()
          .default({ limit: 10, window: 60_000 }),
      })
      .strict()
      .refine((auth) => auth.htpasswd !== undefined || auth.token.issuer !== undefined, { message: 'give auth.htpasswd, auth.token.issuer, or both' })
      .refine((auth) => auth.htpasswd !== undefined || auth.realm !== undefined, { message: 'with no htpasswd, auth.realm must name the external issuer’s token endpoint' })
      .refine((auth) => auth.token.issuer === undefined || auth.token.publicKeys.length > 0 || auth.token.jwks !== undefined, {
        message: 'auth.token.issuer needs auth.token.publicKeys or auth.token.jwks',
      })
      .optional(),
    /** Who may do what, by repository (with auth): rules that grant, none that deny. */
    access: z
      .array(
        z
          .object({
            users: z.array(z.string().min(1)).min(1),
            repositories: z.array(z.string().regex(/^[a-z0-9*._:/-]+$/, 'expected a glob over repository names, e.g. library/* or ghcr.io/org/**')).min(1),
            actions: z.array(z.enum(['pull', 'push', 'delete', 'admin'])).min(1),
          })
          .strict(),
      )
      .default([]),
    /** Repositories served here alone — pushed to, pulled from, deleted from; never proxied, never evicted — by name glob. */
    hosted: z.array(z.string().regex(/^[a-z0-9*._/-]+$/, 'expected a glob over repository names, e.g. team/** or internal/*')).default([]),
    /** Deletes of manifests, tags and blobs in hosted repositories. */
    delete: z.object({ enabled: flag.default(true) }).strict().default({ enabled: true }),
    /** Online garbage collection of what no tag, pin or recent read holds. */
    gc: z
      .object({ interval: duration.default(3_600_000), grace: duration.default(3_600_000) })
      .strict()
      .default({ interval: 3_600_000, grace: 3_600_000 }),
    /** Images fetched at start and on the interval, pinned (never evicted) and kept fresh. */
    prefetch: z
      .object({ interval: duration.default(3_600_000), platforms: z.array(platform).default([]), images: z.array(imageReference).default([]) })
      .strict()
      .default({ interval: 3_600_000, platforms: [], images: [] }),
    circuit: z
      .object({
        failureThreshold: z.coerce.number().int().min(1).default(5),
        backoffBase: duration.default(1_000),
        backoffMax: duration.default(300_000),
      })
      .strict()
      .default({ failureThreshold: 5, backoffBase: 1_000, backoffMax: 300_000 }),
    v1: v1Schema.default({ enabled: true, standalone: true, storagePrefix: 'v1', storageRedirect: false }),
    /** Handing cached content to a web server in front (docs/nginx.md). */
    offload: z
      .object({
        /** A URI prefix nginx maps (an internal location) to the data directory: cached v2 blob GETs answer with X-Accel-Redirect. */
        xAccelRedirect: z.string().regex(/^\/[^\s?#]*$/, 'expected a URI path prefix such as /_regmirror_data').optional(),
      })
      .strict()
      .default({}),
    /** Bounds on what a client may make the mirror do. */
    limits: z
      .object({
        uploadSize: size.default(10 * 1024 ** 3),
        sendBuffers: size.default(64 * 1024 ** 2),
        /** Blob upload sessions open at once (each holds a temporary file). */
        uploadSessions: z.coerce.number().int().min(1).max(100_000).default(1_000),
      })
      .strict()
      .default({ uploadSize: 10 * 1024 ** 3, sendBuffers: 64 * 1024 ** 2, uploadSessions: 1_000 }),
    /** A listener of its own for /metrics and /_regmirror/* (then not served on the registry's listener). */
    admin: z.object({ listen: z.string().optional() }).strict().default({}),
    /** TLS on the listeners (both or neither of certificate and key); none: plain http. */
    tls: z
      .object({ certificate: z.string().min(1).optional(), key: z.string().min(1).optional(), clientCA: z.string().min(1).optional() })
      .strict()
      .superRefine((tls, context) => {
        if (tls.certificate !== undefined && tls.key === undefined) context.addIssue({ code: 'custom', path: ['key'], message: 'required with tls.certificate' });
        if (tls.certificate === undefined && tls.key !== undefined) context.addIssue({ code: 'custom', path: ['certificate'], message: 'required with tls.key' });
        if (tls.certificate === undefined && tls.clientCA !== undefined) context.addIssue({ code: 'custom', path: ['certificate'], message: 'required with tls.clientCA (mutual TLS is on top of TLS)' });
      })
      .default({}),
    metadata: metadataSchema.default({ driver: 'sqlite', poolSize: 10, statementTimeout: 10_000 }),
    cluster: clusterSchema.default({}),
    timeouts: z
      .object({
        connect: duration.default(10_000),
        responseHeaders: duration.default(30_000),
        bodyIdle: duration.default(60_000),
        manifest: duration.default(30_000),
        fill: duration.default(1_800_000),
        clientIdle: duration.default(60_000),
        shutdownGrace: duration.default(30_000),
        /** A blob upload session no request touches for this long is cancelled and its temporary removed. */
        uploadIdle: duration.default(3_600_000),
      })
      .strict()
      .refine((timeouts) => timeouts.uploadIdle >= 1_000, { path: ['uploadIdle'], message: 'must be at least 1s' })
      .default({ connect: 10_000, responseHeaders: 30_000, bodyIdle: 60_000, manifest: 30_000, fill: 1_800_000, clientIdle: 60_000, shutdownGrace: 30_000, uploadIdle: 3_600_000 }),
  })
  .strict();

export type ConfigInput = z.input<typeof configSchema>;
export type Config = z.output<typeof configSchema>;
export type UpstreamInput = z.input<typeof upstreamSchema>;
