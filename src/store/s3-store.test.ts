// Runs the ObjectStore conformance suite against the s3 driver on a real S3 server (Swift's s3api, one for the
// file, a fresh prefix per test), plus what only the s3 driver promises: multipart commits that leave nothing
// behind when they fail, listings past a page, an outage or a silent server as StorageErrors, no secret in an error.

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { truncate } from 'node:fs/promises';
import { createServer, type Socket } from 'node:net';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { inspect } from 'node:util';
import { after, before, describe, it } from 'node:test';
import { CreateMultipartUploadCommand, ListMultipartUploadsCommand, ListObjectsV2Command, ListPartsCommand, UploadPartCommand, type S3Client } from '@aws-sdk/client-s3';
import { startSwift, SWIFT_ACCESS_KEY, SWIFT_REGION, SWIFT_SECRET_KEY, type Swift } from '../../test/support/swift.js';
import { makeTempDir, removeDir } from '../../test/support/temp.js';
import { digestOf } from '../oci/digest.js';
import { contentKey, TEMPORARY_FOLDER } from './layout.js';
import { objectStoreConformance } from './object-store.conformance.js';
import { listAll } from './object-store.js';
import { S3ObjectStore, type S3StoreSettings, type S3StoreTuning } from './s3-store.js';
import { StorageError } from './storage-error.js';

const BUCKET = 'regmirror-test';
/** S3's smallest part: commits above it are multipart uploads. */
const PART = 5 * 1024 * 1024;

let swift: Swift;
let admin: S3Client;
let stores = 0;

before(async () => {
  swift = await startSwift();
  await swift.createBucket(BUCKET);
  admin = swift.client();
});

after(async () => {
  admin.destroy();
  await swift.destroy();
});

function settingsOf(overrides: Partial<S3StoreSettings> = {}): S3StoreSettings {
  return {
    bucket: BUCKET,
    region: SWIFT_REGION,
    endpoint: swift.endpoint,
    forcePathStyle: true,
    prefix: `store-${++stores}/`,
    credentials: { accessKeyId: SWIFT_ACCESS_KEY, secretAccessKey: SWIFT_SECRET_KEY },
    requestTimeoutMs: 10_000,
    redirectTtlMs: undefined,
    ...overrides,
  };
}

interface S3Fixture {
  store: S3ObjectStore;
  prefix: string;
  dataDir: string;
  cleanup: () => Promise<void>;
}

async function makeS3Store(overrides: Partial<S3StoreSettings> = {}, tuning: S3StoreTuning = {}): Promise<S3Fixture> {
  const settings = settingsOf(overrides);
  const dataDir = await makeTempDir('regmirror-s3-store');
  const store = new S3ObjectStore(settings, path.join(dataDir, TEMPORARY_FOLDER), tuning);
  try {
    await store.init();
  } catch (error) {
    store.close();
    await removeDir(dataDir);
    throw error;
  }
  return {
    store,
    prefix: settings.prefix,
    dataDir,
    cleanup: async () => {
      store.close();
      await removeDir(dataDir);
    },
  };
}

objectStoreConformance('s3', () => makeS3Store({}, { partBytes: PART }));

async function unfinishedUploads(prefix: string): Promise<string[]> {
  const page = await admin.send(new ListMultipartUploadsCommand({ Bucket: BUCKET, Prefix: prefix }));
  return (page.Uploads ?? []).map((upload) => upload.Key ?? '');
}

async function bucketKeys(prefix: string): Promise<string[]> {
  const page = await admin.send(new ListObjectsV2Command({ Bucket: BUCKET, Prefix: prefix }));
  return (page.Contents ?? []).map((object) => object.Key ?? '');
}

/** Polls check (every 50 ms, 10 s at most) until it returns something. */
async function until<T>(check: () => Promise<T | undefined>, what: string): Promise<T> {
  for (let attempt = 0; attempt < 200; attempt++) {
    const found = await check();
    if (found !== undefined) return found;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  throw new Error(`timed out waiting for ${what}`);
}

/** Asserts that work fails with a StorageError for operation, and returns it. */
async function storageFailure(work: Promise<unknown>, operation: string): Promise<StorageError> {
  let failure: StorageError | undefined;
  await assert.rejects(work, (error: unknown) => {
    assert.ok(error instanceof StorageError, `a StorageError, not ${inspect(error)}`);
    assert.equal(error.operation, operation);
    failure = error;
    return true;
  });
  assert.ok(failure !== undefined);
  return failure;
}

describe('S3ObjectStore', () => {
  it('keeps keys as layout.ts names them, under its prefix', async () => {
    const { store, prefix, cleanup } = await makeS3Store();
    try {
      const bytes = Buffer.from('layout');
      const key = contentKey(digestOf(bytes));
      await store.putBytes(key, bytes);
      assert.deepEqual(await bucketKeys(prefix), [`${prefix}${key}`]);
      assert.deepEqual(await listAll(store, 'blobs'), [key]);
    } finally {
      await cleanup();
    }
  });

  it('commits a spool larger than a part as a multipart upload, leaving no upload nor local file behind', async () => {
    const { store, prefix, cleanup } = await makeS3Store({}, { partBytes: PART });
    try {
      const bytes = randomBytes(2 * PART + 12_345);
      const key = contentKey(digestOf(bytes));
      const spool = await store.createWriter();
      for (let offset = 0; offset < bytes.length; offset += 1024 * 1024) await spool.append(bytes.subarray(offset, offset + 1024 * 1024));
      await spool.commit(key);
      assert.ok((await store.readBytes(key))?.equals(bytes), 'the object is the spool, byte for byte');
      assert.ok((await spool.readAt(PART - 3, 6)).equals(bytes.subarray(PART - 3, PART + 3)), 'the spool stays readable after commit');
      await spool.close();
      assert.deepEqual(await store.listTemporaries(), []);
      assert.deepEqual(await unfinishedUploads(prefix), []);
    } finally {
      await cleanup();
    }
  });

  it('fails a commit whose spool holds fewer bytes than it says: nothing visible, no multipart upload left', async () => {
    const { store, prefix, cleanup } = await makeS3Store({}, { partBytes: PART, partsAtOnce: 1 });
    try {
      const bytes = randomBytes(3 * PART);
      const key = contentKey(digestOf(bytes));
      const spool = await store.createWriter();
      await spool.append(bytes);
      // The disk lost the end of the spool: the first part uploads, the second cannot be read whole.
      await truncate(spool.path, PART + 1000);
      await storageFailure(spool.commit(key), 'commit');
      await spool.abort();
      assert.equal(await store.stat(key), undefined);
      assert.deepEqual(await listAll(store, 'blobs'), []);
      assert.deepEqual(await bucketKeys(prefix), []);
      assert.deepEqual(await unfinishedUploads(prefix), [], 'the multipart upload was aborted');
    } finally {
      await cleanup();
    }
  });

  it('uploads the parts of a writer told its key while the content streams in: the commit only completes the upload', async () => {
    const { store, prefix, cleanup } = await makeS3Store({}, { partBytes: PART });
    try {
      const bytes = randomBytes(3 * PART);
      const key = contentKey(digestOf(bytes));
      const writer = await store.createWriter(key);
      for (let offset = 0; offset < bytes.length; offset += 1024 * 1024) await writer.append(bytes.subarray(offset, offset + 1024 * 1024));
      // Every part is full: all three go up before any commit.
      const parts = await until(async () => {
        const uploads = await admin.send(new ListMultipartUploadsCommand({ Bucket: BUCKET, Prefix: prefix }));
        const upload = uploads.Uploads?.[0];
        if (upload?.UploadId === undefined) return undefined;
        const listed = await admin.send(new ListPartsCommand({ Bucket: BUCKET, Key: upload.Key, UploadId: upload.UploadId }));
        return listed.Parts?.length === 3 ? listed.Parts : undefined;
      }, 'the three parts uploaded before the commit');
      assert.deepEqual(parts.map((part) => part.Size), [PART, PART, PART]);
      assert.deepEqual(await bucketKeys(prefix), [], 'nothing visible before the commit');
      assert.deepEqual((await store.listTemporaries()).map((temporary) => temporary.size).sort((a, b) => a - b), [3 * PART, 3 * PART], 'its spool and its upload');
      await writer.commit(key);
      await writer.close();
      assert.ok((await store.readBytes(key))?.equals(bytes));
      assert.deepEqual(await unfinishedUploads(prefix), []);
      assert.deepEqual(await store.listTemporaries(), []);
    } finally {
      await cleanup();
    }
  });

  it('fails the commit of a writer whose upload was aborted meanwhile (as GC aborts one it finds abandoned): nothing visible, nothing left', async () => {
    const { store, prefix, cleanup } = await makeS3Store({}, { partBytes: PART });
    try {
      const bytes = randomBytes(2 * PART + 100);
      const key = contentKey(digestOf(bytes));
      const writer = await store.createWriter(key);
      await writer.append(bytes.subarray(0, PART));
      const upload = await until(async () => (await store.listTemporaries()).find((temporary) => temporary.name.startsWith('upload.')), 'the upload listed');
      await store.removeTemporary(upload.name);
      await writer.append(bytes.subarray(PART));
      await storageFailure(writer.commit(key), 'upload part');
      await writer.abort();
      assert.equal(await store.stat(key), undefined);
      assert.deepEqual(await bucketKeys(prefix), []);
      assert.deepEqual(await unfinishedUploads(prefix), []);
      assert.deepEqual(await store.listTemporaries(), []);
    } finally {
      await cleanup();
    }
  });

  it('lists past a page of 1,000 keys, in order, and walks them all', async () => {
    const { store, cleanup } = await makeS3Store();
    try {
      const keys = Array.from({ length: 1_234 }, (_, index) => `v1/images/${String(index).padStart(5, '0')}/json`);
      for (let start = 0; start < keys.length; start += 50) {
        await Promise.all(keys.slice(start, start + 50).map((key) => store.putBytes(key, Buffer.from('{}'))));
      }
      assert.deepEqual(await listAll(store, 'v1/images'), keys);
      let walked = 0;
      for await (const key of store.keys('v1')) {
        assert.ok(key.startsWith('v1/images/'));
        walked++;
      }
      assert.equal(walked, keys.length);
    } finally {
      await cleanup();
    }
  });

  it('lists a multipart upload a crash left unfinished as a temporary, with its parts’ size, and aborts it', async () => {
    const { store, prefix, cleanup } = await makeS3Store();
    try {
      const key = contentKey(digestOf(Buffer.from('crashed')));
      const started = await admin.send(new CreateMultipartUploadCommand({ Bucket: BUCKET, Key: `${prefix}${key}` }));
      await admin.send(new UploadPartCommand({ Bucket: BUCKET, Key: `${prefix}${key}`, UploadId: started.UploadId, PartNumber: 1, Body: randomBytes(PART) }));
      const spool = await store.createWriter();
      await spool.append(randomBytes(10));
      const listed = await store.listTemporaries();
      assert.deepEqual(listed.map((temporary) => temporary.size).sort((a, b) => a - b), [10, PART]);
      const upload = listed.find((temporary) => temporary.size === PART);
      assert.ok(upload !== undefined && !upload.name.includes('/'));
      assert.ok(Math.abs(upload.modifiedAt - Date.now()) < 60_000, 'when it was last written');
      await store.removeTemporary(upload.name);
      await store.removeTemporary(upload.name);
      assert.deepEqual(await unfinishedUploads(prefix), []);
      await spool.abort();

      // At start, every leftover goes: spools and uploads alike.
      await admin.send(new CreateMultipartUploadCommand({ Bucket: BUCKET, Key: `${prefix}${key}` }));
      const leftover = await store.createWriter();
      await leftover.close();
      assert.equal(await store.removeStaleTemporaries(), 2);
      assert.deepEqual(await unfinishedUploads(prefix), []);
      assert.deepEqual(await store.listTemporaries(), []);
      assert.equal(await store.stat(key), undefined, 'an aborted upload never becomes an object');
    } finally {
      await cleanup();
    }
  });

  it('answers other requests while many responses hold their streams open (slow clients)', async () => {
    const { store, cleanup } = await makeS3Store({ requestTimeoutMs: 5_000 });
    const streams: Readable[] = [];
    try {
      const bytes = randomBytes(4 * 1024 * 1024);
      const key = contentKey(digestOf(bytes));
      await store.putBytes(key, bytes);
      // More than the SDK's default of 50 connections, none read past its first bytes.
      for (let index = 0; index < 80; index++) {
        const stream = await store.read(key);
        assert.ok(stream !== undefined);
        streams.push(stream);
      }
      assert.equal((await store.stat(key))?.size, bytes.length, 'a HEAD is not queued behind the open streams');
      assert.ok((await store.readBytes(key))?.equals(bytes));
    } finally {
      for (const stream of streams) stream.destroy();
      await cleanup();
    }
  });

  it('keeps the failure of a stream nobody reads yet for its reader, without crashing', async () => {
    const { store, cleanup } = await makeS3Store({ requestTimeoutMs: 1_000 });
    try {
      const bytes = randomBytes(8 * 1024 * 1024);
      const key = contentKey(digestOf(bytes));
      await store.putBytes(key, bytes);
      const stream = await store.read(key);
      assert.ok(stream !== undefined);
      // Unread for longer than the deadline: the connection stalls and is cut.
      await new Promise((resolve) => setTimeout(resolve, 2_500));
      await assert.rejects(async () => {
        for await (const _chunk of stream);
      }, StorageError);
    } finally {
      await cleanup();
    }
  });

  it('refuses to open a bucket that is not there, saying so', async () => {
    const failure = await storageFailure(makeS3Store({ bucket: 'no-such-bucket' }), 'open bucket');
    assert.equal(failure.code, 'NoSuchBucket');
    assert.match(failure.message, /no-such-bucket/);
  });

  it('never puts the credentials in an error, whatever the server sends back', async () => {
    const secret = `wrong-${randomBytes(8).toString('hex')}`;
    const failure = await storageFailure(makeS3Store({ credentials: { accessKeyId: SWIFT_ACCESS_KEY, secretAccessKey: secret } }), 'open bucket');
    assert.equal(failure.code, 'AccessDenied');
    const dataDir = await makeTempDir('regmirror-s3-store');
    const store = new S3ObjectStore(settingsOf({ credentials: { accessKeyId: SWIFT_ACCESS_KEY, secretAccessKey: secret } }), path.join(dataDir, TEMPORARY_FOLDER));
    try {
      const key = contentKey(digestOf(Buffer.from('secret')));
      const failures = [
        failure,
        await storageFailure(store.stat(key), 'stat'),
        await storageFailure(store.read(key), 'read'),
        await storageFailure(store.putBytes(key, Buffer.from('secret')), 'write'),
        await storageFailure(listAll(store, 'blobs'), 'list'),
      ];
      // The server's answer to a bad signature names the access key and the string signed; none of it is kept.
      for (const error of failures) {
        const everything = `${inspect(error, { depth: null, showHidden: true })} ${JSON.stringify(error)} ${String(error.stack)}`;
        assert.ok(!everything.includes(secret), 'the secret key');
        assert.ok(!everything.includes(SWIFT_ACCESS_KEY), `the access key id, in: ${everything}`);
      }
    } finally {
      store.close();
      await removeDir(dataDir);
    }
  });

  it('gives up on a server that accepts and never answers, at the deadline of each attempt, three attempts', async () => {
    const sockets = new Set<Socket>();
    let connections = 0;
    const silent = createServer((socket) => {
      connections++;
      sockets.add(socket);
      socket.on('close', () => sockets.delete(socket));
      socket.resume();
    });
    await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
    const address = silent.address();
    assert.ok(address !== null && typeof address === 'object');
    const dataDir = await makeTempDir('regmirror-s3-store');
    const store = new S3ObjectStore(settingsOf({ endpoint: `http://127.0.0.1:${address.port}`, requestTimeoutMs: 300 }), path.join(dataDir, TEMPORARY_FOLDER));
    try {
      const failure = await storageFailure(store.stat(contentKey(digestOf(Buffer.from('silent')))), 'stat');
      assert.equal(failure.code, 'ETIMEDOUT');
      assert.equal(connections, 3, 'the SDK’s standard retries: three attempts, each cut at its deadline');
    } finally {
      store.close();
      for (const socket of sockets) socket.destroy();
      await new Promise((resolve) => silent.close(resolve));
      await removeDir(dataDir);
    }
  });
});

describe('S3ObjectStore when the server dies mid-use', () => {
  let dying: Swift;

  before(async () => {
    dying = await startSwift();
    await dying.createBucket(BUCKET);
  });

  after(async () => {
    await dying.destroy();
  });

  it('fails a read in progress and every later call with a StorageError, and the process goes on', async () => {
    const dataDir = await makeTempDir('regmirror-s3-store');
    const store = new S3ObjectStore(settingsOf({ endpoint: dying.endpoint, requestTimeoutMs: 2_000 }), path.join(dataDir, TEMPORARY_FOLDER));
    try {
      await store.init();
      const bytes = randomBytes(32 * 1024 * 1024);
      const key = contentKey(digestOf(bytes));
      await store.putBytes(key, bytes);
      const stream = await store.read(key);
      assert.ok(stream !== undefined);
      const iterator = stream[Symbol.asyncIterator]();
      const first = await iterator.next();
      assert.equal(first.done, false);
      await dying.kill();
      await assert.rejects(async () => {
        for (let step = await iterator.next(); step.done !== true; step = await iterator.next());
      }, StorageError);

      await storageFailure(store.stat(key), 'stat');
      await storageFailure(store.read(key), 'read');
      await storageFailure(store.readBytes(key), 'read');
      await storageFailure(store.putBytes(key, Buffer.from('x')), 'write');
      await storageFailure(store.delete(key), 'delete');
      await storageFailure(listAll(store, 'blobs'), 'list');
      await storageFailure(store.listTemporaries(), 'list uploads');
      const spool = await store.createWriter();
      await spool.append(Buffer.from('spooled while the bucket is away'));
      await storageFailure(spool.commit(key), 'commit');
      await spool.abort();
    } finally {
      store.close();
      await removeDir(dataDir);
    }
  });
});
