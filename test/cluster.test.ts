// Three regmirror processes on one PostgreSQL database and one Swift bucket (cluster mode): they see each other in
// /_regmirror/status; 3 nodes × 4 skopeo clients pulling one cold image at once from distribution 2.8.2 fetch each
// blob once from the upstream (its access log), byte for byte; the internal fill endpoint wants the shared secret;
// and a node killed (-9) in the middle of a slow fill leaves its followers on the other nodes with a cut connection
// or the verified blob, never a complete-looking wrong one, and the next request fills again.

import assert from 'node:assert/strict';
import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { startClusterKit, startClusterNode, type ClusterKit } from './support/cluster.js';
import type { Distribution } from './support/distribution.js';
import { rawGet, sha256Of, startFaultUpstream, waitUntil, type FaultUpstream, type RawResponse } from './support/fault-upstream.js';
import { buildImageLayout, deterministicBytes, pushLayout, sha256Digest, type BuiltLayout } from './support/images.js';
import { freePort, getText } from './support/ports.js';
import type { Postgres, PostgresSchema } from './support/postgres.js';
import type { Regmirror } from './support/regmirror.js';
import { copyToOci } from './support/skopeo.js';
import type { Swift } from './support/swift.js';

const BUCKET = 'regmirror';
const SECRET = 'cluster-secret-for-the-tests-0123456789';

interface StatusAnswer {
  cluster: { self: string; advertise: string; nodes: { id: string; advertise: string; alive: boolean; self: boolean }[] };
}

describe('three regmirror nodes on one database and one bucket', { timeout: 170_000 }, () => {
  let kit: ClusterKit | undefined;
  let database: Postgres;
  let swift: Swift;
  let upstream: Distribution;
  let work: string;
  let layout: BuiltLayout;
  let secretFile: string;
  const nodes: Regmirror[] = [];

  /** A node of the cluster on a port chosen first (its advertise URL names it), on a prefix and schema given. */
  const startNode = (upstreams: string[], prefix: string, schema: PostgresSchema, extra: NodeJS.ProcessEnv = {}): Promise<Regmirror> =>
    startClusterNode({ swift, bucket: BUCKET, secretFile }, upstreams, prefix, schema, extra);

  before(async () => {
    kit = await startClusterKit('cluster-', SECRET, BUCKET);
    ({ work, secretFile, database, swift, upstream } = kit);
    // A layer larger than an S3 part (8 MiB), a few small ones, and the config.
    layout = await buildImageLayout(path.join(work, 'image'), 'v1', [
      { layers: [{ size: 12_000_000, seed: 7101 }, { size: 2_000_000, seed: 7102 }, { size: 300_000, seed: 7103 }, { size: 900, seed: 7104 }] },
    ]);
    await pushLayout(layout, `127.0.0.1:${upstream.port}/team/app:v1`);
    const schema = await database.schema();
    for (let index = 0; index < 3; index++) nodes.push(await startNode([upstream.url], 'cache/', schema));
  });

  after(async () => {
    if (process.env.DEBUG_MIRROR) for (const node of nodes) console.log(node.lines().join('\n'));
    for (const node of nodes) await node.destroy();
    await kit?.destroy();
  });

  it('lists every node in /_regmirror/status', async () => {
    const answer = JSON.parse((await getText(`${nodes[0]?.url}/_regmirror/status`)).body) as StatusAnswer;
    assert.equal(answer.cluster.nodes.length, 3, JSON.stringify(answer.cluster));
    assert.ok(answer.cluster.nodes.every((node) => node.alive));
    assert.deepEqual(answer.cluster.nodes.map((node) => node.advertise).sort(), nodes.map((node) => node.url).sort());
    assert.equal(answer.cluster.nodes.filter((node) => node.self).length, 1);
    assert.equal(answer.cluster.advertise, nodes[0]?.url);
  });

  it('3 nodes × 4 skopeo clients pulling one cold image at once: each blob is fetched once from the upstream, every pull byte for byte', async () => {
    const pulls = Array.from({ length: 12 }, async (_, index) => {
      const node = nodes[index % 3];
      assert.ok(node !== undefined);
      const out = path.join(work, `pull-${index}`);
      await copyToOci(`docker://${node.host}/team/app:v1`, out, 'v1', { timeoutMs: 120_000 });
      return out;
    });
    const outputs = await Promise.all(pulls);
    const image = layout.images[0];
    assert.ok(image !== undefined);
    const blobs = [...image.layerDigests, image.configDigest];
    for (const out of outputs) {
      for (const digest of blobs) {
        const copied = await readFile(path.join(out, 'blobs', 'sha256', digest.slice(7)));
        const original = await readFile(path.join(layout.dir, 'blobs', 'sha256', digest.slice(7)));
        assert.ok(copied.equals(original), `${digest} in ${out} differs`);
      }
    }
    await upstream.settle();
    for (const digest of blobs) {
      assert.equal(upstream.countRequests('GET', new RegExp(`^/v2/team/app/blobs/${digest}$`)), 1, `${digest} fetched once from the upstream`);
    }
    // One committed fill per blob across the three nodes.
    for (const node of nodes) await node.fillsSettled();
    let committed = 0;
    for (const node of nodes) committed += await node.metricValue('regmirror_fills_total', { outcome: 'committed' });
    assert.equal(committed, blobs.length);
    // How many answers streamed another node's fill (a figure, not a promise: it depends on who asked first).
    const streamed = nodes.flatMap((node) => node.accessEntries()).filter((entry) => entry.path.startsWith('/_regmirror/cluster/fills/') && entry.status === 200);
    let followedStreams = 0;
    for (const node of nodes) followedStreams += await node.metricValue('regmirror_cluster_follows_total', { outcome: 'streamed' });
    assert.equal(followedStreams, streamed.length, 'every stream a filler served was counted by the node that asked for it');
    console.log(`fill streams between nodes: ${streamed.length}; manifest GETs upstream: ${upstream.countRequests('GET', /^\/v2\/team\/app\/manifests\//)} (per node, not coordinated)`);
  });

  it('a rate-limited upstream (429) seen by one node fails fast on the others, without their asking it', async () => {
    const limited = await startFaultUpstream({ blobs: [deterministicBytes(1_000, 7301)], repository: 'limited/app' });
    const schema = await database.schema();
    const pair: Regmirror[] = [];
    try {
      for (let index = 0; index < 2; index++) pair.push(await startNode([limited.url], 'limited/', schema));
      const [seeing, other] = pair;
      assert.ok(seeing !== undefined && other !== undefined);
      limited.setMode('status-429', undefined, { retryAfterS: 120 });
      const first = await rawGet(`${seeing.url}/v2/limited/app/blobs/${limited.blobDigests[0] ?? ''}`);
      assert.equal(first.status, 429);
      const asked = limited.requests().length;
      const circuitOf = async (node: Regmirror): Promise<{ circuit: string; reason?: string; lastError?: { message: string } }> => {
        const body = JSON.parse((await getText(`${node.url}/_regmirror/status`)).body) as { upstreams: Array<{ circuit: string; reason?: string; lastError?: { message: string } }> };
        return body.upstreams[0] ?? { circuit: 'none' };
      };
      await waitUntil('the other node adopts the opening', async () => (await circuitOf(other)).circuit === 'open', 10_000);
      const adopted = await circuitOf(other);
      assert.equal(adopted.reason, 'rate-limited');
      assert.match(adopted.lastError?.message ?? '', /seen by another node/);
      const second = await rawGet(`${other.url}/v2/limited/app/manifests/v1`);
      assert.equal(second.status, 429, 'failed fast');
      assert.ok(Number(second.headers['retry-after']) > 60, String(second.headers['retry-after']));
      assert.equal(limited.requests().length, asked, 'the other node did not ask the upstream');
    } finally {
      for (const node of pair) await node.destroy();
      await limited.stop();
    }
  });

  it('refuses the internal fill endpoint without the shared secret (401), with a wrong one (403); 404 when no such fill runs', async () => {
    const node = nodes[1];
    assert.ok(node !== undefined);
    const digest = sha256Digest(Buffer.from('nothing is filling this'));
    const target = `${node.url}/_regmirror/cluster/fills/${digest}`;
    assert.equal((await rawGet(target)).status, 401);
    assert.equal((await rawGet(target, { headers: { authorization: 'Bearer wrong-secret-of-the-same-kind' } })).status, 403);
    assert.equal((await rawGet(target, { headers: { authorization: `Bearer ${SECRET}` } })).status, 404);
    assert.equal((await rawGet(`${node.url}/_regmirror/cluster/fills/not-a-digest`, { headers: { authorization: `Bearer ${SECRET}` } })).status, 400);
  });

  it('a lease connection the server ended is opened again for the next fill (and the loss is logged)', async () => {
    const other = await buildImageLayout(path.join(work, 'other'), 'v1', [{ layers: [{ size: 500_000, seed: 7401 }] }]);
    await pushLayout(other, `127.0.0.1:${upstream.port}/team/other:v1`);
    const ended = await database.query<{ ended: boolean }>("SELECT pg_terminate_backend(pid) AS ended FROM pg_stat_activity WHERE application_name = 'regmirror-leases'");
    assert.equal(ended.filter((row) => row.ended).length, 3, 'one lease session per node');
    const node = nodes[1];
    const layer = other.images[0]?.layerDigests[0];
    assert.ok(node !== undefined && layer !== undefined);
    await waitUntil('the node saw its lease session end', () => node.lines().some((line) => line.includes('the lease connection was lost')), 10_000);
    const answer = await rawGet(`${node.url}/v2/team/other/blobs/${layer}`, { timeoutMs: 30_000 });
    assert.equal(answer.status, 200);
    assert.ok(answer.complete);
    assert.equal(sha256Of(answer.body), layer);
    const sessions = await database.query<{ count: string }>("SELECT count(*) AS count FROM pg_stat_activity WHERE application_name = 'regmirror-leases'");
    assert.equal(Number(sessions[0]?.count), 1, 'the node that filled opened a new lease session');
  });

  interface SlowFill {
    slow: FaultUpstream;
    nodes: Regmirror[];
    digest: string;
    blobPath: string;
    /** The first node's own client, which started the fill (an Error once the node is killed). */
    first: Promise<RawResponse | Error>;
  }

  /**
   * Nodes on a fresh schema and prefix before a fault upstream that sends one blob slowly, the first node's client
   * already receiving it (so the first node holds the lease); run() gets them, and they are stopped after.
   */
  async function withSlowFill(blob: Buffer, prefix: string, firstNodeEnv: NodeJS.ProcessEnv, count: number, run: (fill: SlowFill) => Promise<void>): Promise<void> {
    const slow = await startFaultUpstream({ blobs: [blob], repository: 'slow/app', dripBytes: 256 * 1024, dripIntervalMs: 100 });
    const schema = await database.schema();
    const started: Regmirror[] = [];
    try {
      for (let index = 0; index < count; index++) started.push(await startNode([slow.url], prefix, schema, index === 0 ? firstNodeEnv : {}));
      const digest = slow.blobDigests[0] ?? '';
      slow.setMode('slow-drip', digest);
      const blobPath = `/v2/slow/app/blobs/${digest}`;
      let fillerBytes = 0;
      const first = rawGet(`${started[0]?.url ?? ''}${blobPath}`, { timeoutMs: 60_000, onChunk: (chunk) => (fillerBytes += chunk.length) }).catch((error: unknown) => error as Error);
      await waitUntil('the first node is filling', () => fillerBytes > 0, 20_000);
      await run({ slow, nodes: started, digest, blobPath, first });
    } finally {
      for (const node of started) await node.destroy();
      await slow.stop();
    }
  }

  const unstreamable: { name: string; prefix: string; firstNodeEnv: () => Promise<NodeJS.ProcessEnv>; logged: string }[] = [
    {
      name: 'a filler the others cannot reach (it announces an address nobody listens on)',
      prefix: 'wait/',
      firstNodeEnv: async () => ({ REGMIRROR_CLUSTER_ADVERTISE: `http://127.0.0.1:${await freePort()}` }),
      logged: 'the filling node cannot be reached',
    },
    {
      name: 'a filler with another secret (it answers 403)',
      prefix: 'secret/',
      firstNodeEnv: async () => {
        const other = path.join(work, 'other-secret');
        await writeFile(other, 'another-secret-of-more-than-16\n');
        return { REGMIRROR_CLUSTER_SECRET_FILE: other };
      },
      logged: 'a node refused the shared secret',
    },
  ];
  for (const { name, prefix, firstNodeEnv, logged } of unstreamable) it(`${name}: the others wait for its commit and read the bucket (a Range request too), one upstream GET`, async () => {
    const blob = deterministicBytes(3 * 1024 * 1024, 7301);
    await withSlowFill(blob, prefix, await firstNodeEnv(), 2, async ({ slow, nodes: [, other], digest, blobPath, first }) => {
      assert.ok(other !== undefined);
      const [whole, range, original] = await Promise.all([
        rawGet(`${other.url}${blobPath}`, { timeoutMs: 60_000 }),
        rawGet(`${other.url}${blobPath}`, { timeoutMs: 60_000, headers: { range: 'bytes=100-199' } }),
        first,
      ]);
      for (const answer of [whole, original]) {
        assert.ok(!(answer instanceof Error), answer instanceof Error ? answer.message : '');
        assert.equal(answer.status, 200);
        assert.ok(answer.complete);
        assert.equal(sha256Of(answer.body), digest);
      }
      assert.equal(range.status, 206);
      assert.ok(range.body.equals(blob.subarray(100, 200)));
      assert.equal(slow.count('GET', new RegExp(`^${blobPath}$`)), 1, 'one upstream GET');
      assert.ok(other.lines().some((line) => line.includes(logged)), 'the other node tried the filler first');
      assert.equal(await other.metricValue('regmirror_cluster_follows_total', { outcome: 'waited' }), 2, 'both requests waited');
    });
  });

  it('kill -9 of the filling node mid-blob: followers on the other nodes are cut or get the verified blob, never a wrong one; the next GET fills again', async () => {
    const big = deterministicBytes(6 * 1024 * 1024, 7201);
    await withSlowFill(big, 'kill/', {}, 3, async ({ slow, nodes: [filler, second, third], digest, blobPath, first }) => {
      assert.ok(filler !== undefined && second !== undefined && third !== undefined);
      const followerBytes = [0, 0];
      const followers = [second, third].map((node, index) =>
        rawGet(`${node.url}${blobPath}`, { timeoutMs: 60_000, onChunk: (chunk) => (followerBytes[index] = (followerBytes[index] ?? 0) + chunk.length) }).catch((error: unknown) => error as Error),
      );
      await waitUntil('both followers have bytes', () => followerBytes.every((count) => count > 0), 20_000);
      // Bytes of a blob nobody has committed: they can only come streamed from the filler.
      for (const node of [second, third]) assert.equal(await node.metricValue('regmirror_cluster_follows_total', { outcome: 'streamed' }), 1);
      await filler.kill9();
      const answers = await Promise.all(followers);
      await first;
      for (const answer of answers) {
        if (answer instanceof Error) continue;
        if (answer.complete) assert.equal(sha256Of(answer.body), digest, 'a complete answer is the verified blob');
        else assert.ok(answer.body.length < big.length, 'a cut answer is short');
      }
      assert.ok(answers.some((answer) => !(answer instanceof Error) && !answer.complete), 'the followers were cut with the filler');
      assert.equal(slow.count('GET', new RegExp(`^${blobPath}$`)), 1, 'one upstream GET while the filler lived');
      // The next request, on another node, takes the lease the database freed and fills again.
      slow.clearModes();
      const again = await rawGet(`${second.url}${blobPath}`, { timeoutMs: 60_000 });
      assert.equal(again.status, 200);
      assert.ok(again.complete);
      assert.equal(sha256Of(again.body), digest);
    });
  });
});
