// Tests for the referrers list: what an index must be to be read as one, which descriptor fields pass, the
// artifactType filter, and the referrers tag.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { MediaType } from './manifest.js';
import { isMediaType, parseReferrersIndex, referrersIndex, referrersTag, type ReferrerDescriptor } from './referrers.js';

const D1 = `sha256:${'1'.repeat(64)}` as const;
const D2 = `sha256:${'2'.repeat(64)}` as const;
const SIGNATURE = 'application/vnd.dev.cosign.artifact.sig.v1+json';
const SBOM = 'application/spdx+json';

const signature = { mediaType: MediaType.ociManifest, digest: D1, size: 10, artifactType: SIGNATURE, annotations: { 'org.opencontainers.image.created': '2026-01-01T00:00:00Z' } };
const sbom = { mediaType: MediaType.ociManifest, digest: D2, size: 20, artifactType: SBOM };

function bytes(document: unknown): Uint8Array {
  return Buffer.from(typeof document === 'string' ? document : JSON.stringify(document));
}

function index(manifests: unknown[], extra: Record<string, unknown> = {}): Record<string, unknown> {
  return { schemaVersion: 2, mediaType: MediaType.ociIndex, manifests, ...extra };
}

describe('parseReferrersIndex', () => {
  it('reads the descriptors of an OCI index, keeping only the fields a referrers list names', () => {
    const parsed = parseReferrersIndex(bytes(index([{ ...signature, platform: { os: 'linux' }, urls: ['http://10.0.0.1/'] }, sbom])), undefined);
    assert.deepEqual(parsed, { ok: true, referrers: [signature, sbom] });
  });

  it('takes the Content-Type when the index names no media type, and an empty list', () => {
    const { mediaType: _omitted, ...untyped } = index([]);
    assert.deepEqual(parseReferrersIndex(bytes(untyped), `${MediaType.ociIndex}; charset=utf-8`), { ok: true, referrers: [] });
    assert.equal(parseReferrersIndex(bytes(untyped), 'application/json').ok, false);
  });

  it('leaves out descriptors of a digest algorithm the mirror does not store', () => {
    const sha512 = { ...sbom, digest: `sha512:${'a'.repeat(128)}` };
    assert.deepEqual(parseReferrersIndex(bytes(index([signature, sha512])), undefined), { ok: true, referrers: [signature] });
  });

  const refused: Array<[string, unknown]> = [
    ['not JSON', 'not json {'],
    ['an array', [signature]],
    ['an image manifest', { schemaVersion: 2, mediaType: MediaType.ociManifest, config: sbom, layers: [] }],
    ['a Docker manifest list', index([], { mediaType: MediaType.dockerManifestList })],
    ['schemaVersion 1', index([], { schemaVersion: 1 })],
    ['no manifests', { schemaVersion: 2, mediaType: MediaType.ociIndex }],
    ['manifests not an array', index([], { manifests: {} })],
    ['a descriptor that is a string', index(['sha256:x'])],
    ['a descriptor without a size', index([{ mediaType: MediaType.ociManifest, digest: D1 }])],
    ['a negative size', index([{ ...sbom, size: -1 }])],
    ['a fractional size', index([{ ...sbom, size: 1.5 }])],
    ['an invalid digest', index([{ ...sbom, digest: 'sha256:xyz' }])],
    ['a media type that is not one', index([{ ...sbom, mediaType: 'text' }])],
    ['an artifactType that is not a media type', index([{ ...sbom, artifactType: 'x'.repeat(300) }])],
    ['an artifactType that is not a string', index([{ ...sbom, artifactType: 7 }])],
    ['annotations that are not strings', index([{ ...sbom, annotations: { a: 1 } }])],
    ['annotations that are an array', index([{ ...sbom, annotations: ['a'] }])],
  ];
  for (const [what, document] of refused) {
    it(`refuses ${what}`, () => {
      assert.equal(parseReferrersIndex(bytes(document), MediaType.ociIndex).ok, false);
    });
  }
});

describe('referrersIndex', () => {
  const referrers: ReferrerDescriptor[] = [signature, sbom];

  it('is an OCI image index of the descriptors', () => {
    assert.deepEqual(JSON.parse(referrersIndex(referrers)), index(referrers));
    assert.deepEqual(JSON.parse(referrersIndex([])), index([]));
  });

  it('keeps only the descriptors of the artifactType asked for', () => {
    assert.deepEqual(JSON.parse(referrersIndex(referrers, SBOM)), index([sbom]));
    assert.deepEqual(JSON.parse(referrersIndex(referrers, 'application/vnd.none')), index([]));
  });

  it('reads back as what it was made of', () => {
    assert.deepEqual(parseReferrersIndex(Buffer.from(referrersIndex(referrers)), undefined), { ok: true, referrers });
  });
});

describe('referrersTag and isMediaType', () => {
  it('names the tag of a digest as the referrers tag schema does', () => {
    assert.equal(referrersTag(D1), `sha256-${'1'.repeat(64)}`);
  });

  it('knows a media type', () => {
    for (const good of [SIGNATURE, SBOM, 'application/vnd.oci.empty.v1+json', `a/${'b'.repeat(127)}`]) assert.equal(isMediaType(good), true, good);
    for (const bad of ['', 'text', '/json', 'application/', 'a/b/c', 'application/json; charset=utf-8', `a/${'b'.repeat(128)}`, 'a/b\n']) {
      assert.equal(isMediaType(bad), false, JSON.stringify(bad));
    }
  });
});
