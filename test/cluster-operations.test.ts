// Cluster mode in operation (docs/cluster.md): three regmirror nodes on one PostgreSQL database and one Swift bucket.
// A node started while the upstream is down serves what the others cached (by tag, stale-if-error, and by digest);
// three nodes pulling while eviction and GC run fail no pull, and leave the bucket and the records in agreement;
// a filler killed (-9) in the middle of a multipart upload leaves an upload that GC on another node aborts, and no
// object of the digest but the verified one filled again.

import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { GetObjectCommand, HeadObjectCommand, ListMultipartUploadsCommand } from '@aws-sdk/client-s3';
import type { Digest } from '../src/oci/digest.js';
import { contentKey } from '../src/store/layout.js';
import { startClusterKit, startClusterNode, type ClusterKit } from './support/cluster.js';
import { startDistribution, type Distribution } from './support/distribution.js';
import { rawGet, sha256Of, startFaultUpstream, waitUntil } from './support/fault-upstream.js';
import { buildImageLayout, deterministicBytes, pushLayout, type BuiltLayout } from './support/images.js';
import { getText } from './support/ports.js';
import type { Postgres, PostgresSchema } from './support/postgres.js';
import { runRegmirror, type Regmirror } from './support/regmirror.js';
import { copyToOci } from './support/skopeo.js';
import { s3StorageEnvironment, type Swift } from './support/swift.js';
import { makeTempDir, removeDir } from './support/temp.js';

const BUCKET = 'regmirror';
const SECRET = 'cluster-operations-secret-0123456789';

/** Every blob of the layout's image (manifest, config, layers) in the OCI layout a pull wrote to out, byte for byte. */
async function assertPulledWhole(out: string, layout: BuiltLayout): Promise<void> {
  const image = layout.images[0];
  assert.ok(image !== undefined);
  for (const digest of [image.manifestDigest, image.configDigest, ...image.layerDigests]) {
    const file = (dir: string): string => path.join(dir, 'blobs', 'sha256', digest.slice('sha256:'.length));
    const copied = await readFile(file(out)).catch(() => undefined);
    assert.ok(copied !== undefined, `${digest} is missing from ${out}`);
    assert.ok(copied.equals(await readFile(file(layout.dir))), `${digest} in ${out} differs`);
  }
}

describe('cluster operations: an upstream down, eviction and GC under pulls, a filler killed mid-upload', { timeout: 240_000 }, () => {
  let kit: ClusterKit | undefined;
  let database: Postgres;
  let swift: Swift;
  let upstream: Distribution;
  let work: string;
  let secretFile: string;

  const startNode = (upstreams: string[], prefix: string, schema: PostgresSchema, extra: NodeJS.ProcessEnv = {}): Promise<Regmirror> =>
    startClusterNode({ swift, bucket: BUCKET, secretFile }, upstreams, prefix, schema, extra);

  /** The multipart uploads under prefix that were neither completed nor aborted. */
  async function unfinishedUploads(prefix: string): Promise<string[]> {
    const s3 = swift.client();
    try {
      const listed = await s3.send(new ListMultipartUploadsCommand({ Bucket: BUCKET, Prefix: prefix }));
      return (listed.Uploads ?? []).map((upload) => upload.Key ?? '');
    } finally {
      s3.destroy();
    }
  }

  /** The object of a digest under prefix: its bytes, or undefined when there is none. */
  async function storedObject(prefix: string, digest: string): Promise<Buffer | undefined> {
    const s3 = swift.client();
    const key = `${prefix}${contentKey(digest as Digest)}`;
    try {
      const head = await s3.send(new HeadObjectCommand({ Bucket: BUCKET, Key: key })).catch((error: unknown) => {
        if ((error as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode === 404) return undefined;
        throw error;
      });
      if (head === undefined) return undefined;
      const object = await s3.send(new GetObjectCommand({ Bucket: BUCKET, Key: key }));
      return Buffer.from((await object.Body?.transformToByteArray()) ?? []);
    } finally {
      s3.destroy();
    }
  }

  /** The sum over nodes of one metric series. */
  async function summed(nodes: Regmirror[], name: string, labels: Record<string, string> = {}): Promise<number> {
    let total = 0;
    for (const node of nodes) total += await node.metricValue(name, labels);
    return total;
  }

  before(async () => {
    kit = await startClusterKit('cluster-operations-', SECRET, BUCKET);
    ({ work, secretFile, database, swift, upstream } = kit);
  });

  after(async () => {
    await kit?.destroy();
  });

  it('a node started while the upstream is down serves what the others cached: by tag (stale-if-error) and by digest, byte for byte', async () => {
    // An upstream of its own, stopped halfway; the third node is given its URL, so its registry name (the URL's host,
    // which keys the cached tags) is the one the first two cached under.
    const offline = await startDistribution();
    const schema = await database.schema();
    const started: Regmirror[] = [];
    try {
      const layout = await buildImageLayout(path.join(work, 'offline-image'), 'v1', [{ layers: [{ size: 9_000_000, seed: 8101 }, { size: 200_000, seed: 8102 }] }]);
      await pushLayout(layout, `127.0.0.1:${offline.port}/team/offline:v1`);
      // Tags fresh for 1 s only: the third node finds the tag stale and must ask the upstream first.
      const tagFreshness = { REGMIRROR_CACHE_TAG_FRESHNESS: '1s' };
      for (let index = 0; index < 2; index++) started.push(await startNode([offline.url], 'offline/', schema, tagFreshness));
      await Promise.all(started.map((node, index) => copyToOci(`docker://${node.host}/team/offline:v1`, path.join(work, `offline-warm-${index}`), 'v1')));
      for (const node of started) await node.fillsSettled();
      const cachedAt = Date.now();
      await offline.stop();

      const third = await startNode([offline.url], 'offline/', schema, tagFreshness);
      started.push(third);
      await new Promise((resolve) => setTimeout(resolve, Math.max(0, cachedAt + 1_500 - Date.now())));
      const image = layout.images[0];
      assert.ok(image !== undefined);
      const byTag = path.join(work, 'offline-by-tag');
      const byDigest = path.join(work, 'offline-by-digest');
      await copyToOci(`docker://${third.host}/team/offline:v1`, byTag, 'v1', { timeoutMs: 60_000 });
      await copyToOci(`docker://${third.host}/team/offline@${image.manifestDigest}`, byDigest, 'v1', { timeoutMs: 60_000 });
      await assertPulledWhole(byTag, layout);
      await assertPulledWhole(byDigest, layout);

      await third.settle();
      const tagAnswers = third.accessEntries().filter((entry) => entry.path === '/v2/team/offline/manifests/v1');
      assert.ok(tagAnswers.length > 0, 'the tag was asked of the third node');
      for (const answer of tagAnswers) assert.deepEqual([answer.status, answer.cache], [200, 'stale'], JSON.stringify(answer));
      assert.ok(third.lines().some((line) => line.includes('serving stale tag')), 'the third node logged the stale tag it served');
      assert.equal(await third.metricValue('regmirror_fills_total'), 0, 'the third node filled nothing: every blob came from the bucket');
      const blobAnswers = third.accessEntries().filter((entry) => entry.method === 'GET' && entry.path.startsWith('/v2/team/offline/blobs/'));
      assert.ok(blobAnswers.length >= 3 && blobAnswers.every((entry) => entry.status === 200 && entry.cache === 'hit'), JSON.stringify(blobAnswers));
    } finally {
      for (const node of started) await node.destroy();
      await offline.destroy();
    }
  });

  it('three nodes pulling six images (by tag and by digest) while eviction and GC run: 0 failed pulls, eviction removes, the bucket and the records agree', async () => {
    const images = 6;
    const rounds = 8;
    const prefix = 'churn/';
    const layouts: BuiltLayout[] = [];
    for (let index = 0; index < images; index++) {
      // A base layer the six share, and one of each image's own: about 1 MB an image, 4 MB for all.
      const layout = await buildImageLayout(path.join(work, `churn-${index}`), 'v1', [{ layers: [{ size: 400_000, seed: 8200 }, { size: 600_000, seed: 8201 + index }] }]);
      await pushLayout(layout, `127.0.0.1:${upstream.port}/churn/app${index}:v1`);
      layouts.push(layout);
    }
    const schema = await database.schema();
    const maxSizeBytes = 2 * 1024 * 1024;
    const churn = {
      REGMIRROR_CACHE_MAX_SIZE: '2MiB',
      // Everything here is read within seconds: a short window lets eviction choose among what was read a second ago.
      REGMIRROR_CACHE_IN_USE_WINDOW: '1s',
      REGMIRROR_GC_INTERVAL: '500ms',
      REGMIRROR_GC_GRACE: '1s',
      REGMIRROR_METADATA_POOL_SIZE: '4',
    };
    const nodes: Regmirror[] = [];
    try {
      for (let index = 0; index < 3; index++) nodes.push(await startNode([upstream.url], prefix, schema, churn));
      const failures: string[] = [];
      let pulls = 0;
      /** Image `which` through node nodeIndex (the first half by tag, the second by digest), checked byte for byte. */
      const pull = async (label: string, nodeIndex: number, which: number): Promise<void> => {
        const node = nodes[nodeIndex];
        const layout = layouts[which];
        const image = layout?.images[0];
        assert.ok(node !== undefined && layout !== undefined && image !== undefined);
        const reference = which < images / 2 ? `churn/app${which}:v1` : `churn/app${which}@${image.manifestDigest}`;
        const out = path.join(work, `churn-pull-${label}-${which}`);
        pulls += 1;
        try {
          await copyToOci(`docker://${node.host}/${reference}`, out, 'v1', { timeoutMs: 60_000 });
          await assertPulledWhole(out, layout);
        } catch (error) {
          failures.push(`${label}, node ${nodeIndex}, ${reference}: ${(error as Error).message}`);
        } finally {
          await removeDir(out);
        }
      };
      // Every image once a round, two at a time on each node, through another node each round. The first half by tag
      // (tagged: only eviction removes them); the second by digest (untagged: GC removes them after its grace).
      for (let round = 0; round < rounds; round++) await Promise.all(layouts.map((_, which) => pull(`round ${round}`, (which + round) % nodes.length, which)));
      assert.deepEqual(failures, [], `${failures.length} of ${pulls} pulls failed`);
      // Each node's connections: its metadata pool (4 here), the cluster's pool (4), its lease session, and one per
      // whole-cache task it runs (eviction, GC). A turn refused because another node runs the task keeps none.
      const [row] = await database.query<{ count: string }>("SELECT count(*) AS count FROM pg_stat_activity WHERE backend_type = 'client backend' AND application_name LIKE 'regmirror%'");
      const connections = Number(row?.count);
      assert.ok(connections <= nodes.length * (4 + 4 + 1 + 2), `${connections} connections to PostgreSQL`);

      // Once the pulls stop, eviction brings the cache within its bound.
      const held = async (): Promise<number> => {
        const status = JSON.parse((await getText(`${nodes[0]?.url ?? ''}/_regmirror/status`)).body) as { cache: { blobBytes: number; manifestBytes: number } };
        return status.cache.blobBytes + status.cache.manifestBytes;
      };
      await waitUntil('the cache is within cache.maxSize', async () => (await held()) <= maxSizeBytes, 20_000);
      const evicted = await summed(nodes, 'regmirror_evictions_total');
      const evictedBytes = await summed(nodes, 'regmirror_evicted_bytes_total');
      const gcRuns = await summed(nodes, 'regmirror_gc_runs_total', { outcome: 'done' });
      const gcRemoved = await summed(nodes, 'regmirror_gc_removed_total');
      assert.ok(evicted > 0 && evictedBytes > 0, 'eviction removed images');
      assert.ok(gcRuns > 0, 'GC ran');
      assert.equal(await summed(nodes, 'regmirror_eviction_runs_total', { outcome: 'failed' }), 0, 'no eviction run failed');
      assert.equal(await summed(nodes, 'regmirror_gc_runs_total', { outcome: 'failed' }), 0, 'no GC run failed');
      // One more pull by tag: the most recently read image, tagged, is what eviction and GC leave last.
      await pull('last', 0, 0);
      assert.deepEqual(failures, [], 'the last pull failed');
      for (const node of nodes) await node.fillsSettled();
      console.log(`${pulls} pulls, 0 failed; ${connections} connections to PostgreSQL; ${evicted} images evicted (${evictedBytes} bytes); ${gcRuns} GC runs removed ${gcRemoved}; ${await held()} bytes held at the end`);

      for (const node of nodes.splice(0)) await node.destroy();
      // Every object of the bucket under the prefix has its record and every record its object, every object hashed.
      const checkDir = await makeTempDir('cluster-operations-verify-');
      try {
        const verify = await runRegmirror(['verify', '--data', checkDir], {
          env: { ...s3StorageEnvironment(swift, BUCKET, prefix), REGMIRROR_METADATA_DRIVER: 'postgres', REGMIRROR_METADATA_URL: schema.url },
        });
        assert.equal(verify.code, 0, `${verify.stdout}\n${verify.stderr}`);
        assert.match(verify.stdout, /: [1-9]\d* content files and 0 v1 layers hashed .*, [1-9]\d* records checked; all well/);
      } finally {
        await removeDir(checkDir);
      }
      assert.deepEqual(await unfinishedUploads(prefix), [], 'no unfinished multipart upload');
    } finally {
      for (const node of nodes) await node.destroy();
    }
  });

  it('kill -9 of the filler in the middle of a multipart upload: GC on another node aborts the upload; no object of the digest but the verified one filled again', async () => {
    // More than two 8 MiB parts, sent at about 10 MiB/s: the filler's upload has parts when it is killed.
    const big = deterministicBytes(20 * 1024 * 1024, 8301);
    const slow = await startFaultUpstream({ blobs: [big], repository: 'slow/app', dripBytes: 1024 * 1024, dripIntervalMs: 100 });
    const prefix = 'crash/';
    const schema = await database.schema();
    const started: Regmirror[] = [];
    try {
      const digest = slow.blobDigests[0] ?? '';
      const blobPath = `/v2/slow/app/blobs/${digest}`;
      const filler = await startNode([slow.url], prefix, schema);
      started.push(filler);
      // A temporary untouched for max(gc.grace, timeouts.fill, timeouts.uploadIdle) = 4 s is abandoned on this node.
      const collector = await startNode([slow.url], prefix, schema, { REGMIRROR_GC_GRACE: '1s', REGMIRROR_TIMEOUTS_FILL: '4s', REGMIRROR_TIMEOUTS_UPLOAD_IDLE: '1s' });
      started.push(collector);
      slow.setMode('slow-drip', digest);
      const first = rawGet(`${filler.url}${blobPath}`, { timeoutMs: 60_000 }).catch((error: unknown) => error as Error);
      await waitUntil('the filler has a multipart upload in the bucket', async () => (await unfinishedUploads(prefix)).length > 0, 30_000);
      await filler.kill9();
      const cut = await first;
      assert.ok(cut instanceof Error || !cut.complete, 'the filler’s client was cut');

      assert.deepEqual(await unfinishedUploads(prefix), [`${prefix}${contentKey(digest as Digest)}`], 'the killed filler left its upload unfinished');
      assert.equal(await storedObject(prefix, digest), undefined, 'and no object of the digest');
      // The upload is abandoned 4 s after its last part: a GC run now leaves it (it may be a live node's), a later
      // one aborts it.
      const collect = async (): Promise<{ removed: { temporary: number } }> => {
        const response = await fetch(`${collector.url}/_regmirror/gc`, { method: 'POST' });
        assert.equal(response.status, 200);
        return (await response.json()) as { removed: { temporary: number } };
      };
      assert.equal((await collect()).removed.temporary, 0, 'GC leaves an upload written to a moment ago');
      assert.equal((await unfinishedUploads(prefix)).length, 1);
      await waitUntil(
        'GC on the other node aborted the upload',
        async () => {
          await collect();
          if ((await unfinishedUploads(prefix)).length === 0) return true;
          await new Promise((resolve) => setTimeout(resolve, 250));
          return false;
        },
        20_000,
      );
      assert.equal(await collector.metricValue('regmirror_gc_removed_total', { kind: 'temporary' }), 1, 'GC counted the upload it aborted');
      assert.equal(await storedObject(prefix, digest), undefined, 'an aborted upload leaves no object');

      // The next GET fills again; the object it leaves is the whole blob, verified.
      slow.clearModes();
      const again = await rawGet(`${collector.url}${blobPath}`, { timeoutMs: 60_000 });
      assert.equal(again.status, 200);
      assert.ok(again.complete);
      assert.equal(sha256Of(again.body), digest);
      await collector.fillsSettled();
      const stored = await storedObject(prefix, digest);
      assert.ok(stored !== undefined, 'the refill committed its object');
      assert.equal(sha256Of(stored), digest);
      assert.equal(stored.length, big.length);
      assert.deepEqual(await unfinishedUploads(prefix), [], 'the refill completed its upload');
      assert.equal(slow.count('GET', new RegExp(`^${blobPath}$`)), 2, 'one upstream GET per fill');
    } finally {
      for (const node of started) await node.destroy();
      await slow.stop();
    }
  });
});
