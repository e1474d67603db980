// fast-check generators of hostile HTTP requests over every v2 and v1 route: names, references, digests,
// queries, headers, bodies and methods, valid and broken, mixed with valid requests for content that exists
// so the deep paths (fills, ranges, conditional GETs, v1 reads) are reached. Pure: requests as data.

import fc from 'fast-check';

/** What exists on the two targets, so generators can name it. */
export interface KnownContent {
  /** The upstream's registry name, as containerd's `ns` says it. */
  upstreamRegistry: string;
  /** v2 content the mirror reaches through its upstream: every digest, and which repository holds which. */
  v2: { names: string[]; tags: string[]; manifestDigests: string[]; blobDigests: string[]; held: Array<{ name: string; manifests: string[]; blobs: string[] }> };
  /**
   * v1 content pushed to the plain registry, which is writable: hostile requests may overwrite or delete what
   * they can name, so valid requests read a second repository (`kept`) whose names they are never given.
   */
  v1: { repositories: string[]; tags: string[]; imageIds: string[]; kept: { repository: string; tag: string; imageIds: string[] } };
  /** The canary's sentinels relative to the data directory (`../sentinel.txt`) and absolute. */
  sentinels: { relative: string[]; absolute: string[] };
}

export type TargetName = 'mirror' | 'plain';

export type BodyContent = { kind: 'text'; text: string } | { kind: 'bytes'; size: number; seed: number };

/**
 * How the body goes on the wire: `exact` with a true Content-Length; `short` declares fewer bytes than follow;
 * `long` declares more, sends fewer and ends the connection; `chunked` is valid chunked framing; the rest
 * break the framing (bad chunk size, Content-Length beside chunked, a Content-Length that is no number).
 */
export type BodyMode = 'exact' | 'short' | 'long' | 'chunked' | 'bad-chunked' | 'length-and-chunked' | 'bad-length';

export interface FuzzRequest {
  target: TargetName;
  /** The route family the generator aimed at, for the figures (`v2-manifest`, `v1-image`, `valid-v2`, …). */
  kind: string;
  method: string;
  /** The request target exactly as it goes on the wire. */
  path: string;
  version: string;
  /** `own`: Host names the server; `none`: no Host; otherwise this value (twice when `twice`). */
  host: { kind: 'own' } | { kind: 'none' } | { kind: 'value'; value: string; twice: boolean };
  headers: Array<[string, string]>;
  body: { mode: BodyMode; content: BodyContent } | undefined;
}

const METHODS = ['GET', 'HEAD', 'PUT', 'POST', 'PATCH', 'DELETE', 'OPTIONS'] as const;
const HEX = [...'0123456789abcdef'];
const SPECIALS = [...'/.%-_:@?#;=&+~!$\'()*,[] \\\0\r\n\t"<>{}|^`'];

const hex = (length: number): fc.Arbitrary<string> => fc.string({ unit: fc.constantFrom(...HEX), minLength: length, maxLength: length });
const repeat = (text: string, times: number): string => text.repeat(times);

/** Text that breaks things: unicode, controls, escapes good and bad, long runs. */
const junkText: fc.Arbitrary<string> = fc.oneof(
  fc.string({ maxLength: 30 }),
  fc.string({ unit: 'grapheme', maxLength: 20 }),
  fc.string({ unit: 'binary', maxLength: 20 }),
  fc.string({ unit: fc.constantFrom(...SPECIALS), maxLength: 12 }),
  fc.constantFrom('%', '%%', '%zz', '%0', '%00', '%2e%2e', '%2f', '%5c', '%c0%ae', '%ff%fe', '%u002e', '\u00e9', '\u{1f600}', '\uffff', '\ud800', 'null', 'undefined', '[object Object]', '-1', '1e309', 'NaN'),
  fc.integer({ min: 200, max: 20_000 }).map((length) => repeat('a', length)),
);

// ---- names, references, digests ----

function v2Name(known: KnownContent): fc.Arbitrary<string> {
  const component = fc.stringMatching(/^[a-z0-9]{1,8}(?:[._-][a-z0-9]{1,8}){0,2}$/);
  const valid = fc.array(component, { minLength: 1, maxLength: 4 }).map((parts) => parts.join('/'));
  const traversal = fc.constantFrom(
    ...known.sentinels.relative,
    ...known.sentinels.relative.map((relative) => relative.replaceAll('/', '%2f')),
    ...known.sentinels.relative.map((relative) => relative.replaceAll('.', '%2e')),
    ...known.sentinels.absolute,
    '..', '../..', 'a/../b', 'team/app/..', '.', './a', '%2e%2e', '%2e%2e/%2e%2e', '..%2f..%2fsentinel.txt', '%252e%252e', '..\\..\\sentinel.txt',
    'a/./b', 'a//b', '/a', 'a/', '~', '$(id)', 'a;b', 'a#b', 'a%23b', 'a%3fb', 'a%00b', 'a\0b', 'a b', 'a%20b', '%c0%ae%c0%ae/sentinel.txt',
  );
  const broken = fc.oneof(
    valid.map((name) => name.toUpperCase()),
    fc.tuple(valid, fc.constantFrom(...SPECIALS), fc.nat()).map(([name, special, at]) => name.slice(0, at % (name.length + 1)) + special + name.slice(at % (name.length + 1))),
    fc.integer({ min: 250, max: 12_000 }).map((length) => repeat('a', length)),
    fc.integer({ min: 50, max: 3_000 }).map((count) => `${repeat('a/', count)}a`),
    junkText,
  );
  return fc.oneof({ weight: 4, arbitrary: fc.constantFrom(...known.v2.names) }, { weight: 2, arbitrary: valid }, { weight: 2, arbitrary: traversal }, { weight: 3, arbitrary: broken });
}

function digest(known: KnownContent): fc.Arbitrary<string> {
  return fc.oneof(
    { weight: 4, arbitrary: fc.constantFrom(...known.v2.blobDigests, ...known.v2.manifestDigests) },
    { weight: 2, arbitrary: hex(64).map((text) => `sha256:${text}`) },
    {
      weight: 4,
      arbitrary: fc.oneof(
        hex(128).map((text) => `sha512:${text}`),
        hex(32).map((text) => `md5:${text}`),
        hex(64).map((text) => `SHA256:${text}`),
        hex(64).map((text) => `blake3:${text}`),
        hex(64).map((text) => `sha256+b64:${text}`),
        fc.string({ unit: fc.constantFrom(...HEX), maxLength: 200 }).map((text) => `sha256:${text}`),
        hex(64).map((text) => `sha256:${text.toUpperCase()}`),
        fc.constantFrom(...known.v2.blobDigests).map((text) => text.toUpperCase()),
        fc.constantFrom(...known.v2.blobDigests).map((text) => text.replace(':', '%3a')),
        fc.constantFrom(...known.sentinels.relative, '..', '%2e%2e').map((text) => `sha256:${text}`),
        fc.constantFrom('sha256:', ':', 'sha256', 'sha256::', `sha256:${'0'.repeat(64)}:x`, 'sha256:%00'),
        junkText,
      ),
    },
  );
}

function reference(known: KnownContent): fc.Arbitrary<string> {
  const validTag = fc.stringMatching(/^[A-Za-z0-9_][A-Za-z0-9_.-]{0,20}$/);
  const brokenTag = fc.oneof(
    fc.constantFrom(repeat('a', 128), repeat('a', 129), '.a', '-a', '..', '%2e%2e', 'a%2fb', 'a/b', '', 'a%00', 'ü', 'latest ', 'a:b', 'a@sha256'),
    junkText,
  );
  return fc.oneof({ weight: 4, arbitrary: fc.constantFrom(...known.v2.tags) }, { weight: 2, arbitrary: validTag }, { weight: 2, arbitrary: brokenTag }, { weight: 4, arbitrary: digest(known) });
}

// ---- v2 and v1 paths ----

function query(known: KnownContent): fc.Arbitrary<string> {
  const value = fc.oneof(
    fc.constantFrom('0', '1', '2', '100', '10000', '10001', '-1', '1.5', '1e3', '0x10', '99999999999999999999', '', ' 1', known.upstreamRegistry, 'docker.io', 'evil.example', '127.0.0.1:1', 'localhost', '..'),
    fc.constantFrom(...known.v2.tags, ...known.v2.names),
    junkText,
  );
  const key = fc.oneof(fc.constantFrom('n', 'last', 'ns', 'digest', 'mount', 'from', 'artifactType', 'q', 'page', 'N', 'n[]', ''), fc.string({ maxLength: 8 }));
  const pairs = fc.array(fc.tuple(key, value), { maxLength: 5 }).map((entries) => entries.map(([name, text]) => `${name}=${text}`).join('&'));
  return fc.oneof(
    { weight: 3, arbitrary: fc.constant('') },
    { weight: 4, arbitrary: pairs.map((text) => `?${text}`) },
    { weight: 1, arbitrary: fc.constantFrom('?', '??', '?&&&', '?=', '?n', '?n=1&n=2', '?ns=a&ns=b', `?ns=${known.upstreamRegistry}&ns=docker.io`, '?%zz=%zz', '#frag', '?last=%ff') },
  );
}

function v2Path(known: KnownContent): fc.Arbitrary<{ kind: string; path: string }> {
  const name = v2Name(known);
  const tail = fc.oneof(
    fc.tuple(name, reference(known)).map(([repository, ref]) => ({ kind: 'v2-manifest', path: `/v2/${repository}/manifests/${ref}` })),
    fc.tuple(name, digest(known)).map(([repository, text]) => ({ kind: 'v2-blob', path: `/v2/${repository}/blobs/${text}` })),
    fc.tuple(name, fc.oneof(fc.constant(''), fc.uuid(), junkText)).map(([repository, id]) => ({ kind: 'v2-upload', path: `/v2/${repository}/blobs/uploads/${id}` })),
    name.map((repository) => ({ kind: 'v2-tags', path: `/v2/${repository}/tags/list` })),
    fc.tuple(name, digest(known)).map(([repository, text]) => ({ kind: 'v2-referrers', path: `/v2/${repository}/referrers/${text}` })),
    fc.constantFrom('/v2/_catalog', '/v2/', '/v2', '/v2//', '/v2/_catalog/', '/V2/', '/v2/%5fcatalog').map((path) => ({ kind: 'v2-base', path })),
    fc.tuple(name, fc.constantFrom('manifests', 'blobs', 'tags', 'referrers', 'uploads', '_catalog', ''), junkText).map(([repository, what, rest]) => ({ kind: 'v2-other', path: `/v2/${repository}/${what}/${rest}` })),
  );
  return fc.tuple(tail, query(known)).map(([route, text]) => ({ kind: route.kind, path: route.path + text }));
}

function v1Name(known: KnownContent): fc.Arbitrary<string> {
  const valid = fc.tuple(fc.stringMatching(/^[a-z0-9_-]{2,10}$/), fc.stringMatching(/^[a-z0-9_.-]{1,10}$/)).map(([namespace, repository]) => `${namespace}/${repository}`);
  const broken = fc.oneof(
    fc.constantFrom(...known.sentinels.relative, '..', '...', '../x', 'x/..', 'library/..', 'a/b/c', 'A/b', 'ab/.', 'ab/%2e%2e', '%2e%2e/x', 'ab/x%2f..', 'a', '_', repeat('a', 256), `ab/${repeat('b', 256)}`, 'ab/ü', 'ab/x\0'),
    junkText,
  );
  return fc.oneof({ weight: 3, arbitrary: fc.constantFrom(...known.v1.repositories, 'library/app', 'app') }, { weight: 2, arbitrary: valid }, { weight: 3, arbitrary: broken });
}

function v1Path(known: KnownContent): fc.Arbitrary<{ kind: string; path: string }> {
  const imageId = fc.oneof(
    { weight: 3, arbitrary: fc.constantFrom(...known.v1.imageIds) },
    { weight: 2, arbitrary: fc.oneof(hex(64), hex(16)) },
    {
      weight: 3,
      arbitrary: fc.oneof(
        hex(64).map((text) => text.toUpperCase()),
        fc.string({ unit: fc.constantFrom(...HEX), maxLength: 100 }),
        fc.constantFrom(...known.sentinels.relative, '..', '%2e%2e', '.', 'images', `${'a'.repeat(64)}%00`),
        junkText,
      ),
    },
  );
  const tag = fc.oneof(fc.constantFrom(...known.v1.tags), fc.stringMatching(/^[A-Za-z0-9_][A-Za-z0-9_.-]{0,12}$/), fc.constantFrom('..', '.x', '%2e%2e', repeat('t', 129), 'ü', 'a%2fb'), junkText);
  const resource = fc.oneof({ weight: 5, arbitrary: fc.constantFrom('json', 'layer', 'ancestry', 'checksum') }, { weight: 1, arbitrary: junkText });
  const suffix = fc.oneof(
    fc.constantFrom('', '/', '/tags', '/json', '/properties', '/images', '/auth', '/tags/'),
    tag.map((text) => `/tags/${text}`),
    tag.map((text) => `/tags/${text}/json`),
    junkText.map((text) => `/${text}`),
  );
  return fc.oneof(
    fc.constantFrom('/_ping', '/v1/_ping', '/v1/users', '/v1/users/', '/v1/', '/v1', '/_ping/').map((path) => ({ kind: 'v1-ping', path })),
    fc.oneof(fc.constant('/v1/search'), junkText.map((text) => `/v1/search?q=${text}`), fc.constantFrom('/v1/search?q=app', '/v1/search?q=', '/v1/search?q=a&q=b')).map((path) => ({ kind: 'v1-search', path })),
    fc.oneof(v1Name(known), junkText).map((user) => ({ kind: 'v1-users', path: `/v1/users/${user}/` })),
    fc.tuple(imageId, resource).map(([id, file]) => ({ kind: 'v1-image', path: `/v1/images/${id}/${file}` })),
    fc.tuple(v1Name(known), suffix).map(([name, rest]) => ({ kind: 'v1-repository', path: `/v1/repositories/${name}${rest}` })),
  );
}

const otherPath: fc.Arbitrary<{ kind: string; path: string }> = fc
  .oneof(
    fc.constantFrom('/healthz', '/readyz', '/metrics', '/_regmirror/status', '/', '*', '//', '/..', '/../../etc/passwd', '/%2e%2e/%2e%2e/etc/passwd', 'http://evil.example/v2/', '/v3/', '/favicon.ico'),
    junkText.map((text) => `/${text}`),
    junkText,
  )
  .map((path) => ({ kind: 'other', path }));

// ---- valid requests for content that exists ----

function validRequest(known: KnownContent, target: TargetName): fc.Arbitrary<Omit<FuzzRequest, 'target' | 'version' | 'host'>> {
  const range = fc.oneof(fc.constant(undefined), fc.tuple(fc.nat(2_000_000), fc.nat(2_000_000)).map(([a, b]) => `bytes=${Math.min(a, b)}-${Math.max(a, b)}`), fc.nat(5_000).map((n) => `bytes=-${n}`), fc.nat(2_000_000).map((n) => `bytes=${n}-`));
  const headers = (extra: Array<[string, string] | undefined>): Array<[string, string]> => extra.filter((entry): entry is [string, string] => entry !== undefined);
  if (target === 'plain') {
    const { kept } = known.v1;
    const path = fc.oneof(
      fc.tuple(fc.constantFrom(...kept.imageIds), fc.constantFrom('json', 'layer', 'ancestry')).map(([id, file]) => `/v1/images/${id}/${file}`),
      fc.constantFrom('/tags', '/json', '/images', '/properties', `/tags/${kept.tag}`, `/tags/${kept.tag}/json`).map((rest) => `/v1/repositories/${kept.repository}${rest}`),
      fc.constantFrom('/v1/_ping', '/_ping', '/v1/search?q=app', '/v2/', '/v2/_catalog'),
    );
    // GET only: docker-registry's v1 API answers HEAD with 405.
    return fc.tuple(path, range, fc.boolean()).map(([target_, bytes, token]) => ({
      kind: 'valid-v1',
      method: 'GET',
      path: target_,
      headers: headers([bytes === undefined ? undefined : ['Range', bytes], token ? ['X-Docker-Token', 'true'] : undefined]),
      body: undefined,
    }));
  }
  // Every type the images use: a manifest is never converted, so a narrower Accept rightly gets 404.
  const accept = fc.constantFrom(
    undefined,
    '*/*',
    'application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json',
    'application/vnd.docker.distribution.manifest.v2+json;q=0.5, application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json;q=0.9',
  );
  // A digest only under a repository that holds it: elsewhere it is rightly unknown.
  const manifest = fc.constantFrom(...known.v2.held.flatMap(({ name, manifests }) => [...known.v2.tags, ...manifests].map((ref) => `/v2/${name}/manifests/${ref}`)));
  const path = fc.oneof(
    manifest,
    fc.constantFrom(...known.v2.held.flatMap(({ name, blobs }) => blobs.map((blob) => `/v2/${name}/blobs/${blob}`))),
    fc.constantFrom(...known.v2.names).map((name) => `/v2/${name}/tags/list`),
    fc.constantFrom('/v2/', '/v2/_catalog', '/v2/_catalog?n=1'),
    manifest.map((target_) => `${target_}?ns=${known.upstreamRegistry}`),
  );
  const ifNoneMatch = fc.oneof(fc.constant(undefined), fc.constantFrom(...known.v2.manifestDigests, ...known.v2.blobDigests).map((text) => `"${text}"`));
  return fc.tuple(fc.constantFrom('GET', 'GET', 'HEAD'), path, accept, range, ifNoneMatch).map(([method, target_, mediaTypes, bytes, etag]) => ({
    kind: 'valid-v2',
    method,
    path: target_,
    headers: headers([mediaTypes === undefined ? undefined : ['Accept', mediaTypes], bytes === undefined ? undefined : ['Range', bytes], etag === undefined ? undefined : ['If-None-Match', etag]]),
    body: undefined,
  }));
}

// ---- headers and bodies ----

function header(known: KnownContent): fc.Arbitrary<[string, string]> {
  const anyDigest = fc.constantFrom(...known.v2.blobDigests, ...known.v2.manifestDigests);
  const range = fc.oneof(
    fc.constantFrom(
      'bytes=0-0', 'bytes=-5', 'bytes=5-', 'bytes=9-0', 'bytes=0-1,4-5', 'bytes=abc', 'bytes=', 'bytes=-', 'bytes=-0', 'bytes=0-', 'bytes=99999999999999999999-',
      'bytes=0-99999999999999999999', 'bytes=18446744073709551616-', 'items=0-1', 'bytes 0-1', ' bytes = 0 - 1 ', 'bytes=1-2-3', 'bytes=0x10-', 'bytes=+1-2', 'bytes=1e3-',
      '-1-2', 'bytes=--1', 'bytes=0-1,', 'bytes=,0-1', 'BYTES=0-1', 'bytes=\u00b9-2', `bytes=${repeat('0', 5000)}1-2`, `bytes=${repeat('0-1,', 2000)}0-1`,
    ),
    fc.tuple(fc.integer({ min: -10, max: 3_000_000 }), fc.integer({ min: -10, max: 3_000_000 })).map(([a, b]) => `bytes=${a}-${b}`),
    junkText.map((text) => `bytes=${text}`),
  );
  const accept = fc.oneof(
    fc.constantFrom(
      'application/vnd.oci.image.manifest.v1+json', 'application/vnd.oci.image.index.v1+json', 'application/vnd.docker.distribution.manifest.v2+json',
      'application/vnd.docker.distribution.manifest.list.v2+json', 'application/vnd.docker.distribution.manifest.v1+prettyjws', '*/*', '*', '', ',,,', 'application/*',
      'application/vnd.oci.image.manifest.v1+json;q=0', 'application/vnd.oci.image.manifest.v1+json;q=0, */*', 'text/html;q=0.9, */*;q=abc', 'a/b;q=1;q=0;level=',
      repeat('application/json, ', 500),
    ),
    junkText,
  );
  const authorization = fc.oneof(
    fc.constantFrom('Basic', 'Basic !!!', `Basic ${Buffer.from('a:b').toString('base64')}`, `Basic ${Buffer.from(':').toString('base64')}`, 'Bearer', 'Bearer junk.junk.junk', `Bearer ${repeat('x', 8000)}`, 'Token signature=x,repository="../../x",access=write', 'Token repository="team/app"', 'Token repository="..%2f.."', 'Digest x', ''),
    junkText,
  );
  const host = fc.constantFrom('evil.example', 'evil.example:1', 'a:b:c', '[::1]', '[::1', '127.0.0.1:0', 'localhost', '', repeat('h', 300), 'HOST.example', 'h\u00e9.example', known.upstreamRegistry);
  const contentType = fc.oneof(fc.constantFrom('application/json', 'application/octet-stream', 'text/plain', 'application/x-www-form-urlencoded', 'multipart/form-data; boundary=', 'application/vnd.oci.image.manifest.v1+json', '', ';', 'a/b; charset=../../x'), junkText);
  const ifNoneMatch = fc.oneof(anyDigest.map((text) => `"${text}"`), anyDigest.map((text) => `W/"${text}"`), anyDigest, fc.constantFrom('*', '""', '"', 'W/', ',', `"a", ${repeat('"b", ', 1000)}"c"`), junkText);
  const token: fc.Arbitrary<string> = fc.stringMatching(/^[A-Za-z][A-Za-z0-9-]{0,15}$/);
  const any = fc.oneof(
    { weight: 4, arbitrary: range.map((value): [string, string] => ['Range', value]) },
    { weight: 3, arbitrary: accept.map((value): [string, string] => ['Accept', value]) },
    { weight: 2, arbitrary: authorization.map((value): [string, string] => ['Authorization', value]) },
    { weight: 2, arbitrary: contentType.map((value): [string, string] => ['Content-Type', value]) },
    { weight: 2, arbitrary: ifNoneMatch.map((value): [string, string] => ['If-None-Match', value]) },
    { weight: 1, arbitrary: host.map((value): [string, string] => ['X-Forwarded-Host', value]) },
    { weight: 1, arbitrary: fc.constantFrom('Thu, 01 Jan 1970 00:00:00 GMT', 'junk', '').map((value): [string, string] => ['If-Modified-Since', value]) },
    { weight: 1, arbitrary: fc.constantFrom('true', 'TRUE', 'false', '').map((value): [string, string] => ['X-Docker-Token', value]) },
    { weight: 1, arbitrary: fc.oneof(hex(64).map((text) => `sha256:${text}`), fc.constantFrom('sha256:', 'tarsum+sha256:abc', 'sha256:../..'), junkText).map((value): [string, string] => ['X-Docker-Checksum-Payload', value]) },
    { weight: 1, arbitrary: fc.oneof(fc.constantFrom('docker/1.3.2 go/go1.3.3 kernel/../../x os/linux arch/amd64', 'docker/\u00e9 os/\u0000'), junkText).map((value): [string, string] => ['User-Agent', value]) },
    { weight: 1, arbitrary: fc.constant<[string, string]>(['Expect', '100-continue']) },
    { weight: 1, arbitrary: fc.tuple(token, fc.oneof(fc.string({ maxLength: 30 }), junkText)) },
  );
  // Mostly without controls and under 6,000 characters, so node's parser lets most requests through to the
  // routes; sometimes as generated, to try the parser.
  return fc
    .tuple(any, fc.oneof({ weight: 6, arbitrary: fc.constant(true) }, { weight: 1, arbitrary: fc.constant(false) }))
    .map(([[name, value], clean]): [string, string] => [name, clean ? stripControls(value).slice(0, 6_000) : value]);
}

function stripControls(text: string): string {
  let kept = '';
  for (const char of text) {
    const code = char.codePointAt(0) ?? 0;
    if ((code >= 0x20 && code !== 0x7f) || code === 0x09) kept += char;
  }
  return kept;
}

function bodyContent(known: KnownContent): fc.Arbitrary<BodyContent> {
  const anyId = fc.constantFrom(...known.v1.imageIds);
  const jsonish = fc.oneof(
    fc.json({ maxDepth: 3 }),
    fc.constantFrom('{', '[', '"', '{"id":', '{"id": null}', '[{"id": 1}]', '{"access": "private"}', '{"access": 7}', '{}', '[]', 'true', '""', '\u00ff\u00fe{}', '{"id":"\ud800"}'),
    anyId.map((id) => JSON.stringify(id)),
    anyId.map((id) => JSON.stringify({ id, parent: '../../sentinel.txt' })),
    anyId.map((id) => JSON.stringify([{ id, checksum: 'sha256:x' }])),
    fc.tuple(anyId, fc.jsonValue({ maxDepth: 2 })).map(([id, extra]) => JSON.stringify({ id, extra })),
    fc.constantFrom(...known.sentinels.relative).map((relative) => JSON.stringify({ id: relative, parent: relative })),
  );
  return fc.oneof(
    { weight: 4, arbitrary: jsonish.map((text): BodyContent => ({ kind: 'text', text })) },
    { weight: 2, arbitrary: junkText.map((text): BodyContent => ({ kind: 'text', text })) },
    { weight: 2, arbitrary: fc.record({ kind: fc.constant('bytes' as const), size: fc.integer({ min: 1, max: 64 * 1024 }), seed: fc.nat() }) },
    { weight: 1, arbitrary: fc.record({ kind: fc.constant('bytes' as const), size: fc.integer({ min: 900 * 1024, max: 1536 * 1024 }), seed: fc.nat() }) },
  );
}

function body(known: KnownContent): fc.Arbitrary<FuzzRequest['body']> {
  const mode = fc.oneof(
    { weight: 8, arbitrary: fc.constant<BodyMode>('exact') },
    { weight: 2, arbitrary: fc.constant<BodyMode>('chunked') },
    { weight: 1, arbitrary: fc.constantFrom<BodyMode>('short', 'long', 'bad-chunked', 'length-and-chunked', 'bad-length') },
  );
  return fc.oneof({ weight: 2, arbitrary: fc.constant(undefined) }, { weight: 3, arbitrary: fc.record({ mode, content: bodyContent(known) }) });
}

// ---- whole requests ----

/** One request against one target: mostly broken, some valid (weights below). */
export function fuzzRequest(known: KnownContent): fc.Arbitrary<FuzzRequest> {
  // Built once per target: a chain() would rebuild every generator for every request.
  return fc.oneof(requestFor(known, 'mirror'), requestFor(known, 'plain'));
}

function requestFor(known: KnownContent, target: TargetName): fc.Arbitrary<FuzzRequest> {
  const method = fc.oneof({ weight: 30, arbitrary: fc.constantFrom(...METHODS, 'GET', 'GET', 'HEAD') }, { weight: 1, arbitrary: fc.constantFrom('get', 'TRACE', 'PROPFIND', 'FOO', 'G\0T', '') });
  const host = fc.oneof(
    { weight: 30, arbitrary: fc.constant<FuzzRequest['host']>({ kind: 'own' }) },
    { weight: 1, arbitrary: fc.constant<FuzzRequest['host']>({ kind: 'none' }) },
    {
      weight: 4,
      arbitrary: fc.record({
        kind: fc.constant('value' as const),
        value: fc.oneof(fc.constantFrom('evil.example', '', 'a:b:c', '[::1', '127.0.0.1:1', known.upstreamRegistry, repeat('h', 300)), junkText.map(stripControls)),
        twice: fc.oneof({ weight: 5, arbitrary: fc.constant(false) }, { weight: 1, arbitrary: fc.constant(true) }),
      }),
    },
  );
  const version = fc.oneof({ weight: 40, arbitrary: fc.constant('HTTP/1.1') }, { weight: 1, arbitrary: fc.constantFrom('HTTP/1.0', 'HTTP/2.0', 'HTTP/1.2', 'HTTP/9', 'http/1.1', '') });
  const hostile = fc
    .record({
      route: fc.oneof({ weight: 5, arbitrary: v2Path(known) }, { weight: 4, arbitrary: v1Path(known) }, { weight: 1, arbitrary: otherPath }),
      method,
      version,
      host,
      headers: fc.array(header(known), { maxLength: 4 }),
      body: body(known),
      // Mostly escaped so node's parser lets the request through to the routes; sometimes raw, to try the parser.
      escaped: fc.oneof({ weight: 5, arbitrary: fc.constant(true) }, { weight: 1, arbitrary: fc.constant(false) }),
    })
    .map(({ route, escaped, ...rest }): FuzzRequest => ({ target, kind: route.kind, path: escaped ? escapeForWire(route.path) : route.path, ...rest }));
  const valid = validRequest(known, target).map((request): FuzzRequest => ({ ...request, target, version: 'HTTP/1.1', host: { kind: 'own' } }));
  return fc.oneof({ weight: 4, arbitrary: hostile }, { weight: 1, arbitrary: valid });
}

/** Percent-escapes what may not stand raw in a request target (spaces, controls, non-ASCII); `%zz`, `..`, `/`, `?`, `#` stay. */
function escapeForWire(target: string): string {
  let escaped = '';
  for (const char of target) {
    const code = char.codePointAt(0) ?? 0;
    if (code > 0x20 && code < 0x7f) escaped += char;
    else for (const byte of Buffer.from(char, 'utf8')) escaped += `%${byte.toString(16).toUpperCase().padStart(2, '0')}`;
  }
  return escaped;
}

/** `count` requests, the same ones for the same seed. */
export function generateRequests(known: KnownContent, count: number, seed: number): FuzzRequest[] {
  return fc.sample(fuzzRequest(known), { numRuns: count, seed });
}
