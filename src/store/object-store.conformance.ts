// The conformance suite every ObjectStore driver runs: reads, ranges, atomic writes, writers (streamed to the key
// announced or not) made visible only by commit and leaving nothing once aborted, deletion and crash leftovers.
// A driver's test file calls objectStoreConformance.

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import type { Readable } from 'node:stream';
import { afterEach, beforeEach, describe, it } from 'node:test';
import { digestOf } from '../oci/digest.js';
import { contentKey } from './layout.js';
import { listAll, type ObjectStore, type ObjectWriter } from './object-store.js';

export interface ObjectStoreFixture {
  store: ObjectStore;
  cleanup(): Promise<void>;
}

async function readAll(stream: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk as Uint8Array));
  return Buffer.concat(chunks);
}

/** Content and the key it is stored under. */
function content(size: number): { bytes: Buffer; key: string } {
  const bytes = randomBytes(size);
  return { bytes, key: contentKey(digestOf(bytes)) };
}

export function objectStoreConformance(name: string, makeStore: () => Promise<ObjectStoreFixture>): void {
  describe(`ObjectStore conformance: ${name}`, () => {
    let fixture: ObjectStoreFixture;
    let store: ObjectStore;

    beforeEach(async () => {
      fixture = await makeStore();
      store = fixture.store;
    });

    afterEach(async () => {
      await fixture.cleanup();
    });

    /** Asserts that key holds exactly bytes, through every way of reading it. */
    async function assertHolds(key: string, bytes: Buffer): Promise<void> {
      assert.equal((await store.stat(key))?.size, bytes.length);
      const whole = await store.readBytes(key);
      assert.ok(whole !== undefined, `readBytes(${key}) found nothing`);
      assert.ok(whole.equals(bytes), 'readBytes returned other bytes');
      const stream = await store.read(key);
      assert.ok(stream !== undefined, `read(${key}) found nothing`);
      assert.ok((await readAll(stream)).equals(bytes), 'read returned other bytes');
    }

    async function assertAbsent(key: string): Promise<void> {
      assert.equal(await store.stat(key), undefined);
      assert.equal(await store.readBytes(key), undefined);
      assert.equal(await store.read(key), undefined);
      assert.equal(await store.read(key, { start: 0, end: 0 }), undefined);
    }

    describe('missing keys', () => {
      it('are undefined to stat, read and readBytes', async () => {
        await assertAbsent(content(10).key);
      });

      it('can be deleted without error', async () => {
        const { key } = content(10);
        await store.delete(key);
        await assertAbsent(key);
      });

      it('include a prefix of stored keys, to stat', async () => {
        const { bytes, key } = content(10);
        await store.putBytes(key, bytes);
        assert.equal(await store.stat(key.slice(0, key.lastIndexOf('/'))), undefined);
        assert.equal(await store.stat('blobs'), undefined);
      });
    });

    describe('putBytes', () => {
      it('stores content that stat, read and readBytes return', async () => {
        const { bytes, key } = content(4096);
        await store.putBytes(key, bytes);
        await assertHolds(key, bytes);
      });

      it('stores empty content', async () => {
        const { bytes, key } = content(0);
        await store.putBytes(key, bytes);
        await assertHolds(key, bytes);
      });

      it('keeps many objects apart, some sharing a folder', async () => {
        // 300 random objects: some share their two-hex folder.
        const objects = Array.from({ length: 300 }, () => content(16));
        await Promise.all(objects.map(({ bytes, key }) => store.putBytes(key, bytes)));
        for (const { bytes, key } of objects) await assertHolds(key, bytes);
      });

      it('overwrites atomically: every read sees one whole version', async () => {
        const { key } = content(1);
        const first = Buffer.alloc(256 * 1024, 1);
        const second = Buffer.alloc(384 * 1024, 2);
        await store.putBytes(key, first);
        const writes: Promise<void>[] = [];
        const reads: Promise<Buffer | undefined>[] = [];
        for (let round = 0; round < 12; round++) {
          writes.push(store.putBytes(key, round % 2 === 0 ? second : first));
          reads.push(store.readBytes(key));
        }
        await Promise.all(writes);
        for (const read of await Promise.all(reads)) {
          assert.ok(read !== undefined, 'an object being overwritten vanished');
          assert.ok(read.equals(first) || read.equals(second), `a read saw a mixture of ${read.length} bytes`);
        }
        // Concurrent writes may land in any order; whichever won, it is whole.
        const final = await store.readBytes(key);
        assert.ok(final !== undefined && (final.equals(first) || final.equals(second)));
        await assertHolds(key, final);
      });

      it('replaces an object with the last write', async () => {
        const { key } = content(1);
        await store.putBytes(key, Buffer.from('first version, longer'));
        await store.putBytes(key, Buffer.from('second'));
        await assertHolds(key, Buffer.from('second'));
      });

      it('leaves a stream opened before an overwrite reading the old version whole', async () => {
        const { key } = content(1);
        const before = randomBytes(3 * 1024 * 1024);
        const after = randomBytes(1024);
        await store.putBytes(key, before);
        const stream = await store.read(key);
        assert.ok(stream !== undefined);
        await store.putBytes(key, after);
        assert.ok((await readAll(stream)).equals(before));
        await assertHolds(key, after);
      });

      it('leaves no temporaries behind', async () => {
        const { bytes, key } = content(1000);
        await store.putBytes(key, bytes);
        await store.putBytes(key, bytes);
        assert.equal(await store.removeStaleTemporaries(), 0);
      });
    });

    describe('range reads', () => {
      const size = 3 * 1024 * 1024 + 17;
      let bytes: Buffer;
      let key: string;

      beforeEach(async () => {
        ({ bytes, key } = content(size));
        await store.putBytes(key, bytes);
      });

      const ranges: { name: string; start: number; end: (size: number) => number }[] = [
        { name: 'the first byte', start: 0, end: () => 0 },
        { name: 'ten bytes inside', start: 10, end: () => 19 },
        { name: 'the last byte', start: size - 1, end: (n) => n - 1 },
        { name: 'the whole object', start: 0, end: (n) => n - 1 },
        { name: 'across read-chunk boundaries', start: 1024 * 1024 - 5, end: () => 2 * 1024 * 1024 + 5 },
        { name: 'the tail from the middle', start: 1_500_000, end: (n) => n - 1 },
      ];
      for (const range of ranges) {
        it(`returns ${range.name}`, async () => {
          const end = range.end(size);
          const stream = await store.read(key, { start: range.start, end });
          assert.ok(stream !== undefined);
          const read = await readAll(stream);
          assert.equal(read.length, end - range.start + 1);
          assert.ok(read.equals(bytes.subarray(range.start, end + 1)));
        });
      }

      it('reads to the end for a range that ends past it, and nothing for one that starts past it', async () => {
        const tail = await store.read(key, { start: size - 10, end: size + 1000 });
        assert.ok(tail !== undefined);
        assert.ok((await readAll(tail)).equals(bytes.subarray(size - 10)));
        const beyond = await store.read(key, { start: size + 5, end: size + 10 });
        assert.ok(beyond !== undefined, 'the object exists');
        assert.equal((await readAll(beyond)).length, 0);
      });

      it('serves several ranges of one object at once', async () => {
        const starts = [0, 100, 1024 * 1024, size - 1000];
        const reads = await Promise.all(
          starts.map(async (start) => {
            const stream = await store.read(key, { start, end: start + 999 });
            assert.ok(stream !== undefined);
            return readAll(stream);
          }),
        );
        reads.forEach((read, index) => {
          const start = starts[index] ?? 0;
          assert.ok(read.equals(bytes.subarray(start, start + 1000)));
        });
      });

      it('stops cleanly when a reader is destroyed early', async () => {
        const stream = await store.read(key);
        assert.ok(stream !== undefined);
        const closed = new Promise<void>((resolve) => stream.once('close', resolve));
        stream.once('data', () => stream.destroy());
        stream.resume();
        await closed;
        await assertHolds(key, bytes);
      });
    });

    describe('spools', () => {
      it('are not visible before commit, and whole after', async () => {
        const { bytes, key } = content(2 * 1024 * 1024 + 3);
        const spool = await store.createWriter();
        try {
          for (let offset = 0; offset < bytes.length; offset += 300_000) await spool.append(bytes.subarray(offset, offset + 300_000));
          assert.equal(spool.size, bytes.length);
          await assertAbsent(key);
          await spool.commit(key);
          await assertHolds(key, bytes);
          // The spool's handle stays readable after commit, for readers still following the fill.
          assert.ok((await spool.readAt(0, 10)).equals(bytes.subarray(0, 10)));
          assert.ok((await spool.readAt(bytes.length - 5, 100)).equals(bytes.subarray(bytes.length - 5)));
        } finally {
          await spool.close();
        }
        await assertHolds(key, bytes);
        assert.equal(await store.removeStaleTemporaries(), 0);
      });

      it('read back what was appended before commit', async () => {
        const spool = await store.createWriter();
        try {
          await spool.append(Buffer.from('hello '));
          await spool.append(Buffer.from('world'));
          assert.equal((await spool.readAt(0, 100)).toString(), 'hello world');
          assert.equal((await spool.readAt(6, 3)).toString(), 'wor');
          assert.equal((await spool.readAt(11, 10)).length, 0);
        } finally {
          await spool.abort();
        }
      });

      it('append several chunks in one call, in order, empty ones included', async () => {
        const spool = await store.createWriter();
        try {
          await spool.append(Buffer.from('a '));
          await spool.appendAll([Buffer.from('quick '), Buffer.alloc(0), Buffer.from('brown '), Buffer.from('fox')]);
          await spool.appendAll([]);
          assert.equal(spool.size, 17);
          assert.equal((await spool.readAt(0, 100)).toString(), 'a quick brown fox');
        } finally {
          await spool.abort();
        }
      });

      it('commit an empty object', async () => {
        const { bytes, key } = content(0);
        const spool = await store.createWriter();
        await spool.commit(key);
        await spool.close();
        await assertHolds(key, bytes);
      });

      it('commit over an object that already exists', async () => {
        const { bytes, key } = content(1000);
        await store.putBytes(key, bytes);
        const spool = await store.createWriter();
        await spool.append(bytes);
        await spool.commit(key);
        await spool.close();
        await assertHolds(key, bytes);
      });

      it('are independent of one another', async () => {
        const objects = [content(5000), content(7000)];
        const spools = await Promise.all(objects.map(() => store.createWriter()));
        await Promise.all(spools.map((spool, index) => spool.append(objects[index]?.bytes ?? Buffer.alloc(0))));
        const [firstSpool, secondSpool] = spools;
        const [first, second] = objects;
        assert.ok(firstSpool && secondSpool && first && second);
        await secondSpool.commit(second.key);
        await assertAbsent(first.key);
        await assertHolds(second.key, second.bytes);
        await firstSpool.abort();
        await secondSpool.close();
        await assertAbsent(first.key);
      });

      it('once discarded, leave nothing behind', async () => {
        const spool = await store.createWriter();
        await spool.append(randomBytes(1000));
        await spool.abort();
        assert.equal(await store.removeStaleTemporaries(), 0);
      });
    });

    describe('writers', () => {
      /** Larger than two parts of a multipart upload (S3's minimum part: 5 MiB), written in 1 MiB appends. */
      const STREAMED = 11 * 1024 * 1024 + 7;

      async function appendInChunks(writer: ObjectWriter, bytes: Buffer): Promise<void> {
        for (let offset = 0; offset < bytes.length; offset += 1024 * 1024) await writer.append(bytes.subarray(offset, offset + 1024 * 1024));
      }

      it('stream content to the key announced: nothing visible before commit, whole after, readable all along', async () => {
        const { bytes, key } = content(STREAMED);
        const writer = await store.createWriter(key);
        try {
          await appendInChunks(writer, bytes);
          assert.equal(writer.size, bytes.length);
          await assertAbsent(key);
          assert.deepEqual(await listAll(store, 'blobs', 2), []);
          assert.ok((await writer.readAt(5 * 1024 * 1024 - 2, 4)).equals(bytes.subarray(5 * 1024 * 1024 - 2, 5 * 1024 * 1024 + 2)));
          await writer.commit(key);
          await assertHolds(key, bytes);
          assert.ok((await writer.readAt(bytes.length - 3, 10)).equals(bytes.subarray(bytes.length - 3)), 'readable after commit');
        } finally {
          await writer.close();
        }
        assert.deepEqual(await store.listTemporaries(), []);
        assert.equal(await store.removeStaleTemporaries(), 0);
      });

      it('once aborted mid-way, leave nothing: no object, no temporary, no upload', async () => {
        const { bytes, key } = content(STREAMED);
        const writer = await store.createWriter(key);
        await appendInChunks(writer, bytes);
        await writer.abort();
        await writer.abort();
        await assertAbsent(key);
        assert.deepEqual(await store.listTemporaries(), []);
        assert.equal(await store.removeStaleTemporaries(), 0);
        await assert.rejects(writer.commit(key), /aborted/);
      });

      it('commit where they were not announced to: the content goes there, nothing to the key announced', async () => {
        const { bytes, key } = content(STREAMED);
        const announced = content(1).key;
        const writer = await store.createWriter(announced);
        await appendInChunks(writer, bytes);
        await writer.commit(key);
        await writer.close();
        await assertHolds(key, bytes);
        await assertAbsent(announced);
        assert.deepEqual(await store.listTemporaries(), []);
      });

      it('refuse appends after commit, and an abort after commit leaves the object', async () => {
        const { bytes, key } = content(3000);
        const writer = await store.createWriter(key);
        await writer.append(bytes);
        await writer.commit(key);
        await assert.rejects(writer.append(bytes), /committed/);
        await assert.rejects(writer.commit(key), /committed/);
        await writer.abort();
        await assertHolds(key, bytes);
      });
    });

    describe('delete', () => {
      it('removes an object', async () => {
        const { bytes, key } = content(1000);
        await store.putBytes(key, bytes);
        await store.delete(key);
        await assertAbsent(key);
        await store.delete(key);
      });

      it('leaves other objects alone', async () => {
        const kept = content(100);
        const removed = content(100);
        await store.putBytes(kept.key, kept.bytes);
        await store.putBytes(removed.key, removed.bytes);
        await store.delete(removed.key);
        await assertHolds(kept.key, kept.bytes);
        await assertAbsent(removed.key);
      });
    });

    describe('list', () => {
      it('finds nothing under a folder that holds nothing', async () => {
        assert.deepEqual(await listAll(store, 'v1/repositories', 2), []);
      });

      it('lists every key below a folder at any depth, in lexical order, and nothing beside it', async () => {
        const keys = ['v1/repositories/library/b/tag_latest', 'v1/repositories/library/a/json', 'v1/repositories/team/app/tag_v1', 'v1/repositories/library/a/tag_1.0'];
        for (const key of keys) await store.putBytes(key, Buffer.from(key));
        await store.putBytes('v1/repositories-other/x/y', Buffer.from('beside'));
        await store.putBytes('v1/images/0123456789abcdef/json', Buffer.from('{}'));
        assert.deepEqual(await listAll(store, 'v1/repositories', 2), [...keys].sort());
        assert.deepEqual(await listAll(store, 'v1/repositories/library/a', 2), ['v1/repositories/library/a/json', 'v1/repositories/library/a/tag_1.0']);
        assert.deepEqual(await listAll(store, 'v1/repositories/library/a/json', 2), [], 'an object is not a folder');
      });

      it('no longer lists deleted keys, nor spools before their commit', async () => {
        await store.putBytes('v1/images/a/json', Buffer.from('{}'));
        await store.putBytes('v1/images/a/ancestry', Buffer.from('[]'));
        await store.delete('v1/images/a/json');
        const spool = await store.createWriter();
        await spool.append(Buffer.from('layer'));
        assert.deepEqual(await listAll(store, 'v1/images', 2), ['v1/images/a/ancestry']);
        await spool.commit('v1/images/a/layer');
        await spool.close();
        assert.deepEqual(await listAll(store, 'v1/images', 2), ['v1/images/a/ancestry', 'v1/images/a/layer']);
      });
    });

    describe('listPage', () => {
      // 'a-b' sorts before the folder 'a/' ('-' before '/'), as S3 sorts its keys.
      const keys = ['v1/x/a-b', 'v1/x/a/c', 'v1/x/a/d/e', 'v1/x/b', 'v1/x/c/f'];

      it('pages through a folder in lexical order, each page starting after the last key of the one before', async () => {
        for (const key of [...keys].reverse()) await store.putBytes(key, Buffer.from(key));
        await store.putBytes('v1/xy', Buffer.from('beside'));
        assert.deepEqual(await store.listPage('v1/x', { limit: 2 }), { keys: ['v1/x/a-b', 'v1/x/a/c'], next: 'v1/x/a/c' });
        assert.deepEqual(await store.listPage('v1/x', { after: 'v1/x/a/c', limit: 2 }), { keys: ['v1/x/a/d/e', 'v1/x/b'], next: 'v1/x/b' });
        assert.deepEqual(await store.listPage('v1/x', { after: 'v1/x/b', limit: 2 }), { keys: ['v1/x/c/f'], next: undefined });
        assert.deepEqual(await store.listPage('v1/x', { limit: 5 }), { keys, next: undefined }, 'a page that holds the rest is the last');
        assert.deepEqual(await store.listPage('v1/x/', { after: 'v1/x/a/c0', limit: 1000 }), { keys: keys.slice(2), next: undefined }, 'after a key not stored');
        assert.deepEqual(await store.listPage('v1/x', { after: 'v1/x/c/f', limit: 1 }), { keys: [], next: undefined });
        assert.deepEqual(await store.listPage('v1/none', { limit: 1 }), { keys: [], next: undefined });
      });

      it('refuses a page of no key, of more than 1,000, or of a fraction', async () => {
        for (const limit of [0, 1001, 1.5, -1]) await assert.rejects(store.listPage('v1/x', { limit }), RangeError, String(limit));
      });
    });

    describe('keys', () => {
      it('walks the same keys as list, in any order', async () => {
        const keys = ['v1/images/a/json', 'v1/images/a/layer', 'v1/images/b/json', 'v1/images/b/sub/deeper'];
        for (const key of keys) await store.putBytes(key, Buffer.from(key));
        await store.putBytes('v1/imagesque/x', Buffer.from('beside'));
        const walked: string[] = [];
        for await (const key of store.keys('v1/images')) walked.push(key);
        assert.deepEqual(walked.sort(), keys);
        assert.deepEqual(walked, await listAll(store, 'v1/images', 2));
      });

      it('walks nothing under a folder that holds nothing, or under an object', async () => {
        const { bytes, key } = content(10);
        await store.putBytes(key, bytes);
        for (const prefix of ['v1/nothing', key]) {
          const walked: string[] = [];
          for await (const found of store.keys(prefix)) walked.push(found);
          assert.deepEqual(walked, [], prefix);
        }
      });
    });

    describe('listTemporaries', () => {
      it('lists spools not yet committed, with their size, and forgets them once committed or discarded', async () => {
        assert.deepEqual(await store.listTemporaries(), []);
        const committed = await store.createWriter();
        const discarded = await store.createWriter();
        await committed.append(randomBytes(300));
        await discarded.append(randomBytes(700));
        assert.deepEqual((await store.listTemporaries()).map((temporary) => temporary.size).sort((a, b) => a - b), [300, 700]);
        await committed.commit(content(1).key);
        await committed.close();
        await discarded.abort();
        assert.deepEqual(await store.listTemporaries(), []);
      });

      it('tells when each was last written, and removes one by name', async () => {
        const before = Date.now();
        const first = await store.createWriter();
        const second = await store.createWriter();
        await first.append(randomBytes(10));
        await second.append(randomBytes(20));
        const listed = await store.listTemporaries();
        // Filesystem timestamps may be coarser than Date.now(): a second of slack either way.
        for (const temporary of listed) assert.ok(Math.abs(temporary.modifiedAt - before) < 1_000, `modifiedAt ${temporary.modifiedAt} vs ${before}`);
        const firstListed = listed.find((temporary) => temporary.size === 10);
        assert.ok(firstListed !== undefined);
        await store.removeTemporary(firstListed.name);
        await store.removeTemporary(firstListed.name);
        assert.deepEqual((await store.listTemporaries()).map((temporary) => temporary.size), [20]);
        await assert.rejects(store.removeTemporary('../blobs'));
        await first.abort();
        await second.abort();
      });

      it('tells when a stored object was last written', async () => {
        const before = Date.now();
        const { key, bytes } = content(7);
        await store.putBytes(key, bytes);
        const stat = await store.stat(key);
        assert.ok(stat !== undefined && Math.abs(stat.modifiedAt - before) < 1_000);
      });
    });

    describe('removeStaleTemporaries', () => {
      it('finds nothing in a new store', async () => {
        assert.equal(await store.removeStaleTemporaries(), 0);
      });

      it('removes spools left uncommitted by a crash, and nothing else', async () => {
        const committed = content(1000);
        await store.putBytes(committed.key, committed.bytes);
        const leftovers = [await store.createWriter(), await store.createWriter()];
        for (const spool of leftovers) {
          await spool.append(randomBytes(500));
          await spool.close();
        }
        assert.equal(await store.removeStaleTemporaries(), 2);
        assert.equal(await store.removeStaleTemporaries(), 0);
        await assertHolds(committed.key, committed.bytes);
      });
    });
  });
}
