import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, describe, it } from 'node:test';
import type { BlobRecord } from '../meta/metadata-store.js';
import { SqliteMetadataStore } from '../meta/sqlite-store.js';
import { digestOf, type Digest } from '../oci/digest.js';
import type { ContentReference } from '../oci/manifest.js';
import { planEviction, type EvictionInput, type EvictionPlan } from './eviction-plan.js';

const d = (label: string): Digest => digestOf(Buffer.from(label));
const MINUTE = 60_000;
const NOW = 1_800_000_000_000;
const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';

interface PlannedManifest {
  digest: Digest;
  size: number;
  references: ContentReference[];
  lastAccess: number;
}
type PlannedBlob = BlobRecord;

/** An image manifest of 100 bytes over a config of 10 bytes and the given layers. */
function image(name: string, layers: string[], lastAccess: number): { manifest: PlannedManifest; blobs: PlannedBlob[] } {
  const references: ContentReference[] = [{ digest: d(`${name} config`), role: 'config' }, ...layers.map((layer) => ({ digest: d(layer), role: 'layer' as const }))];
  return {
    manifest: { digest: d(name), size: 100, references, lastAccess },
    blobs: [{ digest: d(`${name} config`), size: 10, lastAccess }],
  };
}

function roots(images: EvictionPlan['images']): Digest[] {
  return images.map((image) => image.root);
}

function layer(name: string, size: number, lastAccess = 0): PlannedBlob {
  return { digest: d(name), size, lastAccess };
}

type Bounds = Omit<EvictionInput, 'heldBytes'>;

const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0)) await cleanup();
});

/** Plans over a real SQLite store holding these manifests and blobs, recorded with their last reads. */
async function planOver(manifests: PlannedManifest[], blobs: PlannedBlob[], overrides: Partial<Bounds> = {}): Promise<EvictionPlan> {
  const directory = await mkdtemp(path.join(tmpdir(), 'regmirror-plan-'));
  const store = new SqliteMetadataStore(path.join(directory, 'metadata.sqlite'));
  cleanups.push(async () => {
    await store.close();
    await rm(directory, { recursive: true, force: true });
  });
  for (const manifest of manifests) await store.putManifest({ digest: manifest.digest, mediaType: OCI_MANIFEST, size: manifest.size }, manifest.lastAccess, { references: manifest.references });
  for (const blob of blobs) await store.putBlob(blob.digest, blob.size, blob.lastAccess);
  const totals = await store.totals();
  return planEviction(store, { pinned: new Set(), targetBytes: 0, inUseSince: NOW - MINUTE, ...overrides, heldBytes: totals.blobBytes + totals.manifestBytes });
}

/** Plans over images and loose layers. */
function planFor(parts: Array<{ manifest: PlannedManifest; blobs: PlannedBlob[] }>, layers: PlannedBlob[], overrides: Partial<Bounds> = {}): Promise<EvictionPlan> {
  return planOver(
    parts.map((part) => part.manifest),
    [...parts.flatMap((part) => part.blobs), ...layers],
    overrides,
  );
}

describe('planEviction', () => {
  const base = layer('base', 1000);
  const old = image('old', ['base', 'old app'], NOW - 60 * MINUTE);
  const recent = image('recent', ['base', 'recent app'], NOW - 30 * MINUTE);
  const layers = [base, layer('old app', 500), layer('recent app', 300)];

  it('evicts the least recently used image first, and keeps a layer a retained image shares', async () => {
    const held = 2 * 110 + 1000 + 500 + 300;
    const plan = await planFor([old, recent], layers, { targetBytes: held - 1 });
    assert.deepEqual(roots(plan.images), [d('old')]);
    assert.deepEqual(new Set(plan.manifests), new Set([d('old')]));
    assert.deepEqual(new Set(plan.blobs), new Set([d('old config'), d('old app')]), 'the base layer stays: recent uses it');
    assert.equal(plan.freedBytes, 100 + 10 + 500);
    assert.equal(plan.heldBytes, held);
    assert.equal(plan.reachesTarget, true);
  });

  it('stops as soon as the target is reached, and frees a shared layer with the last image that uses it', async () => {
    assert.deepEqual(roots((await planFor([old, recent], layers, { targetBytes: 10_000 })).images), [], 'already within the bound');
    const all = await planFor([old, recent], layers, { targetBytes: 0 });
    assert.deepEqual(roots(all.images), [d('old'), d('recent')]);
    assert.ok(all.blobs.includes(d('base')));
    assert.equal(all.freedBytes, all.heldBytes);
  });

  it('a blob read recently refreshes its image', async () => {
    const refreshed = [base, layer('old app', 500, NOW - 2 * MINUTE), layer('recent app', 300)];
    const held = 2 * 110 + 1000 + 500 + 300;
    assert.deepEqual(roots((await planFor([old, recent], refreshed, { targetBytes: held - 1 })).images), [d('recent')]);
  });

  it('a read of a layer other images share refreshes none of them: the least recently used image still goes first', async () => {
    // Every pull of `recent` just now read the shared base too; `old` was last read an hour ago.
    const baseJustRead = [layer('base', 1000, NOW - 1_000), layer('old app', 500), layer('recent app', 300)];
    const held = 2 * 110 + 1000 + 500 + 300;
    const plan = await planFor([recent, old], baseJustRead, { targetBytes: held - 1 });
    assert.deepEqual(roots(plan.images), [d('old')]);
    assert.equal(plan.inUseEvicted, 0, 'old is not in use for the base another pull read');
    const aged = await planFor([recent, old], baseJustRead, { targetBytes: held, expiredBefore: NOW - 45 * MINUTE });
    assert.deepEqual(roots(aged.images), [d('old')], 'nor kept from its maximum age');
  });

  it('evicts an index with its children, keeping a child another index lists', async () => {
    const amd64 = image('amd64', ['amd64 layer'], NOW - 90 * MINUTE);
    const arm64 = image('arm64', ['arm64 layer'], NOW - 90 * MINUTE);
    const index = (name: string, children: string[], lastAccess: number): { manifest: PlannedManifest; blobs: PlannedBlob[] } => ({
      manifest: { digest: d(name), size: 50, references: children.map((child) => ({ digest: d(child), role: 'manifest' as const })), lastAccess },
      blobs: [],
    });
    const first = index('index one', ['amd64', 'arm64'], NOW - 80 * MINUTE);
    const second = index('index two', ['arm64'], NOW - 10 * MINUTE);
    const plan = await planFor([amd64, arm64, first, second], [layer('amd64 layer', 700), layer('arm64 layer', 800)], { targetBytes: 1000 });
    assert.deepEqual(roots(plan.images), [d('index one')], 'children are not images of their own');
    assert.deepEqual(new Set(plan.manifests), new Set([d('index one'), d('amd64')]));
    assert.deepEqual(new Set(plan.blobs), new Set([d('amd64 config'), d('amd64 layer')]), 'arm64 stays with index two');
  });

  it('never evicts a pinned image, and says when the bound cannot be met', async () => {
    const plan = await planFor([old, recent], layers, { targetBytes: 0, pinned: new Set([d('old')]) });
    assert.deepEqual(roots(plan.images), [d('recent')]);
    assert.ok(!plan.blobs.includes(d('base')), 'the pinned image keeps the base layer');
    assert.equal(plan.reachesTarget, false);
  });

  it('evicts images in use only when nothing else is left, the least recent of them first', async () => {
    const busy = image('busy', ['busy layer'], NOW - 10_000);
    const busier = image('busier', ['busier layer'], NOW - 1_000);
    const idle = image('idle', ['idle layer'], NOW - 5 * MINUTE);
    const blobs = [layer('busy layer', 100), layer('busier layer', 100), layer('idle layer', 100)];
    const onlyIdle = await planFor([busier, busy, idle], blobs, { targetBytes: 2 * 210 });
    assert.deepEqual(roots(onlyIdle.images), [d('idle')]);
    assert.equal(onlyIdle.inUseEvicted, 0);
    const more = await planFor([busier, busy, idle], blobs, { targetBytes: 210 });
    assert.deepEqual(roots(more.images), [d('idle'), d('busy')]);
    assert.equal(more.inUseEvicted, 1);
  });

  it('treats a blob no manifest references as an image of its own, and a subject as not held by its referrer', async () => {
    const signed = image('signed', ['signed layer'], NOW - 10 * MINUTE);
    const signature: PlannedManifest = { digest: d('signature'), size: 40, references: [{ digest: d('signed'), role: 'subject' }], lastAccess: NOW - 5 * MINUTE };
    const stray = layer('stray', 2000, NOW - 120 * MINUTE);
    const plan = await planOver([signed.manifest, signature], [...signed.blobs, layer('signed layer', 100), stray], { targetBytes: 100 });
    assert.deepEqual(roots(plan.images), [d('stray'), d('signed')], 'the stray blob first (oldest), then the signed image though its signature stays');
    assert.ok(!plan.manifests.includes(d('signature')));
  });

  it('ignores references to content it does not hold', async () => {
    const partial = image('partial', ['pulled', 'never pulled'], NOW - 60 * MINUTE);
    const plan = await planFor([partial], [layer('pulled', 100)], { targetBytes: 0 });
    assert.deepEqual(new Set(plan.blobs), new Set([d('partial config'), d('pulled')]));
    assert.equal(plan.freedBytes, 210);
  });

  it('evicts every image unread for longer than the maximum age, whatever the size, then to the target', async () => {
    const stale = image('stale', ['stale app'], NOW - 10 * 24 * 60 * MINUTE);
    const parts = [stale, old, recent];
    const allLayers = [...layers, layer('stale app', 50)];
    const plan = await planFor(parts, allLayers, { targetBytes: 100_000, expiredBefore: NOW - 7 * 24 * 60 * MINUTE });
    assert.deepEqual(
      plan.images.map((planned) => [planned.root, planned.expired]),
      [[d('stale'), true]],
      'only the expired image: the rest fits',
    );
    assert.deepEqual(new Set(plan.images[0]?.removes), new Set([d('stale'), d('stale config'), d('stale app')]));
    const tight = await planFor(parts, allLayers, { targetBytes: 1800, expiredBefore: NOW - 7 * 24 * 60 * MINUTE });
    assert.deepEqual(
      tight.images.map((planned) => [planned.root, planned.expired]),
      [
        [d('stale'), true],
        [d('old'), false],
      ],
    );
  });

  it('reads the roots it evicts, not every root: the least recent first, from an index', async () => {
    const images = Array.from({ length: 600 }, (_unused, index) => image(`image ${index}`, [`layer ${index}`], NOW - (index + 10) * MINUTE));
    const layers = images.map((_part, index) => layer(`layer ${index}`, 1000));
    const held = 600 * (110 + 1000);
    const result = await planFor(images, layers, { targetBytes: held - 2 * 1110 });
    assert.deepEqual(roots(result.images), [d('image 599'), d('image 598')]);
    assert.equal(result.rootsRead, 2, 'the two evicted: the next root is only looked at');
  });
});
