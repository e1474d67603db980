// Tests for platforms: parsing OS/ARCH[/VARIANT] and selecting the children of an index.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { ChildManifest, Platform } from './manifest.js';
import { formatPlatform, parsePlatform, platformMatches, selectChildren, type PlatformSpec } from './platform.js';

function spec(text: string): PlatformSpec {
  const parsed = parsePlatform(text);
  if (!parsed.ok) throw new Error(`${text}: ${parsed.reason}`);
  return parsed.platform;
}

describe('parsePlatform', () => {
  const valid: [string, PlatformSpec][] = [
    ['linux/amd64', { os: 'linux', architecture: 'amd64', variant: undefined }],
    ['linux/arm64/v8', { os: 'linux', architecture: 'arm64', variant: 'v8' }],
    ['Linux/ARM/v7', { os: 'linux', architecture: 'arm', variant: 'v7' }],
    ['windows/amd64', { os: 'windows', architecture: 'amd64', variant: undefined }],
    ['linux/x86_64', { os: 'linux', architecture: 'x86_64', variant: undefined }],
  ];
  for (const [text, expected] of valid) {
    it(`reads ${text}`, () => {
      assert.deepEqual(parsePlatform(text), { ok: true, platform: expected });
    });
  }
  for (const text of ['', 'linux', 'linux/', '/amd64', 'linux/amd64/', 'linux/arm64/v8/x', 'linux amd64', 'linux/amd64,linux/arm64']) {
    it(`refuses ${JSON.stringify(text)}`, () => {
      const parsed = parsePlatform(text);
      assert.equal(parsed.ok, false);
      if (!parsed.ok) assert.match(parsed.reason, /OS\/ARCH/);
    });
  }
});

describe('platformMatches', () => {
  const cases: [string, Platform, boolean][] = [
    ['linux/amd64', { os: 'linux', architecture: 'amd64' }, true],
    ['linux/amd64', { os: 'linux', architecture: 'arm64', variant: 'v8' }, false],
    ['linux/amd64', { os: 'windows', architecture: 'amd64' }, false],
    // No variant wanted: any variant.
    ['linux/arm64', { os: 'linux', architecture: 'arm64', variant: 'v8' }, true],
    ['linux/arm', { os: 'linux', architecture: 'arm', variant: 'v6' }, true],
    // A variant wanted: the same, with each architecture's default when none is written.
    ['linux/arm64/v8', { os: 'linux', architecture: 'arm64', variant: 'v8' }, true],
    ['linux/arm64/v8', { os: 'linux', architecture: 'arm64' }, true],
    ['linux/arm64/8', { os: 'linux', architecture: 'arm64', variant: 'v8' }, true],
    ['linux/arm64/v9', { os: 'linux', architecture: 'arm64' }, false],
    ['linux/arm/v7', { os: 'linux', architecture: 'arm', variant: 'v6' }, false],
    ['linux/arm/v7', { os: 'linux', architecture: 'arm' }, true],
    ['linux/amd64/v1', { os: 'linux', architecture: 'amd64' }, true],
    ['linux/amd64/v3', { os: 'linux', architecture: 'amd64' }, false],
    // Other tools' names for the same architecture.
    ['linux/aarch64', { os: 'linux', architecture: 'arm64', variant: 'v8' }, true],
    ['linux/x86_64', { os: 'linux', architecture: 'amd64' }, true],
    ['linux/armhf', { os: 'linux', architecture: 'arm', variant: 'v7' }, true],
    ['linux/arm64', { os: 'linux', architecture: 'aarch64' }, true],
    // Attestations and the like say unknown/unknown, or nothing.
    ['linux/amd64', { os: 'unknown', architecture: 'unknown' }, false],
    ['linux/amd64', {}, false],
  ];
  for (const [wanted, candidate, expected] of cases) {
    it(`${wanted} ${expected ? 'selects' : 'does not select'} ${JSON.stringify(candidate)}`, () => {
      assert.equal(platformMatches(spec(wanted), candidate), expected);
    });
  }
});

describe('selectChildren', () => {
  const child = (n: number, platform?: Platform): ChildManifest => ({
    digest: `sha256:${String(n).repeat(64)}`,
    mediaType: 'application/vnd.oci.image.manifest.v1+json',
    size: 100 + n,
    ...(platform === undefined ? {} : { platform }),
  });
  const amd64 = child(1, { os: 'linux', architecture: 'amd64' });
  const arm64 = child(2, { os: 'linux', architecture: 'arm64', variant: 'v8' });
  const arm = child(3, { os: 'linux', architecture: 'arm', variant: 'v7' });
  const attestation = child(4, { os: 'unknown', architecture: 'unknown' });
  const bare = child(5);
  const children = [amd64, arm64, arm, attestation, bare];

  it('selects every child when no platform is wanted', () => {
    assert.deepEqual(selectChildren(children, []), children);
  });
  it('selects the children of the wanted platforms, in the index order', () => {
    assert.deepEqual(selectChildren(children, [spec('linux/arm64')]), [arm64]);
    assert.deepEqual(selectChildren(children, [spec('linux/arm/v7'), spec('linux/amd64')]), [amd64, arm]);
  });
  it('selects nothing when no child is of a wanted platform', () => {
    assert.deepEqual(selectChildren(children, [spec('linux/s390x')]), []);
  });
});

describe('formatPlatform', () => {
  it('writes OS/ARCH[/VARIANT]', () => {
    assert.equal(formatPlatform({ os: 'linux', architecture: 'arm64', variant: 'v8' }), 'linux/arm64/v8');
    assert.equal(formatPlatform({ os: 'linux', architecture: 'amd64' }), 'linux/amd64');
    assert.equal(formatPlatform({ os: 'linux', architecture: 'amd64', variant: '' }), 'linux/amd64');
    assert.equal(formatPlatform({}), 'unknown/unknown');
  });
});
