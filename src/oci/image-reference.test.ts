// Tests for image references: [REGISTRY/]NAME[:TAG][@DIGEST].

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { Digest } from './digest.js';
import { manifestReference, parseImageReference, type ImageReference } from './image-reference.js';

const DIGEST: Digest = `sha256:${'a'.repeat(64)}`;

describe('parseImageReference', () => {
  const valid: [string, ImageReference][] = [
    ['docker.io/library/alpine:3.20', { name: 'docker.io/library/alpine', tag: '3.20', digest: undefined }],
    ['ghcr.io/org/app:v1', { name: 'ghcr.io/org/app', tag: 'v1', digest: undefined }],
    ['team/app:v1', { name: 'team/app', tag: 'v1', digest: undefined }],
    ['alpine:3.20', { name: 'alpine', tag: '3.20', digest: undefined }],
    ['alpine', { name: 'alpine', tag: 'latest', digest: undefined }],
    ['docker.io/library/alpine', { name: 'docker.io/library/alpine', tag: 'latest', digest: undefined }],
    [`ghcr.io/org/app@${DIGEST}`, { name: 'ghcr.io/org/app', tag: undefined, digest: DIGEST }],
    [`ghcr.io/org/app:v1@${DIGEST}`, { name: 'ghcr.io/org/app', tag: 'v1', digest: DIGEST }],
    ['quay.io/a.b/c_d/e__f/g-h:V1.0_rc-2', { name: 'quay.io/a.b/c_d/e__f/g-h', tag: 'V1.0_rc-2', digest: undefined }],
    // Without a slash a colon can only start a tag.
    ['localhost:5000', { name: 'localhost', tag: '5000', digest: undefined }],
    [`a/b:${'t'.repeat(128)}`, { name: 'a/b', tag: 't'.repeat(128), digest: undefined }],
  ];
  for (const [text, expected] of valid) {
    it(`reads ${text.slice(0, 80)}`, () => {
      assert.deepEqual(parseImageReference(text), { ok: true, reference: expected });
    });
  }

  const invalid: [string, RegExp][] = [
    ['', /empty/],
    [':v1', /no repository name/],
    [`@${DIGEST}`, /no repository name/],
    ['team/app:', /invalid tag/],
    ['team/app:-v1', /invalid tag/],
    [`team/app:${'t'.repeat(129)}`, /invalid tag/],
    ['team/app:v 1', /invalid tag/],
    ['team/app@', /invalid digest/],
    ['team/app@sha256:abc', /invalid digest/],
    [`team/app@sha256:${'A'.repeat(64)}`, /invalid digest/],
    [`team/app@sha512:${'a'.repeat(128)}`, /unsupported digest algorithm/],
    [`team/app@md5:${'a'.repeat(32)}`, /unsupported digest algorithm/],
    ['Team/App:v1', /invalid repository name/],
    ['team//app:v1', /invalid repository name/],
    ['/team/app:v1', /invalid repository name/],
    ['team/app/:v1', /invalid repository name/],
    ['team/-app:v1', /invalid repository name/],
    [' team/app:v1', /invalid repository name/],
    ['https://docker.io/alpine:3.20', /invalid repository name|port/],
    ['localhost:5000/app:v1', /registry with a port \(localhost:5000\)/],
    ['127.0.0.1:5000/team/app', /registry with a port/],
    [`a/${'b'.repeat(255)}:v1`, /longer than 255/],
    ['team/app:v1:v2', /invalid repository name/],
  ];
  for (const [text, reason] of invalid) {
    it(`refuses ${JSON.stringify(text.slice(0, 60))}`, () => {
      const parsed = parseImageReference(text);
      assert.equal(parsed.ok, false);
      if (!parsed.ok) assert.match(parsed.reason, reason);
    });
  }
});

describe('manifestReference', () => {
  it('asks for the digest when there is one, else the tag', () => {
    assert.equal(manifestReference({ name: 'a', tag: 'v1', digest: undefined }), 'v1');
    assert.equal(manifestReference({ name: 'a', tag: 'v1', digest: DIGEST }), DIGEST);
    assert.equal(manifestReference({ name: 'a', tag: undefined, digest: DIGEST }), DIGEST);
  });
});
