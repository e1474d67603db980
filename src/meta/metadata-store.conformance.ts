// The conformance suite every MetadataStore driver runs: blobs and their access times, manifests,
// tags with pagination, repositories kept apart per registry, documents, and the content graph. A driver's
// test file calls metadataStoreConformance.

import assert from 'node:assert/strict';
import { afterEach, beforeEach, describe, it } from 'node:test';
import { digestOf, type Digest } from '../oci/digest.js';
import type { ContentEntry, MetadataStore, RepositoryRef } from './metadata-store.js';

export interface MetadataStoreFixture {
  store: MetadataStore;
  cleanup(): Promise<void>;
}

const T0 = 1_700_000_000_000;
const SECOND = 1_000;
const HOUR = 3_600_000;

const digest = (label: string): Digest => digestOf(Buffer.from(label));

const ALPINE_HUB: RepositoryRef = { registry: 'docker.io', name: 'library/alpine' };
const ALPINE_GHCR: RepositoryRef = { registry: 'ghcr.io', name: 'library/alpine' };
const LOCAL_APP: RepositoryRef = { registry: '', name: 'team/app' };

export function metadataStoreConformance(name: string, makeStore: () => Promise<MetadataStoreFixture>): void {
  describe(`MetadataStore conformance: ${name}`, () => {
    let fixture: MetadataStoreFixture;
    let store: MetadataStore;

    beforeEach(async () => {
      fixture = await makeStore();
      store = fixture.store;
    });

    afterEach(async () => {
      await fixture.cleanup();
    });

    describe('blobs', () => {
      it('are unknown until put', async () => {
        assert.equal(await store.getBlob(digest('missing')), undefined);
      });

      it('keep their size and last access', async () => {
        const blob = digest('blob');
        await store.putBlob(blob, 1234, T0);
        assert.deepEqual(await store.getBlob(blob), { digest: blob, size: 1234, lastAccess: T0 });
      });

      it('are updated by a second put', async () => {
        const blob = digest('blob');
        await store.putBlob(blob, 1, T0);
        await store.putBlob(blob, 2, T0 + HOUR);
        assert.deepEqual(await store.getBlob(blob), { digest: blob, size: 2, lastAccess: T0 + HOUR });
      });

      it('are kept apart', async () => {
        await store.putBlob(digest('one'), 1, T0);
        await store.putBlob(digest('two'), 2, T0 + SECOND);
        assert.deepEqual(await store.getBlob(digest('one')), { digest: digest('one'), size: 1, lastAccess: T0 });
        assert.deepEqual(await store.getBlob(digest('two')), { digest: digest('two'), size: 2, lastAccess: T0 + SECOND });
      });

      it('are deleted', async () => {
        const blob = digest('blob');
        await store.putBlob(blob, 1, T0);
        await store.putBlob(digest('other'), 1, T0);
        await store.deleteBlob(blob);
        assert.equal(await store.getBlob(blob), undefined);
        assert.notEqual(await store.getBlob(digest('other')), undefined);
        await store.deleteBlob(blob);
      });

      it('move their last access forward on touch once the reads are flushed, never back', async () => {
        const blob = digest('blob');
        await store.putBlob(blob, 10, T0);
        await store.touchBlob(blob, T0 + HOUR);
        await store.touchBlob(blob, T0 + SECOND);
        await store.flushAccess();
        assert.equal((await store.getBlob(blob))?.lastAccess, T0 + HOUR, 'the latest read of the batch');
        await store.touchBlob(blob, T0);
        await store.flushAccess();
        assert.equal((await store.getBlob(blob))?.lastAccess, T0 + HOUR, 'a touch never moves last access back');
        await store.touchBlob(blob, T0 + 3 * HOUR);
        await store.flushAccess();
        await store.flushAccess();
        assert.deepEqual(await store.getBlob(blob), { digest: blob, size: 10, lastAccess: T0 + 3 * HOUR });
      });

      it('touch only the blob named, and not a missing one', async () => {
        await store.putBlob(digest('a'), 1, T0);
        await store.putBlob(digest('b'), 1, T0);
        await store.touchBlob(digest('a'), T0 + HOUR);
        await store.touchBlob(digest('missing'), T0 + HOUR);
        await store.flushAccess();
        assert.equal((await store.getBlob(digest('a')))?.lastAccess, T0 + HOUR);
        assert.equal((await store.getBlob(digest('b')))?.lastAccess, T0);
        assert.equal(await store.getBlob(digest('missing')), undefined);
      });
    });

    describe('listing blob and manifest records', () => {
      it('pages through every record in digest order, and nothing once past the last', async () => {
        const blobs = Array.from({ length: 7 }, (_, index) => digest(`listed blob ${index}`));
        for (const [index, blob] of blobs.entries()) await store.putBlob(blob, 100 + index, T0 + index);
        const manifests = [digest('listed manifest 1'), digest('listed manifest 2')];
        for (const manifest of manifests) await store.putManifest({ digest: manifest, mediaType: 'application/vnd.oci.image.manifest.v1+json', size: 42 }, T0);

        const paged: string[] = [];
        for (let last = ''; ; ) {
          const page = await store.listBlobs({ last, limit: 3 });
          assert.ok(page.length <= 3);
          paged.push(...page.map((record) => record.digest));
          const final = page.at(-1);
          if (final === undefined) break;
          last = final.digest;
        }
        assert.deepEqual(paged, [...blobs].sort());
        const first = (await store.listBlobs({ limit: 1 }))[0];
        const expected = [...blobs].sort()[0];
        assert.ok(first !== undefined && expected !== undefined);
        assert.deepEqual(first, { digest: expected, size: 100 + blobs.indexOf(expected), lastAccess: T0 + blobs.indexOf(expected) });

        const listed = await store.listManifests({ limit: 10 });
        assert.deepEqual(
          listed.map((record) => record.digest),
          [...manifests].sort(),
        );
        assert.deepEqual(listed[0], { digest: listed[0]?.digest, mediaType: 'application/vnd.oci.image.manifest.v1+json', size: 42 });
        assert.deepEqual(await store.listManifests({ last: [...manifests].sort()[1], limit: 10 }), []);
      });
    });

    describe('manifests', () => {
      const record = { digest: digest('manifest'), mediaType: 'application/vnd.oci.image.manifest.v1+json', size: 512 };

      it('are unknown until put', async () => {
        assert.equal(await store.getManifest(record.digest), undefined);
      });

      it('keep their media type and size', async () => {
        await store.putManifest(record, T0);
        assert.deepEqual(await store.getManifest(record.digest), record);
      });

      it('can be put twice', async () => {
        await store.putManifest(record, T0);
        await store.putManifest(record, T0 + HOUR);
        assert.deepEqual(await store.getManifest(record.digest), record);
      });

      it('are kept apart from blobs of the same digest', async () => {
        await store.putManifest(record, T0);
        assert.equal(await store.getBlob(record.digest), undefined);
        await store.putBlob(record.digest, 512, T0);
        await store.deleteBlob(record.digest);
        assert.deepEqual(await store.getManifest(record.digest), record);
      });

      it('are deleted', async () => {
        const other = { ...record, digest: digest('other manifest') };
        await store.putManifest(record, T0);
        await store.putManifest(other, T0);
        await store.deleteManifest(record.digest);
        assert.equal(await store.getManifest(record.digest), undefined);
        assert.deepEqual(await store.getManifest(other.digest), other);
        await store.deleteManifest(record.digest);
      });
    });

    describe('tags', () => {
      it('are unknown until put', async () => {
        assert.equal(await store.getTag(ALPINE_HUB, 'latest'), undefined);
      });

      it('keep their digest and fetch time', async () => {
        await store.putTag(ALPINE_HUB, 'latest', { digest: digest('v1'), fetchedAt: T0 });
        assert.deepEqual(await store.getTag(ALPINE_HUB, 'latest'), { digest: digest('v1'), fetchedAt: T0 });
      });

      it('are updated in place', async () => {
        await store.putTag(ALPINE_HUB, 'latest', { digest: digest('v1'), fetchedAt: T0 });
        await store.putTag(ALPINE_HUB, 'latest', { digest: digest('v2'), fetchedAt: T0 + HOUR });
        assert.deepEqual(await store.getTag(ALPINE_HUB, 'latest'), { digest: digest('v2'), fetchedAt: T0 + HOUR });
        assert.deepEqual(await store.listTags(ALPINE_HUB, { limit: 10 }), ['latest']);
      });

      it('record a revalidation that changed only the fetch time', async () => {
        await store.putTag(ALPINE_HUB, 'latest', { digest: digest('v1'), fetchedAt: T0 });
        await store.putTag(ALPINE_HUB, 'latest', { digest: digest('v1'), fetchedAt: T0 + SECOND });
        assert.deepEqual(await store.getTag(ALPINE_HUB, 'latest'), { digest: digest('v1'), fetchedAt: T0 + SECOND });
      });

      it('are deleted', async () => {
        await store.putTag(ALPINE_HUB, 'latest', { digest: digest('v1'), fetchedAt: T0 });
        await store.putTag(ALPINE_HUB, 'edge', { digest: digest('v2'), fetchedAt: T0 });
        await store.deleteTag(ALPINE_HUB, 'latest');
        assert.equal(await store.getTag(ALPINE_HUB, 'latest'), undefined);
        assert.deepEqual(await store.listTags(ALPINE_HUB, { limit: 10 }), ['edge']);
        await store.deleteTag(ALPINE_HUB, 'latest');
      });

      it('are kept apart per repository and per registry', async () => {
        const other: RepositoryRef = { registry: 'docker.io', name: 'library/busybox' };
        await store.putTag(ALPINE_HUB, 'latest', { digest: digest('hub'), fetchedAt: T0 });
        await store.putTag(ALPINE_GHCR, 'latest', { digest: digest('ghcr'), fetchedAt: T0 + 1 });
        await store.putTag(other, 'latest', { digest: digest('busybox'), fetchedAt: T0 + 2 });
        await store.putTag({ registry: '', name: 'library/alpine' }, 'local', { digest: digest('local'), fetchedAt: T0 + 3 });
        assert.deepEqual(await store.getTag(ALPINE_HUB, 'latest'), { digest: digest('hub'), fetchedAt: T0 });
        assert.deepEqual(await store.getTag(ALPINE_GHCR, 'latest'), { digest: digest('ghcr'), fetchedAt: T0 + 1 });
        assert.deepEqual(await store.getTag(other, 'latest'), { digest: digest('busybox'), fetchedAt: T0 + 2 });
        assert.equal(await store.getTag(ALPINE_HUB, 'local'), undefined);
        assert.deepEqual(await store.listTags(ALPINE_HUB, { limit: 10 }), ['latest']);
        assert.deepEqual(await store.listTags({ registry: '', name: 'library/alpine' }, { limit: 10 }), ['local']);
        await store.deleteTag(ALPINE_GHCR, 'latest');
        assert.deepEqual(await store.getTag(ALPINE_HUB, 'latest'), { digest: digest('hub'), fetchedAt: T0 });
      });

      it('are case-sensitive', async () => {
        await store.putTag(ALPINE_HUB, 'Latest', { digest: digest('upper'), fetchedAt: T0 });
        await store.putTag(ALPINE_HUB, 'latest', { digest: digest('lower'), fetchedAt: T0 });
        assert.equal((await store.getTag(ALPINE_HUB, 'Latest'))?.digest, digest('upper'));
        assert.equal((await store.getTag(ALPINE_HUB, 'latest'))?.digest, digest('lower'));
      });
    });

    describe('listTags', () => {
      // Lexical (code point) order: digits, then capitals, then lower case.
      const sorted = ['1.0', '3.19', 'V2', 'edge', 'latest', 'v1', 'v1.1'];

      beforeEach(async () => {
        for (const [index, tag] of [...sorted].reverse().entries()) {
          await store.putTag(ALPINE_HUB, tag, { digest: digest(tag), fetchedAt: T0 + index });
        }
        await store.putTag(ALPINE_GHCR, 'zzz-other-registry', { digest: digest('zzz'), fetchedAt: T0 });
        await store.putTag({ registry: 'docker.io', name: 'library/alpine-other' }, 'aaa-other-repo', { digest: digest('aaa'), fetchedAt: T0 });
      });

      it('lists a repository’s tags in lexical order', async () => {
        assert.deepEqual(await store.listTags(ALPINE_HUB, { limit: 100 }), sorted);
      });

      it('lists nothing for an unknown repository', async () => {
        assert.deepEqual(await store.listTags({ registry: 'docker.io', name: 'library/none' }, { limit: 100 }), []);
      });

      it('pages with limit and last', async () => {
        assert.deepEqual(await store.listTags(ALPINE_HUB, { limit: 3 }), sorted.slice(0, 3));
        assert.deepEqual(await store.listTags(ALPINE_HUB, { limit: 3, last: '3.19' }), sorted.slice(2, 5));
        assert.deepEqual(await store.listTags(ALPINE_HUB, { limit: 3, last: 'latest' }), sorted.slice(5));
        assert.deepEqual(await store.listTags(ALPINE_HUB, { limit: 3, last: 'v1.1' }), []);
      });

      it('pages through everything exactly once', async () => {
        const seen: string[] = [];
        let last: string | undefined;
        for (;;) {
          const page = await store.listTags(ALPINE_HUB, last === undefined ? { limit: 2 } : { limit: 2, last });
          assert.ok(page.length <= 2);
          if (page.length === 0) break;
          seen.push(...page);
          last = page[page.length - 1];
        }
        assert.deepEqual(seen, sorted);
      });

      it('takes a last that is not itself a tag', async () => {
        assert.deepEqual(await store.listTags(ALPINE_HUB, { limit: 100, last: 'f' }), ['latest', 'v1', 'v1.1']);
        assert.deepEqual(await store.listTags(ALPINE_HUB, { limit: 100, last: '' }), sorted);
      });
    });

    describe('repositories', () => {
      it('are unknown until added', async () => {
        assert.equal(await store.hasRepository(ALPINE_HUB), false);
        assert.deepEqual(await store.listRepositories({ limit: 100 }, 'docker.io'), []);
      });

      it('are added idempotently', async () => {
        await store.addRepository(ALPINE_HUB, T0);
        await store.addRepository(ALPINE_HUB, T0 + HOUR);
        assert.equal(await store.hasRepository(ALPINE_HUB), true);
        assert.deepEqual(await store.listRepositories({ limit: 100 }, 'docker.io'), ['library/alpine']);
      });

      it('are kept apart per registry', async () => {
        await store.addRepository(ALPINE_HUB, T0);
        assert.equal(await store.hasRepository(ALPINE_HUB), true);
        assert.equal(await store.hasRepository(ALPINE_GHCR), false);
        assert.equal(await store.hasRepository({ registry: '', name: 'library/alpine' }), false);
        await store.addRepository(ALPINE_GHCR, T0);
        assert.equal(await store.hasRepository(ALPINE_GHCR), true);
        assert.equal(await store.hasRepository({ registry: 'docker.io', name: 'library' }), false);
        assert.equal(await store.hasRepository({ registry: 'docker.io', name: 'library/alpine/x' }), false);
      });

      // The catalog names a default-registry repository bare and any other by its registry prefix.
      it('are listed in lexical order, prefixed unless of the default registry', async () => {
        await store.addRepository(ALPINE_GHCR, T0);
        await store.addRepository(LOCAL_APP, T0);
        await store.addRepository(ALPINE_HUB, T0);
        await store.addRepository({ registry: 'quay.io', name: 'coreos/etcd' }, T0);
        assert.deepEqual(await store.listRepositories({ limit: 100 }, 'docker.io'), [
          'ghcr.io/library/alpine',
          'library/alpine',
          'quay.io/coreos/etcd',
          'team/app',
        ]);
        assert.deepEqual(await store.listRepositories({ limit: 100 }, 'ghcr.io'), [
          'docker.io/library/alpine',
          'library/alpine',
          'quay.io/coreos/etcd',
          'team/app',
        ]);
      });

      it('page with limit and last', async () => {
        const names = ['a/one', 'a/two', 'b', 'c/d/e', 'library/alpine', 'library/busybox', 'z'];
        for (const [index, repository] of [...names].reverse().entries()) {
          await store.addRepository({ registry: index % 2 === 0 ? 'docker.io' : '', name: repository }, T0);
        }
        assert.deepEqual(await store.listRepositories({ limit: 3 }, 'docker.io'), names.slice(0, 3));
        assert.deepEqual(await store.listRepositories({ limit: 3, last: 'b' }, 'docker.io'), names.slice(3, 6));
        assert.deepEqual(await store.listRepositories({ limit: 3, last: 'library/busybox' }, 'docker.io'), ['z']);
        assert.deepEqual(await store.listRepositories({ limit: 3, last: 'z' }, 'docker.io'), []);
        assert.deepEqual(await store.listRepositories({ limit: 100, last: 'a/p' }, 'docker.io'), names.slice(1));
        const seen: string[] = [];
        let last: string | undefined;
        for (;;) {
          const page = await store.listRepositories(last === undefined ? { limit: 2 } : { limit: 2, last }, 'docker.io');
          if (page.length === 0) break;
          seen.push(...page);
          last = page[page.length - 1];
        }
        assert.deepEqual(seen, names);
      });
    });

    describe('documents', () => {
      it('are unknown until put', async () => {
        assert.equal(await store.getDocument('v1/tags/library/busybox'), undefined);
      });

      it('keep their exact bytes and fetch time', async () => {
        const body = Buffer.from([0x7b, 0x7d, 0x00, 0xff, 0x0a]);
        await store.putDocument('v1/tags/library/busybox', body, T0);
        const found = await store.getDocument('v1/tags/library/busybox');
        assert.ok(found !== undefined && Buffer.from(found.body).equals(body));
        assert.equal(found.fetchedAt, T0);
      });

      it('are replaced by a second put, kept apart by key, and deleted', async () => {
        await store.putDocument('a', Buffer.from('first'), T0);
        await store.putDocument('b', Buffer.from('other'), T0);
        await store.putDocument('a', Buffer.from('second'), T0 + HOUR);
        assert.deepEqual(await store.getDocument('a'), { body: Buffer.from('second'), fetchedAt: T0 + HOUR });
        await store.deleteDocument('a');
        await store.deleteDocument('a');
        assert.equal(await store.getDocument('a'), undefined);
        assert.deepEqual(await store.getDocument('b'), { body: Buffer.from('other'), fetchedAt: T0 });
      });

      it('hold an empty body', async () => {
        await store.putDocument('empty', Buffer.alloc(0), T0);
        assert.equal((await store.getDocument('empty'))?.body.length, 0);
      });
    });

    describe('totals', () => {
      it('count blobs and manifests and their bytes, each once', async () => {
        assert.deepEqual(await store.totals(), { blobs: 0, blobBytes: 0, manifests: 0, manifestBytes: 0 });
        await store.putBlob(digest('one'), 100, T0);
        await store.putBlob(digest('two'), 250, T0);
        await store.putBlob(digest('two'), 250, T0 + HOUR);
        await store.putManifest({ digest: digest('m'), mediaType: 'application/vnd.oci.image.manifest.v1+json', size: 42 }, T0);
        assert.deepEqual(await store.totals(), { blobs: 2, blobBytes: 350, manifests: 1, manifestBytes: 42 });
        await store.deleteBlob(digest('one'));
        assert.deepEqual(await store.totals(), { blobs: 1, blobBytes: 250, manifests: 1, manifestBytes: 42 });
        await store.putBlob(digest('two'), 300, T0 + 2 * HOUR);
        await store.putManifest({ digest: digest('m'), mediaType: 'application/vnd.oci.image.manifest.v1+json', size: 42 }, T0);
        assert.deepEqual(await store.totals(), { blobs: 1, blobBytes: 300, manifests: 1, manifestBytes: 42 }, 'a blob recorded again with another size');
        await store.removeContent({ manifests: [digest('m')], blobs: [digest('two')], readBefore: T0 + 3 * HOUR });
        await store.deleteManifest(digest('unknown'));
        assert.deepEqual(await store.totals(), { blobs: 0, blobBytes: 0, manifests: 0, manifestBytes: 0 });
      });
    });

    describe('the content graph', () => {
      const OCI = 'application/vnd.oci.image.manifest.v1+json';
      const image = { digest: digest('image'), mediaType: OCI, size: 400 };

      it('keeps what a manifest references, in order, and which repository holds it', async () => {
        const references = [
          { digest: digest('config'), role: 'config' as const },
          { digest: digest('base layer'), role: 'layer' as const },
          { digest: digest('app layer'), role: 'layer' as const },
          { digest: digest('signed'), role: 'subject' as const },
        ];
        await store.putManifest(image, T0, { references, holder: ALPINE_HUB });
        assert.deepEqual(await store.referencesOf(image.digest), references);
        assert.deepEqual(await store.getManifest(image.digest), image);
        assert.equal(await store.holdsContent(ALPINE_HUB, image.digest), true);
        assert.equal(await store.holdsContent(ALPINE_GHCR, image.digest), false, 'same name, another registry');
        assert.equal(await store.holdsContent(LOCAL_APP, image.digest), false);
        assert.deepEqual(await store.listRepositories({ limit: 10 }, 'docker.io'), ['library/alpine'], 'the holder is a repository of the catalog');
      });

      it('replaces the references of a manifest recorded again, and links each holder', async () => {
        await store.putManifest(image, T0, { references: [{ digest: digest('old'), role: 'layer' }], holder: ALPINE_HUB });
        await store.putManifest(image, T0 + HOUR, { references: [{ digest: digest('new'), role: 'layer' }], holder: LOCAL_APP });
        assert.deepEqual(await store.referencesOf(image.digest), [{ digest: digest('new'), role: 'layer' }]);
        assert.equal(await store.holdsContent(ALPINE_HUB, image.digest), true);
        assert.equal(await store.holdsContent(LOCAL_APP, image.digest), true);
      });

      it('knows no references of a manifest recorded without its graph, nor of an unknown one', async () => {
        await store.putManifest(image, T0);
        assert.deepEqual(await store.referencesOf(image.digest), []);
        assert.deepEqual(await store.referencesOf(digest('unknown')), []);
        assert.equal(await store.holdsContent(ALPINE_HUB, image.digest), false);
      });

      it('is read whole, past the pages it is read in', async () => {
        const OCI_TYPE = 'application/vnd.oci.image.manifest.v1+json';
        const layers = Array.from({ length: 2_100 }, (_unused, index) => digest(`many ${index}`));
        for (const layer of layers) await store.putBlob(layer, 1, T0);
        await store.putManifest({ digest: digest('wide'), mediaType: OCI_TYPE, size: 9 }, T0, { references: layers.map((layer) => ({ digest: layer, role: 'layer' as const })) });
        for (let index = 0; index < 2_100; index++) await store.putManifest({ digest: digest(`narrow ${index}`), mediaType: OCI_TYPE, size: 1 }, T0);
        const graph = await store.graph();
        assert.equal(graph.blobs.length, 2_100);
        assert.equal(graph.manifests.length, 2_101);
        assert.deepEqual(
          graph.manifests.find((manifest) => manifest.digest === digest('wide'))?.references.map((reference) => reference.digest),
          layers,
          'every reference, in order',
        );
        const removed = await store.removeContent({ manifests: [digest('wide')], blobs: layers, readBefore: T0 + SECOND });
        assert.equal(removed.blobs.length, 2_100, 'a removal of many, past the transactions it is cut into');
      });

      it('is read whole: manifests with references and last reads, blobs', async () => {
        const references = [
          { digest: digest('config'), role: 'config' as const },
          { digest: digest('layer'), role: 'layer' as const },
        ];
        await store.putManifest(image, T0, { references, holder: ALPINE_HUB });
        await store.putManifest({ digest: digest('bare'), mediaType: OCI, size: 7 }, T0 + SECOND);
        await store.putBlob(digest('layer'), 300, T0);
        await store.touchManifest(image.digest, T0 + HOUR);
        await store.touchManifest(digest('bare'), T0);
        await store.touchBlob(digest('layer'), T0 + 2 * HOUR);
        await store.flushAccess();
        const graph = await store.graph();
        const byDigest = new Map(graph.manifests.map((manifest) => [manifest.digest, manifest]));
        assert.deepEqual(byDigest.get(image.digest), { digest: image.digest, size: 400, lastAccess: T0 + HOUR, references });
        assert.deepEqual(byDigest.get(digest('bare')), { digest: digest('bare'), size: 7, lastAccess: T0 + SECOND, references: [] }, 'a read never moves last access back');
        assert.deepEqual(graph.blobs, [{ digest: digest('layer'), size: 300, lastAccess: T0 + 2 * HOUR }]);
      });

      it('links a blob to the repository it was fetched for', async () => {
        const layer = digest('layer');
        await store.putBlob(layer, 10, T0, ALPINE_GHCR);
        await store.putBlob(layer, 10, T0 + SECOND);
        assert.deepEqual(await store.getBlob(layer), { digest: layer, size: 10, lastAccess: T0 + SECOND });
        assert.equal(await store.holdsContent(ALPINE_GHCR, layer), true);
        assert.equal(await store.holdsContent(ALPINE_HUB, layer), false);
        assert.equal(await store.hasRepository(ALPINE_GHCR), true);
      });

      it('links content already stored to another repository, idempotently', async () => {
        await store.putBlob(digest('layer'), 10, T0, ALPINE_HUB);
        await store.linkContent(ALPINE_GHCR, digest('layer'), T0 + SECOND);
        await store.linkContent(ALPINE_GHCR, digest('layer'), T0 + 2 * SECOND);
        assert.equal(await store.holdsContent(ALPINE_GHCR, digest('layer')), true);
        assert.equal(await store.hasRepository(ALPINE_GHCR), true);
        assert.equal(await store.holdsContent(LOCAL_APP, digest('layer')), false);
      });

      it('forgets a deleted manifest’s references and links, and a deleted blob’s links', async () => {
        await store.putManifest(image, T0, { references: [{ digest: digest('layer'), role: 'layer' }], holder: ALPINE_HUB });
        await store.putBlob(digest('layer'), 10, T0, ALPINE_HUB);
        await store.deleteManifest(image.digest);
        await store.deleteBlob(digest('layer'));
        assert.deepEqual(await store.referencesOf(image.digest), []);
        assert.equal(await store.holdsContent(ALPINE_HUB, image.digest), false);
        assert.equal(await store.holdsContent(ALPINE_HUB, digest('layer')), false);
      });

      it('unlinks content from one repository with that repository’s tags pointing at it, and keeps the rest', async () => {
        await store.putManifest(image, T0, { references: [{ digest: digest('layer'), role: 'layer' }], holder: LOCAL_APP });
        await store.linkContent(ALPINE_HUB, image.digest, T0);
        await store.putTag(LOCAL_APP, 'v1', { digest: image.digest, fetchedAt: T0 });
        await store.putTag(LOCAL_APP, 'v2', { digest: image.digest, fetchedAt: T0 });
        await store.putTag(LOCAL_APP, 'other', { digest: digest('other'), fetchedAt: T0 });
        await store.putTag(ALPINE_HUB, 'v1', { digest: image.digest, fetchedAt: T0 });
        assert.equal(await store.unlinkContent(LOCAL_APP, image.digest), true);
        assert.equal(await store.unlinkContent(LOCAL_APP, image.digest), false, 'no longer held');
        assert.equal(await store.holdsContent(LOCAL_APP, image.digest), false);
        assert.equal(await store.holdsContent(ALPINE_HUB, image.digest), true, 'another repository still holds it');
        assert.deepEqual(await store.listTags(LOCAL_APP, { limit: 10 }), ['other']);
        assert.deepEqual(await store.listTags(ALPINE_HUB, { limit: 10 }), ['v1']);
        assert.deepEqual(await store.getManifest(image.digest), image, 'the content stays, for GC');
        assert.deepEqual(await store.referencesOf(image.digest), [{ digest: digest('layer'), role: 'layer' }]);
      });

      it('lists what the repositories of one registry hold, each digest once', async () => {
        await store.putBlob(digest('hosted layer'), 10, T0, LOCAL_APP);
        await store.linkContent({ registry: '', name: 'team/other' }, digest('hosted layer'), T0);
        await store.putManifest(image, T0, { references: [], holder: LOCAL_APP });
        await store.putBlob(digest('mirrored layer'), 10, T0, ALPINE_HUB);
        assert.deepEqual((await store.contentHeldByRegistry('')).sort(), [digest('hosted layer'), image.digest].sort());
        assert.deepEqual(await store.contentHeldByRegistry('docker.io'), [digest('mirrored layer')]);
        assert.deepEqual(await store.contentHeldByRegistry('quay.io'), []);
      });

      it('finds the referrers of a subject, recorded or not, and not what merely references it', async () => {
        const OCI_TYPE = 'application/vnd.oci.image.manifest.v1+json';
        const subject = digest('subject');
        await store.putManifest({ digest: digest('signature b'), mediaType: OCI_TYPE, size: 5 }, T0, { references: [{ digest: subject, role: 'subject' }] });
        await store.putManifest({ digest: digest('signature a'), mediaType: OCI_TYPE, size: 5 }, T0, {
          references: [
            { digest: digest('config'), role: 'config' },
            { digest: subject, role: 'subject' },
          ],
        });
        await store.putManifest({ digest: digest('index'), mediaType: OCI_TYPE, size: 5 }, T0, { references: [{ digest: subject, role: 'manifest' }] });
        assert.deepEqual(await store.referrersOf(subject), [digest('signature a'), digest('signature b')].sort());
        assert.deepEqual(await store.referrersOf(digest('config')), []);
        await store.deleteManifest(digest('signature b'));
        assert.deepEqual(await store.referrersOf(subject), [digest('signature a')]);
      });
    });

    describe('the graph in last-read order (eviction)', () => {
      const OCI = 'application/vnd.oci.image.manifest.v1+json';
      const INDEX = 'application/vnd.oci.image.index.v1+json';
      const entry = (label: string, kind: 'manifest' | 'blob', size: number, lastAccess: number, holders: number): ContentEntry => ({ digest: digest(label), kind, size, lastAccess, holders });

      beforeEach(async () => {
        // An index over two platform manifests sharing a base layer; a blob no manifest references; a signature.
        await store.putManifest({ digest: digest('index'), mediaType: INDEX, size: 30 }, T0 + 3 * SECOND, {
          references: [
            { digest: digest('amd64'), role: 'manifest' },
            { digest: digest('arm64'), role: 'manifest' },
            { digest: digest('never pulled'), role: 'manifest' },
          ],
        });
        for (const platform of ['amd64', 'arm64']) {
          await store.putManifest({ digest: digest(platform), mediaType: OCI, size: 20 }, T0, {
            references: [
              { digest: digest(`${platform} config`), role: 'config' },
              { digest: digest('base'), role: 'layer' },
              { digest: digest(`${platform} app`), role: 'layer' },
            ],
          });
          await store.putBlob(digest(`${platform} config`), 2, T0);
          await store.putBlob(digest(`${platform} app`), 200, T0);
        }
        // Recorded after the manifests that reference it, as a fill stores a layer after its manifest.
        await store.putBlob(digest('base'), 1000, T0 + SECOND);
        await store.putBlob(digest('stray'), 5, T0 + 2 * SECOND);
        await store.putManifest({ digest: digest('signature'), mediaType: OCI, size: 9 }, T0 + 4 * SECOND, { references: [{ digest: digest('amd64'), role: 'subject' }] });
      });

      it('pages the roots, least recently read first, from any place in that order', async () => {
        const roots = [entry('stray', 'blob', 5, T0 + 2 * SECOND, 0), entry('index', 'manifest', 30, T0 + 3 * SECOND, 0), entry('signature', 'manifest', 9, T0 + 4 * SECOND, 0)];
        assert.deepEqual(await store.rootsByLastRead(undefined, 10), roots, 'a subject does not hold its target; children are not roots');
        assert.deepEqual(await store.rootsByLastRead(undefined, 2), roots.slice(0, 2));
        assert.deepEqual(await store.rootsByLastRead(roots[1], 2), roots.slice(2));
        assert.deepEqual(await store.rootsByLastRead({ lastAccess: T0 + 2 * SECOND, digest: digest('stray') }, 1), roots.slice(1, 2), 'after a place, never at it');
        await store.touchBlob(digest('stray'), T0 + 5 * SECOND);
        await store.flushAccess();
        assert.deepEqual((await store.rootsByLastRead(undefined, 10)).map((root) => root.digest), [digest('index'), digest('signature'), digest('stray')], 'a read moves a root to the end');
      });

      it('orders equal reads by digest, across manifests and blobs', async () => {
        await store.putBlob(digest('tie blob'), 1, T0 + 9 * SECOND);
        await store.putManifest({ digest: digest('tie manifest'), mediaType: OCI, size: 1 }, T0 + 9 * SECOND, { references: [] });
        const ties = [digest('tie blob'), digest('tie manifest')].sort();
        const tail = await store.rootsByLastRead({ lastAccess: T0 + 4 * SECOND, digest: digest('signature') }, 10);
        assert.deepEqual(tail.map((root) => root.digest), ties);
        assert.deepEqual((await store.rootsByLastRead({ lastAccess: T0 + 9 * SECOND, digest: ties[0] ?? digest('') }, 10)).map((root) => root.digest), ties.slice(1));
      });

      it('gives what a manifest holds that is recorded, and what holds a digest', async () => {
        assert.deepEqual(await store.heldBy(digest('index')), [entry('amd64', 'manifest', 20, T0, 1), entry('arm64', 'manifest', 20, T0, 1)], 'not the platform never pulled');
        assert.deepEqual(await store.heldBy(digest('amd64')), [entry('amd64 config', 'blob', 2, T0, 1), entry('base', 'blob', 1000, T0 + SECOND, 2), entry('amd64 app', 'blob', 200, T0, 1)]);
        assert.deepEqual(await store.heldBy(digest('signature')), [], 'its subject is not held');
        assert.deepEqual((await store.holdersOf(digest('base'))).sort((a, b) => (a.digest < b.digest ? -1 : 1)), [
          { digest: digest('amd64'), holders: 1 },
          { digest: digest('arm64'), holders: 1 },
        ].sort((a, b) => (a.digest < b.digest ? -1 : 1)));
        assert.deepEqual(await store.holdersOf(digest('amd64')), [{ digest: digest('index'), holders: 0 }], 'not the signature');
        assert.deepEqual(await store.holdersOf(digest('stray')), []);
      });

      it('keeps the holders counts as references and records come and go', async () => {
        const holdersOfBase = async (): Promise<number | undefined> => (await store.heldBy(digest('arm64'))).find((held) => held.digest === digest('base'))?.holders;
        await store.putManifest({ digest: digest('amd64'), mediaType: OCI, size: 20 }, T0, { references: [{ digest: digest('amd64 config'), role: 'config' }] });
        assert.equal(await holdersOfBase(), 1, 'amd64 recorded again without the base');
        await store.deleteManifest(digest('index'));
        assert.deepEqual((await store.rootsByLastRead(undefined, 10)).map((root) => root.digest).sort(), [digest('amd64'), digest('amd64 app'), digest('arm64'), digest('stray'), digest('signature')].sort(), 'the index gone, its children are roots (and the layer amd64 no longer lists)');
        await store.removeContent({ manifests: [digest('arm64')], blobs: [digest('base'), digest('arm64 app'), digest('arm64 config')], readBefore: T0 + 10 * SECOND });
        await store.putBlob(digest('base'), 1000, T0 + 20 * SECOND);
        const roots = await store.rootsByLastRead(undefined, 10);
        assert.deepEqual(roots.find((root) => root.digest === digest('base')), entry('base', 'blob', 1000, T0 + 20 * SECOND, 0), 'recorded again with nothing referencing it');
        await store.putManifest({ digest: digest('again'), mediaType: OCI, size: 3 }, T0, { references: [{ digest: digest('base'), role: 'layer' }, { digest: digest('base'), role: 'layer' }] });
        assert.equal((await store.heldBy(digest('again')))[0]?.holders, 2, 'a layer listed twice counts twice');
        await store.deleteManifest(digest('again'));
        assert.ok((await store.rootsByLastRead(undefined, 10)).some((root) => root.digest === digest('base')), 'and goes back to 0 with it');
      });
    });

    describe('totals by registry', () => {
      it('count what each registry’s repositories hold, shared content in each, unlinked content in none', async () => {
        const OCI = 'application/vnd.oci.image.manifest.v1+json';
        await store.putBlob(digest('shared'), 100, T0, ALPINE_HUB);
        await store.putBlob(digest('shared'), 100, T0, ALPINE_GHCR);
        await store.putBlob(digest('hub only'), 10, T0, ALPINE_HUB);
        await store.putBlob(digest('hub twice'), 5, T0, ALPINE_HUB);
        await store.putBlob(digest('hub twice'), 5, T0, { registry: 'docker.io', name: 'library/busybox' });
        await store.putBlob(digest('unlinked'), 1000, T0);
        await store.putManifest({ digest: digest('manifest'), mediaType: OCI, size: 7 }, T0, { references: [], holder: ALPINE_GHCR });
        assert.deepEqual(await store.totalsByRegistry(), [
          { registry: 'docker.io', blobs: 3, blobBytes: 115, manifests: 0, manifestBytes: 0 },
          { registry: 'ghcr.io', blobs: 1, blobBytes: 100, manifests: 1, manifestBytes: 7 },
        ]);
      });
    });

    describe('removing content (eviction and GC)', () => {
      const OCI = 'application/vnd.oci.image.manifest.v1+json';
      const INDEX = 'application/vnd.oci.image.index.v1+json';
      const image = { digest: digest('image'), mediaType: OCI, size: 400 };
      const index = { digest: digest('index'), mediaType: INDEX, size: 300 };
      const layer = digest('layer');
      const config = digest('config');

      beforeEach(async () => {
        await store.putBlob(layer, 1000, T0, ALPINE_HUB);
        await store.putBlob(config, 100, T0, ALPINE_HUB);
        const references = [
          { digest: config, role: 'config' as const },
          { digest: layer, role: 'layer' as const },
        ];
        await store.putManifest(image, T0, { references, holder: ALPINE_HUB });
        await store.putManifest(index, T0, { references: [{ digest: image.digest, role: 'manifest' }], holder: ALPINE_HUB });
        await store.putTag(ALPINE_HUB, 'latest', { digest: index.digest, fetchedAt: T0 });
      });

      it('removes an unread image whole, with its tags, links and references, parents first', async () => {
        const removed = await store.removeContent({ manifests: [index.digest, image.digest], blobs: [config, layer], readBefore: T0 + SECOND });
        assert.deepEqual(removed, {
          manifests: [
            { digest: index.digest, size: 300 },
            { digest: image.digest, size: 400 },
          ],
          blobs: [
            { digest: config, size: 100 },
            { digest: layer, size: 1000 },
          ],
        });
        assert.equal(await store.getManifest(image.digest), undefined);
        assert.equal(await store.getBlob(layer), undefined);
        assert.equal(await store.getTag(ALPINE_HUB, 'latest'), undefined, 'a tag of a removed manifest goes with it');
        assert.deepEqual(await store.referencesOf(index.digest), []);
        assert.equal(await store.holdsContent(ALPINE_HUB, layer), false);
        assert.deepEqual(await store.totals(), { blobs: 0, blobBytes: 0, manifests: 0, manifestBytes: 0 });
      });

      it('keeps what a manifest that stays references', async () => {
        const removed = await store.removeContent({ manifests: [image.digest], blobs: [layer], readBefore: T0 + SECOND });
        assert.deepEqual(removed, { manifests: [], blobs: [] }, 'the index stays, so its child and the child’s layer do');
        assert.notEqual(await store.getBlob(layer), undefined);
      });

      it('keeps what was read since the decision, counting reads not yet flushed', async () => {
        await store.touchBlob(layer, T0 + 2 * SECOND);
        await store.touchManifest(index.digest, T0 + 2 * SECOND);
        const removed = await store.removeContent({ manifests: [index.digest, image.digest], blobs: [config, layer], readBefore: T0 + SECOND });
        assert.deepEqual(removed, { manifests: [], blobs: [] }, 'the index was read: it stays, and so does all it reaches');
        assert.equal((await store.getBlob(layer))?.lastAccess, T0 + 2 * SECOND);
      });

      it('keeps a blob read since, while removing the unread image that referenced it', async () => {
        await store.touchBlob(layer, T0 + 2 * SECOND);
        await store.flushAccess();
        const removed = await store.removeContent({ manifests: [index.digest, image.digest], blobs: [config, layer], readBefore: T0 + SECOND });
        assert.deepEqual(removed.manifests.map((entry) => entry.digest), [index.digest, image.digest]);
        assert.deepEqual(removed.blobs, [{ digest: config, size: 100 }]);
        assert.equal((await store.getBlob(layer))?.lastAccess, T0 + 2 * SECOND);
      });

      it('does not count a subject as holding its target', async () => {
        const signature = { digest: digest('signature'), mediaType: OCI, size: 50 };
        await store.putBlob(digest('lonely'), 5, T0);
        await store.putManifest(signature, T0, { references: [{ digest: digest('lonely'), role: 'subject' }] });
        const removed = await store.removeContent({ manifests: [], blobs: [digest('lonely')], readBefore: T0 + SECOND });
        assert.deepEqual(removed.blobs, [{ digest: digest('lonely'), size: 5 }]);
      });

      it('skips what is not recorded, and lists the digests tags point at', async () => {
        assert.deepEqual(await store.removeContent({ manifests: [digest('unknown')], blobs: [digest('unknown')], readBefore: T0 + SECOND }), { manifests: [], blobs: [] });
        await store.putTag(ALPINE_GHCR, 'v1', { digest: index.digest, fetchedAt: T0 });
        await store.putTag(ALPINE_GHCR, 'v2', { digest: image.digest, fetchedAt: T0 });
        assert.deepEqual((await store.taggedDigests()).sort(), [index.digest, image.digest].sort());
      });
    });
  });
}
