// Tests for manifest parsing (media type, index children), Accept negotiation and the default platform child.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  accepts,
  acceptedMediaTypes,
  defaultPlatformChild,
  isIndexMediaType,
  MANIFEST_MEDIA_TYPES,
  MediaType,
  parseManifest,
  UPSTREAM_MANIFEST_ACCEPT,
  type ChildManifest,
  type ManifestParse,
} from './manifest.js';

const D1 = `sha256:${'1'.repeat(64)}` as const;
const D2 = `sha256:${'2'.repeat(64)}` as const;
const D3 = `sha256:${'3'.repeat(64)}` as const;
const CONFIG = { mediaType: 'application/vnd.oci.image.config.v1+json', digest: D1, size: 10 };
const LAYER = { mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: D2, size: 20 };

function bytes(document: unknown): Uint8Array {
  return Buffer.from(typeof document === 'string' ? document : JSON.stringify(document));
}

const ociManifest = { schemaVersion: 2, mediaType: MediaType.ociManifest, config: CONFIG, layers: [LAYER] };
const { mediaType: _omitted, ...ociManifestWithoutType } = ociManifest;
const dockerManifest = {
  schemaVersion: 2,
  mediaType: MediaType.dockerManifest,
  config: { ...CONFIG, mediaType: 'application/vnd.docker.container.image.v1+json' },
  layers: [{ ...LAYER, mediaType: 'application/vnd.docker.image.rootfs.diff.tar.gzip' }],
};
const amd64: ChildManifest = { digest: D1, mediaType: MediaType.ociManifest, size: 500, platform: { os: 'linux', architecture: 'amd64' } };
const arm64: ChildManifest = {
  digest: D2,
  mediaType: MediaType.ociManifest,
  size: 501,
  platform: { os: 'linux', architecture: 'arm64', variant: 'v8' },
};
const ociIndex = { schemaVersion: 2, mediaType: MediaType.ociIndex, manifests: [arm64, amd64] };
const dockerList = {
  schemaVersion: 2,
  mediaType: MediaType.dockerManifestList,
  manifests: [
    { ...amd64, mediaType: MediaType.dockerManifest },
    { ...arm64, mediaType: MediaType.dockerManifest },
  ],
};
const schema1 = {
  schemaVersion: 1,
  name: 'library/alpine',
  tag: 'latest',
  architecture: 'amd64',
  fsLayers: [{ blobSum: D1 }],
  history: [],
  signatures: [],
};

describe('parseManifest', () => {
  /** A parse result without its references (they have tests of their own, below). */
  type Parsed = { ok: true; mediaType: string; children: ChildManifest[] } | Extract<ManifestParse, { ok: false }>;
  const ok = (mediaType: string, children: ChildManifest[] = []): Parsed => ({ ok: true, mediaType, children });
  const cases: { name: string; body: unknown; contentType: string | undefined; expected: Parsed }[] = [
    { name: 'OCI manifest with its mediaType field', body: ociManifest, contentType: undefined, expected: ok(MediaType.ociManifest) },
    {
      name: 'OCI manifest whose field wins over a different Content-Type',
      body: ociManifest,
      contentType: MediaType.dockerManifest,
      expected: ok(MediaType.ociManifest),
    },
    {
      name: 'OCI manifest without mediaType: the Content-Type header',
      body: ociManifestWithoutType,
      contentType: MediaType.ociManifest,
      expected: ok(MediaType.ociManifest),
    },
    {
      name: 'OCI manifest without mediaType: the Content-Type header with parameters',
      body: ociManifestWithoutType,
      contentType: `${MediaType.ociManifest}; charset=utf-8`,
      expected: ok(MediaType.ociManifest),
    },
    {
      name: 'OCI manifest without mediaType or Content-Type: inferred from config and layers',
      body: ociManifestWithoutType,
      contentType: undefined,
      expected: ok(MediaType.ociManifest),
    },
    {
      name: 'OCI manifest without mediaType, generic Content-Type: inferred',
      body: ociManifestWithoutType,
      contentType: 'application/json',
      expected: ok(MediaType.ociManifest),
    },
    { name: 'docker v2 schema 2', body: dockerManifest, contentType: MediaType.dockerManifest, expected: ok(MediaType.dockerManifest) },
    { name: 'OCI index with platforms', body: ociIndex, contentType: MediaType.ociIndex, expected: ok(MediaType.ociIndex, [arm64, amd64]) },
    {
      name: 'OCI index without mediaType, told by Content-Type',
      body: { schemaVersion: 2, manifests: [amd64] },
      contentType: MediaType.ociIndex,
      expected: ok(MediaType.ociIndex, [amd64]),
    },
    {
      name: 'OCI index without mediaType or Content-Type: inferred from manifests',
      body: { schemaVersion: 2, manifests: [amd64] },
      contentType: undefined,
      expected: ok(MediaType.ociIndex, [amd64]),
    },
    {
      name: 'docker manifest list with platforms',
      body: dockerList,
      contentType: undefined,
      expected: ok(MediaType.dockerManifestList, [
        { ...amd64, mediaType: MediaType.dockerManifest },
        { ...arm64, mediaType: MediaType.dockerManifest },
      ]),
    },
    {
      name: 'index entries without a platform',
      body: { ...ociIndex, manifests: [{ digest: D3, mediaType: MediaType.ociManifest, size: 1 }] },
      contentType: undefined,
      expected: ok(MediaType.ociIndex, [{ digest: D3, mediaType: MediaType.ociManifest, size: 1 }]),
    },
    {
      name: 'index entry whose platform is not an object: dropped, the entry kept',
      body: { ...ociIndex, manifests: [{ digest: D3, mediaType: MediaType.ociManifest, size: 1, platform: 'linux/amd64' }] },
      contentType: undefined,
      expected: ok(MediaType.ociIndex, [{ digest: D3, mediaType: MediaType.ociManifest, size: 1 }]),
    },
    { name: 'empty index', body: { ...ociIndex, manifests: [] }, contentType: undefined, expected: ok(MediaType.ociIndex, []) },
    { name: 'invalid JSON', body: '{"schemaVersion": 2,', contentType: MediaType.ociManifest, expected: { ok: false, reason: 'manifest is not valid JSON' } },
    { name: 'empty body', body: '', contentType: MediaType.ociManifest, expected: { ok: false, reason: 'manifest is not valid JSON' } },
    { name: 'a JSON array', body: [ociManifest], contentType: MediaType.ociManifest, expected: { ok: false, reason: 'manifest is not a JSON object' } },
    { name: 'JSON null', body: 'null', contentType: MediaType.ociManifest, expected: { ok: false, reason: 'manifest is not a JSON object' } },
    { name: 'a JSON string', body: '"manifest"', contentType: MediaType.ociManifest, expected: { ok: false, reason: 'manifest is not a JSON object' } },
    {
      name: 'declared schema1 media type',
      body: { ...schema1, mediaType: 'application/vnd.docker.distribution.manifest.v1+prettyjws' },
      contentType: undefined,
      expected: { ok: false, reason: 'unsupported manifest media type application/vnd.docker.distribution.manifest.v1+prettyjws' },
    },
    {
      name: 'schema1 told only by its Content-Type',
      body: schema1,
      contentType: 'application/vnd.docker.distribution.manifest.v1+prettyjws',
      expected: { ok: false, reason: 'unsupported manifest media type (none)' },
    },
    {
      name: 'an OCI artifact type in mediaType',
      body: { ...ociManifest, mediaType: 'application/vnd.oci.artifact.manifest.v1+json' },
      contentType: undefined,
      expected: { ok: false, reason: 'unsupported manifest media type application/vnd.oci.artifact.manifest.v1+json' },
    },
    { name: 'an object of nothing known', body: {}, contentType: undefined, expected: { ok: false, reason: 'unsupported manifest media type (none)' } },
    {
      name: 'index without a manifests array',
      body: { schemaVersion: 2, mediaType: MediaType.ociIndex },
      contentType: undefined,
      expected: { ok: false, reason: 'index has no manifests array' },
    },
    {
      name: 'index whose manifests is an object',
      body: { schemaVersion: 2, mediaType: MediaType.dockerManifestList, manifests: { a: amd64 } },
      contentType: undefined,
      expected: { ok: false, reason: 'index has no manifests array' },
    },
  ];
  for (const { name, body, contentType, expected } of cases) {
    it(name, () => {
      const parsed = parseManifest(bytes(body), contentType);
      assert.deepEqual(parsed.ok ? { ok: true, mediaType: parsed.mediaType, children: parsed.children } : parsed, expected);
    });
  }

  it('reads what an image manifest references: its config, its layers in order, its subject', () => {
    const subject = { mediaType: MediaType.ociManifest, digest: D3, size: 30 };
    const parsed = parseManifest(bytes({ ...ociManifest, layers: [LAYER, { ...LAYER, digest: D3 }], subject }), undefined);
    assert.ok(parsed.ok);
    assert.deepEqual(parsed.references, [
      { digest: D1, role: 'config' },
      { digest: D2, role: 'layer' },
      { digest: D3, role: 'layer' },
      { digest: D3, role: 'subject' },
    ]);
    const docker = parseManifest(bytes(dockerManifest), undefined);
    assert.ok(docker.ok);
    assert.deepEqual(docker.references, [
      { digest: D1, role: 'config' },
      { digest: D2, role: 'layer' },
    ]);
  });

  it('reads the blobs of an image manifest with the sizes they declare, none for an index', () => {
    const parsed = parseManifest(bytes({ ...ociManifest, layers: [LAYER, { mediaType: LAYER.mediaType, digest: D3 }, { ...LAYER, digest: D1, size: -1 }] }), undefined);
    assert.ok(parsed.ok);
    assert.deepEqual(parsed.blobs, [
      { digest: D1, role: 'config', size: CONFIG.size },
      { digest: D2, role: 'layer', size: LAYER.size },
      { digest: D3, role: 'layer', size: undefined },
      { digest: D1, role: 'layer', size: undefined },
    ]);
    const index = parseManifest(bytes(ociIndex), undefined);
    assert.ok(index.ok);
    assert.deepEqual(index.blobs, []);
  });

  it('reads what an index references: its child manifests, and its subject', () => {
    const parsed = parseManifest(bytes({ ...ociIndex, subject: { mediaType: MediaType.ociManifest, digest: D3, size: 1 } }), undefined);
    assert.ok(parsed.ok);
    assert.deepEqual(parsed.references, [
      { digest: D2, role: 'manifest' },
      { digest: D1, role: 'manifest' },
      { digest: D3, role: 'subject' },
    ]);
  });

  for (const [name, change, reason] of [
    ['a config without a digest', { config: { mediaType: CONFIG.mediaType, size: 1 } }, 'manifest has a malformed config descriptor'],
    ['a layer with a malformed digest', { layers: [LAYER, { ...LAYER, digest: 'sha256:nothex' }] }, 'manifest has a malformed layer descriptor'],
    ['layers that are not an array', { layers: { a: LAYER } }, 'manifest has a malformed layer descriptor'],
    ['a subject that is not a descriptor', { subject: 'sha256:x' }, 'manifest has a malformed subject'],
  ] as const) {
    it(`refuses an image manifest with ${name}: what it references must be known`, () => {
      assert.deepEqual(parseManifest(bytes({ ...ociManifest, ...change }), undefined), { ok: false, reason });
    });
  }

  const malformed: { name: string; entry: unknown }[] = [
    { name: 'null', entry: null },
    { name: 'a string', entry: D1 },
    { name: 'no digest', entry: { mediaType: MediaType.ociManifest, size: 1 } },
    { name: 'an invalid digest', entry: { digest: 'sha256:abc', mediaType: MediaType.ociManifest, size: 1 } },
    { name: 'an uppercase digest', entry: { digest: D1.toUpperCase(), mediaType: MediaType.ociManifest, size: 1 } },
    { name: 'an unsupported digest', entry: { digest: `sha512:${'a'.repeat(128)}`, mediaType: MediaType.ociManifest, size: 1 } },
    { name: 'no mediaType', entry: { digest: D1, size: 1 } },
    { name: 'a numeric mediaType', entry: { digest: D1, mediaType: 7, size: 1 } },
    { name: 'a string size', entry: { digest: D1, mediaType: MediaType.ociManifest, size: '1' } },
    { name: 'no size', entry: { digest: D1, mediaType: MediaType.ociManifest } },
  ];
  for (const { name, entry } of malformed) {
    it(`rejects an index with a descriptor of ${name}`, () => {
      assert.deepEqual(parseManifest(bytes({ ...ociIndex, manifests: [amd64, entry] }), undefined), {
        ok: false,
        reason: 'index has a malformed descriptor',
      });
    });
  }

  it('reads children only from indexes', () => {
    const result = parseManifest(bytes({ ...ociManifest, manifests: [amd64] }), undefined);
    assert.ok(result.ok);
    assert.deepEqual(result.children, []);
    assert.deepEqual(result.references, [
      { digest: D1, role: 'config' },
      { digest: D2, role: 'layer' },
    ]);
  });
});

describe('media type lists', () => {
  it('knows the four manifest types, indexes first', () => {
    assert.deepEqual(MANIFEST_MEDIA_TYPES, [MediaType.ociIndex, MediaType.dockerManifestList, MediaType.ociManifest, MediaType.dockerManifest]);
    assert.equal(UPSTREAM_MANIFEST_ACCEPT, MANIFEST_MEDIA_TYPES.join(', '));
  });
  it('tells indexes apart', () => {
    assert.equal(isIndexMediaType(MediaType.ociIndex), true);
    assert.equal(isIndexMediaType(MediaType.dockerManifestList), true);
    assert.equal(isIndexMediaType(MediaType.ociManifest), false);
    assert.equal(isIndexMediaType(MediaType.dockerManifest), false);
    assert.equal(isIndexMediaType('application/json'), false);
  });
});

describe('acceptedMediaTypes and accepts', () => {
  const TEXT = 'text/plain';
  const ALL = [MediaType.ociIndex, MediaType.ociManifest, MediaType.dockerManifest, MediaType.dockerManifestList, TEXT];
  const cases: { name: string; accept: string | string[] | undefined; accepted: string[] }[] = [
    { name: 'no header: anything', accept: undefined, accepted: ALL },
    { name: 'an empty header: anything', accept: '', accepted: ALL },
    { name: 'an empty array: anything', accept: [], accepted: ALL },
    { name: '*/*: anything', accept: '*/*', accepted: ALL },
    { name: '*/* among others: anything', accept: `${MediaType.ociManifest}, */*;q=0.1`, accepted: ALL },
    { name: 'one type', accept: MediaType.dockerManifest, accepted: [MediaType.dockerManifest] },
    {
      name: 'a comma list with q parameters and spaces',
      accept: `${MediaType.ociIndex};q=0.9 , ${MediaType.dockerManifest} ;q=0.5,${MediaType.ociManifest}`,
      accepted: [MediaType.ociIndex, MediaType.ociManifest, MediaType.dockerManifest],
    },
    { name: 'upper case is folded', accept: 'Application/VND.OCI.Image.Manifest.v1+JSON', accepted: [MediaType.ociManifest] },
    { name: 'empty entries are skipped', accept: `,, ${MediaType.ociManifest},`, accepted: [MediaType.ociManifest] },
    {
      name: 'several headers (an array)',
      accept: [MediaType.dockerManifest, `${MediaType.dockerManifestList}, ${MediaType.ociIndex};q=0.5`],
      accepted: [MediaType.ociIndex, MediaType.dockerManifest, MediaType.dockerManifestList],
    },
    { name: '*/* in the second header', accept: [MediaType.dockerManifest, '*/*'], accepted: ALL },
    { name: 'q=0 refuses a type', accept: `${MediaType.ociIndex};q=0, ${MediaType.ociManifest};q=0.5`, accepted: [MediaType.ociManifest] },
    { name: 'q=0.000 with spaces refuses too', accept: `${MediaType.ociIndex} ; Q = 0.000, ${MediaType.ociManifest}`, accepted: [MediaType.ociManifest] },
    { name: 'a type refused beside */*: anything but it', accept: `${MediaType.ociIndex};q=0, */*`, accepted: ALL.filter((type) => type !== MediaType.ociIndex) },
    { name: '*/*;q=0 is not "anything"', accept: `${MediaType.dockerManifest}, */*;q=0`, accepted: [MediaType.dockerManifest] },
    { name: 'everything refused: nothing', accept: `${MediaType.ociIndex};q=0`, accepted: [] },
    { name: 'a type/* range takes its subtypes', accept: 'application/*;q=0.8', accepted: ALL.filter((type) => type !== TEXT) },
    { name: 'a type named beats its refused range', accept: `application/*;q=0, ${MediaType.ociManifest}`, accepted: [MediaType.ociManifest] },
  ];
  for (const { name, accept, accepted } of cases) {
    it(name, () => {
      const filter = acceptedMediaTypes(accept);
      assert.deepEqual(ALL.filter((type) => accepts(filter, type)), accepted);
    });
  }
});

describe('defaultPlatformChild', () => {
  const windows: ChildManifest = { digest: D3, mediaType: MediaType.ociManifest, size: 1, platform: { os: 'windows', architecture: 'amd64' } };
  const bare: ChildManifest = { digest: D3, mediaType: MediaType.ociManifest, size: 1 };
  const attestation: ChildManifest = { digest: D3, mediaType: MediaType.ociManifest, size: 1, platform: { os: 'unknown', architecture: 'unknown' } };
  const cases: { name: string; children: ChildManifest[]; expected: ChildManifest | undefined }[] = [
    { name: 'linux/amd64 among others, not first', children: [arm64, windows, amd64], expected: amd64 },
    { name: 'the first linux/amd64 when there are several', children: [amd64, { ...amd64, digest: D3 }], expected: amd64 },
    { name: 'none without linux/amd64', children: [arm64, windows, bare, attestation], expected: undefined },
    { name: 'none for an empty index', children: [], expected: undefined },
  ];
  for (const { name, children, expected } of cases) {
    it(name, () => {
      assert.equal(defaultPlatformChild(children), expected);
    });
  }
});
