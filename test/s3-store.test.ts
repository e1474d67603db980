// regmirror with its content in S3 (storage.driver: s3, Swift's s3api): skopeo pulls through it from distribution
// 2.8.2 byte for byte, the content lands in the bucket under the prefix and nowhere in the data directory; a restart
// keeps the cache (pulled again with the upstream stopped) and aborts the multipart uploads a crash left; GC, online
// and offline, removes from the bucket; `regmirror verify` hashes what the bucket holds; a missing bucket stops the
// start with one line; a process on fs does not even load the AWS SDK.

import assert from 'node:assert/strict';
import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, it } from 'node:test';
import { CreateMultipartUploadCommand, ListMultipartUploadsCommand, ListObjectsV2Command, PutObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import { metadataRows } from './support/data-dir.js';
import { startDistribution, type Distribution } from './support/distribution.js';
import { buildImageLayout, pushLayout, sha256Digest, type BuiltImage, type BuiltLayout } from './support/images.js';
import { runRegmirror, startRegmirror, type Regmirror } from './support/regmirror.js';
import { copyToOci } from './support/skopeo.js';
import { s3StorageEnvironment, startSwift, SWIFT_ACCESS_KEY, SWIFT_SECRET_KEY, type Swift } from './support/swift.js';
import { makeTempDir, removeDir } from './support/temp.js';

const BUCKET = 'regmirror';
const PREFIX = 'cache/';

interface GcAnswer {
  removed: Record<string, number>;
  freedBytes: number;
}

/** The bucket's keys under a prefix, every page. */
async function bucketKeys(client: S3Client, prefix: string): Promise<string[]> {
  const keys: string[] = [];
  let token: string | undefined;
  do {
    const page = await client.send(new ListObjectsV2Command({ Bucket: BUCKET, Prefix: prefix, ...(token === undefined ? {} : { ContinuationToken: token }) }));
    keys.push(...(page.Contents ?? []).map((object) => object.Key ?? ''));
    token = page.IsTruncated === true ? page.NextContinuationToken : undefined;
  } while (token !== undefined);
  return keys;
}

async function unfinishedUploads(client: S3Client): Promise<number> {
  return (await client.send(new ListMultipartUploadsCommand({ Bucket: BUCKET, Prefix: PREFIX }))).Uploads?.length ?? 0;
}

function contentObject(digest: string): string {
  const hex = digest.slice('sha256:'.length);
  return `${PREFIX}blobs/sha256/${hex.slice(0, 2)}/${hex}`;
}

describe('regmirror with storage.driver: s3', { timeout: 300_000 }, () => {
  let swift: Swift;
  let client: S3Client;
  let upstream: Distribution;
  let mirror: Regmirror;
  let work: string;
  let first: BuiltLayout;
  let second: BuiltLayout;
  let environment: NodeJS.ProcessEnv;

  before(async () => {
    work = await makeTempDir('s3-store-');
    swift = await startSwift();
    await swift.createBucket(BUCKET);
    client = swift.client();
    upstream = await startDistribution();
    const base = { size: 300_000, seed: 5101 };
    // 12 MB: more than a part (8 MiB), so its commit is a multipart upload.
    first = await buildImageLayout(path.join(work, 'first'), 'v1', [{ layers: [base, { size: 12_000_000, seed: 5102 }, { size: 10, seed: 5103 }] }]);
    second = await buildImageLayout(path.join(work, 'second'), 'v1', [{ layers: [base, { size: 40_000, seed: 5104 }] }]);
    await pushLayout(first, `127.0.0.1:${upstream.port}/team/app:v1`);
    environment = s3StorageEnvironment(swift, BUCKET, PREFIX);
    mirror = await startRegmirror({
      upstreams: [upstream.url],
      // Every pull revalidates the tag (the GC test moves it); GC on demand only, with no grace.
      env: { ...environment, REGMIRROR_CACHE_TAG_FRESHNESS: '0', REGMIRROR_GC_INTERVAL: '0', REGMIRROR_GC_GRACE: '0' },
    });
  });

  after(async () => {
    if (process.env.DEBUG_MIRROR) console.log(mirror?.lines().join('\n'));
    await mirror?.destroy();
    await upstream?.destroy();
    client?.destroy();
    await swift?.destroy();
    await removeDir(work);
  });

  const image = (layout: BuiltLayout): BuiltImage => {
    const built = layout.images[0];
    assert.ok(built !== undefined);
    return built;
  };

  /** Pulls team/app:v1 into a fresh OCI layout and checks every blob against the image pushed. */
  async function pullExactly(layout: BuiltLayout, name: string): Promise<void> {
    const out = path.join(work, name);
    await copyToOci(`docker://${mirror.host}/team/app:v1`, out, 'v1');
    const pushed = image(layout);
    for (const digest of [...pushed.layerDigests, pushed.configDigest]) {
      const copied = await readFile(path.join(out, 'blobs', 'sha256', digest.slice(7)));
      const original = await readFile(path.join(layout.dir, 'blobs', 'sha256', digest.slice(7)));
      assert.ok(copied.equals(original), `${digest} differs`);
      assert.equal(sha256Digest(copied), digest);
    }
  }

  it('pulls an image through byte for byte; its content is in the bucket under the prefix, not in the data directory', async () => {
    await pullExactly(first, 'pull-1');
    await mirror.fillsSettled();
    const pushed = image(first);
    const objects = await bucketKeys(client, PREFIX);
    for (const digest of [...pushed.layerDigests, pushed.configDigest, pushed.manifestDigest]) assert.ok(objects.includes(contentObject(digest)), `${digest} is in the bucket`);
    assert.deepEqual(await bucketKeys(client, 'blobs/'), [], 'nothing outside the prefix');
    assert.equal(await unfinishedUploads(client), 0, 'the multipart commit was completed');
    const local = await readdir(mirror.dataDir);
    assert.ok(!local.includes('blobs'), `the data directory holds no content: ${local.join(', ')}`);
    assert.deepEqual(await readdir(path.join(mirror.dataDir, 'tmp')), [], 'no spool left behind');
    const listening = mirror.lines().find((line) => line.includes('regmirror listening'));
    assert.ok(listening?.includes(`s3://${BUCKET}/${PREFIX} at ${swift.endpoint}`), listening);
    assert.ok(!mirror.lines().some((line) => line.includes(SWIFT_ACCESS_KEY) || line.includes(SWIFT_SECRET_KEY)), 'no credentials in the log');
  });

  it('keeps its cache over a restart, serves it with the upstream stopped, and aborts the uploads a crash left', async () => {
    const crashed = await client.send(new CreateMultipartUploadCommand({ Bucket: BUCKET, Key: contentObject(sha256Digest('never finished')) }));
    assert.ok(crashed.UploadId !== undefined);
    assert.equal(await unfinishedUploads(client), 1);
    await mirror.stop();
    await upstream.stop();
    try {
      await mirror.start();
      assert.equal(await unfinishedUploads(client), 0, 'aborted at start');
      await pullExactly(first, 'pull-2');
      await mirror.settle();
      const blobGets = mirror.accessEntries().filter((entry) => entry.method === 'GET' && entry.path.includes('/blobs/'));
      assert.ok(blobGets.slice(-4).every((entry) => entry.status === 200 && entry.cache === 'hit'), 'served from the bucket');
    } finally {
      await upstream.start();
    }
  });

  it('collects what a moved tag left behind, from the bucket, online and offline; verify hashes the bucket', async () => {
    await pushLayout(second, `127.0.0.1:${upstream.port}/team/app:v1`);
    await pullExactly(second, 'pull-3');
    await mirror.fillsSettled();
    const old = image(first);
    const current = image(second);
    const [base, oldLayer, oldSmall] = old.layerDigests;
    assert.ok(base !== undefined && oldLayer !== undefined && oldSmall !== undefined);

    const response = await fetch(`${mirror.url}/_regmirror/gc`, { method: 'POST' });
    assert.equal(response.status, 200);
    const answer = (await response.json()) as GcAnswer;
    assert.deepEqual(answer.removed, { manifest: 1, blob: 3, orphan_file: 0, orphan_record: 0, temporary: 0 }, 'the old manifest, its config and its two own layers');
    assert.equal(answer.freedBytes, old.manifestBytes.length + old.configBytes.length + (old.layerSizes[1] ?? 0) + (old.layerSizes[2] ?? 0));
    const objects = await bucketKeys(client, PREFIX);
    for (const gone of [old.manifestDigest, old.configDigest, oldLayer, oldSmall]) assert.ok(!objects.includes(contentObject(gone)), `${gone} left the bucket`);
    for (const kept of [current.manifestDigest, current.configDigest, ...current.layerDigests]) assert.ok(objects.includes(contentObject(kept)), `${kept} stays`);

    // An object no record names (a crash between upload and record): the offline gc removes it from the bucket.
    const orphan = Buffer.from('an orphan in the bucket');
    // Written as the store writes (with the time to the millisecond: S3's Last-Modified has seconds, rounded up here).
    await client.send(new PutObjectCommand({ Bucket: BUCKET, Key: contentObject(sha256Digest(orphan)), Body: orphan, Metadata: { 'regmirror-written': String(Date.now()) } }));
    await mirror.stop();
    try {
      const gc = await runRegmirror(['gc', '--data', mirror.dataDir], { env: { ...environment, REGMIRROR_GC_GRACE: '0' } });
      assert.equal(gc.code, 0, gc.stderr);
      assert.match(gc.stdout, new RegExp(`^removed orphan file ${sha256Digest(orphan)} \\(${orphan.length} bytes\\)$`, 'm'));
      assert.ok(!(await bucketKeys(client, PREFIX)).includes(contentObject(sha256Digest(orphan))));

      const verify = await runRegmirror(['verify', '--data', mirror.dataDir], { env: environment });
      assert.equal(verify.code, 0, `${verify.stdout}\n${verify.stderr}`);
      const rows = metadataRows(mirror.dataDir);
      assert.match(verify.stdout, new RegExp(`: ${rows.blobs.length + rows.manifests.length} content files and 0 v1 layers hashed .*all well$`, 'm'));
    } finally {
      await mirror.start();
    }
  });

  it('refuses to start on a bucket that is not there, in one line', async () => {
    const dataDir = await makeTempDir('s3-store-missing-');
    try {
      const refused = await runRegmirror(['serve', '--listen', '127.0.0.1:0', '--data', dataDir], { env: { ...environment, REGMIRROR_STORAGE_S3_BUCKET: 'no-such-bucket' } });
      assert.equal(refused.code, 1);
      assert.match(refused.stderr, /^regmirror: cannot start: storage open bucket of no-such-bucket failed \(NoSuchBucket\)/m);
      assert.ok(!refused.stderr.includes('    at '), 'no stack');
      assert.ok(!refused.stderr.includes(SWIFT_SECRET_KEY));
    } finally {
      await removeDir(dataDir);
    }
  });
});

describe('a process on the fs store', () => {
  it('does not load the AWS SDK: dist/cli.js reaches it by no static import', async () => {
    const dist = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'dist');
    const seen = new Set<string>();
    const packages = new Set<string>();
    const pending = [path.join(dist, 'cli.js')];
    for (let file = pending.pop(); file !== undefined; file = pending.pop()) {
      if (seen.has(file)) continue;
      seen.add(file);
      // import … from '…' and export … from '…'; `await import('…')` is not static and is left out.
      for (const match of (await readFile(file, 'utf8')).matchAll(/^\s*(?:import|export)\s[^;]*?\bfrom\s+'([^']+)'|^\s*import\s+'([^']+)'/gms)) {
        const specifier = match[1] ?? match[2] ?? '';
        if (specifier.startsWith('.')) pending.push(path.resolve(path.dirname(file), specifier));
        else packages.add(specifier);
      }
    }
    assert.ok(seen.has(path.join(dist, 'store', 'open-object-store.js')) && packages.has('fastify'), 'the walk follows the imports');
    assert.ok(!seen.has(path.join(dist, 'store', 's3-store.js')));
    assert.deepEqual([...packages].filter((name) => name.startsWith('@aws-sdk/') || name.startsWith('@smithy/')), []);
  });
});
