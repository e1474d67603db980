// Three regmirror processes on one PostgreSQL database and one Swift bucket (cluster mode): they see each other in
// /_regmirror/status; 3 nodes × 4 skopeo clients pulling one cold image at once from distribution 2.8.2 fetch each
// blob once from the upstream (its access log), byte for byte; the internal fill endpoint wants the shared secret;
// and a node killed (-9) in the middle of a slow fill leaves its followers on the other nodes with a cut connection
// or the verified blob, never a complete-looking wrong one, and the next request fills again.

import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { clusterNodeEnvironment, startClusterKit, startClusterNode, type ClusterKit } from './support/cluster.js';
import type { Distribution } from './support/distribution.js';
import { rawGet, sha256Of, startFaultUpstream, waitUntil, type FaultUpstream, type RawResponse } from './support/fault-upstream.js';
import { buildImageLayout, deterministicBytes, pushLayout, sha256Digest, type BuiltLayout } from './support/images.js';
import { freePort, getText } from './support/ports.js';
import type { Postgres, PostgresSchema } from './support/postgres.js';
import { runRegmirror, startRegmirror, type Regmirror } from './support/regmirror.js';
import { Agent, request } from 'undici';
import { makeTestCa } from './support/certificates.js';
import { startFakeV1Source } from './support/fake-v1-source.js';
import { startNginx } from './support/nginx.js';
import { sendError, startScriptedUpstream } from './support/scripted-upstream.js';
import { copyToOci, skopeo } from './support/skopeo.js';
import { makeV1Chain } from './support/v1-client.js';
import type { Swift } from './support/swift.js';
import { makeTempDir, removeDir } from './support/temp.js';

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
  let mainSchema: PostgresSchema;

  /** The settings every node of a cluster shares, with this node's advertise address. */
  const nodeEnvironment = (advertise: string, prefix: string, schema: PostgresSchema): NodeJS.ProcessEnv =>
    clusterNodeEnvironment({ swift, bucket: BUCKET, secretFile }, prefix, schema, advertise);

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
    mainSchema = await database.schema();
    for (let index = 0; index < 3; index++) nodes.push(await startNode([upstream.url], 'cache/', mainSchema));
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

  it('refuses offline gc and verify --repair while nodes of the cluster run (exit 2, naming them); a dry run goes on', async () => {
    const dataDir = await makeTempDir('cluster-offline-');
    try {
      const env = nodeEnvironment('http://127.0.0.1:9', 'cache/', mainSchema);
      // The same database and bucket without `cluster` in the configuration: refused all the same.
      const withoutCluster = { ...env, REGMIRROR_CLUSTER_ADVERTISE: undefined, REGMIRROR_CLUSTER_SECRET_FILE: undefined };
      for (const [args, environment] of [[['gc'], env], [['verify', '--repair'], env], [['gc'], withoutCluster]] as const) {
        const refused = await runRegmirror([...args, '--data', dataDir], { env: environment });
        assert.equal(refused.code, 2, refused.stderr);
        assert.match(refused.stderr, /3 running nodes of the cluster/);
        for (const node of nodes) assert.ok(refused.stderr.includes(`http://${node.host}`), refused.stderr);
      }
      const dryRun = await runRegmirror(['gc', '--dry-run', '--data', dataDir], { env });
      assert.equal(dryRun.code, 0, dryRun.stderr);
      assert.match(dryRun.stdout, /\(dry run\)/);
    } finally {
      await removeDir(dataDir);
    }
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
    console.log(`fill streams between nodes: ${streamed.length}`);
    // One node asked the upstream for the tag; the others waited for its answer and read it from the database.
    assert.equal(upstream.countRequests('GET', /^\/v2\/team\/app\/manifests\/v1$/), 1, 'the tag fetched once for the cluster');
  });

  it('an upstream\'s "not found" one node had is answered by the others without asking the upstream', async () => {
    const missing = ['/v2/team/app/manifests/no-such-tag', `/v2/team/app/blobs/sha256:${'0'.repeat(64)}`];
    for (const requestPath of missing) {
      const answers: RawResponse[] = [];
      for (const node of nodes) answers.push(await rawGet(`${node.url}${requestPath}`));
      for (const answer of answers) assert.equal(answer.status, 404, requestPath);
      const codes = answers.map((answer) => (JSON.parse(answer.body.toString()) as { errors: { code: string }[] }).errors[0]?.code);
      assert.equal(new Set(codes).size, 1, `one error code on every node: ${codes.join(', ')}`);
      await upstream.settle();
      assert.equal(upstream.countRequests('GET', new RegExp(`^${requestPath}$`)), 1, `${requestPath} asked of the upstream once`);
    }
  });

  it('a referrers list asked of three nodes at once: one node asks the upstream\'s referrers API, the others read its answer', async () => {
    const subject = `sha256:${'a'.repeat(64)}`;
    const index = JSON.stringify({
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.index.v1+json',
      manifests: [{ mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: `sha256:${'1'.repeat(64)}`, size: 700, artifactType: 'application/vnd.example.signature' }],
    });
    const scripted = await startScriptedUpstream(async (request, response) => {
      if (request.url !== `/v2/team/signed/referrers/${subject}`) return sendError(response, 404, 'NAME_UNKNOWN');
      // Slow enough that the three requests are all in flight while the first node asks.
      await new Promise((resolve) => setTimeout(resolve, 500));
      response.writeHead(200, { 'content-type': 'application/vnd.oci.image.index.v1+json', 'content-length': String(Buffer.byteLength(index)) });
      response.end(index);
    });
    const schema = await database.schema();
    const trio: Regmirror[] = [];
    try {
      for (let index = 0; index < 3; index++) trio.push(await startNode([scripted.url], 'referrers/', schema));
      const answers = await Promise.all(trio.map((node) => rawGet(`${node.url}/v2/team/signed/referrers/${subject}`)));
      for (const answer of answers) {
        assert.equal(answer.status, 200);
        assert.equal((JSON.parse(answer.body.toString()) as { manifests: unknown[] }).manifests.length, 1);
      }
      assert.equal(scripted.count('GET', /\/referrers\//), 1, 'one request to the referrers API for the three nodes');
    } finally {
      for (const node of trio) await node.destroy();
      await scripted.stop();
    }
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

  it('a chunked push whose requests land on different nodes: each is forwarded to the node holding the session; the blob is whole on every node', async () => {
    const schema = await database.schema();
    const trio: Regmirror[] = [];
    try {
      // No upstream: every repository is hosted.
      for (let index = 0; index < 3; index++) trio.push(await startNode([], 'hosted/', schema));
      const [first, second, third] = trio;
      assert.ok(first !== undefined && second !== undefined && third !== undefined);
      const blob = deterministicBytes(3_000_000, 7401);
      const digest = sha256Digest(blob);
      const uploads = '/v2/team/pushed/blobs/uploads/';
      const started = await fetch(`${first.url}${uploads}`, { method: 'POST' });
      assert.equal(started.status, 202);
      const location = started.headers.get('location') ?? '';
      assert.match(location, /^\/v2\/team\/pushed\/blobs\/uploads\/[0-9a-f-]{36}\.[0-9a-f-]{36}$/);
      const patch = (node: Regmirror, start: number, end: number): Promise<Response> =>
        fetch(`${node.url}${location}`, { method: 'PATCH', headers: { 'content-type': 'application/octet-stream', 'content-range': `${start}-${end - 1}` }, body: blob.subarray(start, end) });
      const chunk = await patch(second, 0, 1_000_000);
      assert.equal(chunk.status, 202);
      assert.equal(chunk.headers.get('range'), '0-999999');
      assert.equal(chunk.headers.get('location'), location);
      const status = await fetch(`${third.url}${location}`);
      assert.equal(status.status, 204);
      assert.equal(status.headers.get('range'), '0-999999');
      // The owner's 416 comes back with its Range header: the client learns where to go on.
      const outOfOrder = await patch(third, 2_000_000, 2_500_000);
      assert.equal(outOfOrder.status, 416);
      assert.equal(outOfOrder.headers.get('range'), '0-999999');
      assert.equal(((await outOfOrder.json()) as { errors: { code: string }[] }).errors[0]?.code, 'RANGE_INVALID', 'as the owner answers its own clients');
      assert.equal((await patch(third, 1_000_000, 2_000_000)).status, 202);
      const done = await fetch(`${second.url}${location}?digest=${digest}`, { method: 'PUT', headers: { 'content-type': 'application/octet-stream', 'content-range': '2000000-2999999' }, body: blob.subarray(2_000_000) });
      assert.equal(done.status, 201, await done.text());
      for (const node of trio) {
        const pulled = await rawGet(`${node.url}/v2/team/pushed/blobs/${digest}`);
        assert.equal(pulled.status, 200);
        assert.equal(sha256Of(pulled.body), digest);
      }
      // skopeo pushing through a round-robin load balancer (nginx, no affinity): its POST, PATCH and PUT of each
      // blob land on different nodes; the image comes back byte for byte.
      const balancer = await startNginx({
        upstream: '',
        dataDir: work,
        accessLog: true,
        block: (port) => `
  upstream regmirror_nodes { ${trio.map((node) => `server ${node.host};`).join(' ')} }
  server {
    listen 127.0.0.1:${port};
    client_max_body_size 0;
    proxy_request_buffering off;
    proxy_buffering off;
    location / { proxy_pass http://regmirror_nodes; proxy_http_version 1.1; proxy_set_header Host $http_host; }
  }`,
      });
      try {
        await skopeo(['copy', '--quiet', '--dest-tls-verify=false', `oci:${layout.dir}:v1`, `docker://127.0.0.1:${balancer.port}/team/balanced:v1`], { timeoutMs: 120_000 });
        const out = path.join(work, 'balanced');
        await copyToOci(`docker://127.0.0.1:${balancer.port}/team/balanced:v1`, out, 'v1', { timeoutMs: 120_000 });
        const image = layout.images[0];
        assert.ok(image !== undefined);
        for (const blobDigest of [...image.layerDigests, image.configDigest]) {
          const copied = await readFile(path.join(out, 'blobs', 'sha256', blobDigest.slice(7)));
          assert.ok(copied.equals(await readFile(path.join(layout.dir, 'blobs', 'sha256', blobDigest.slice(7)))), `${blobDigest} came back whole`);
        }
      } finally {
        await balancer.stop();
      }
      const forwarded = trio.flatMap((node) => node.accessEntries()).filter((entry) => entry.path.startsWith('/_regmirror/cluster/uploads/') && entry.path.includes('name=team%2Fbalanced'));
      assert.ok(forwarded.length > 0, 'requests were forwarded to the node holding their session');
      assert.ok(forwarded.every((entry) => entry.status < 300), forwarded.map((entry) => `${entry.path} ${entry.status}`).join('\n'));
      // Cancelled from another node; then unknown everywhere.
      const cancelled = await fetch(`${first.url}${uploads}`, { method: 'POST' });
      const cancelledAt = cancelled.headers.get('location') ?? '';
      assert.equal((await fetch(`${third.url}${cancelledAt}`, { method: 'DELETE' })).status, 204);
      for (const node of trio) assert.equal((await fetch(`${node.url}${cancelledAt}`)).status, 404);
      // The node holding a session stops: the session is gone, said as BLOB_UPLOAD_UNKNOWN by the others.
      const orphaned = await fetch(`${third.url}${uploads}`, { method: 'POST' });
      const orphanedAt = orphaned.headers.get('location') ?? '';
      await third.stop();
      const lost = await patch(first, 0, 1_000);
      assert.equal(lost.status, 404);
      const lostAfterStop = await fetch(`${first.url}${orphanedAt}`);
      assert.equal(lostAfterStop.status, 404);
      assert.equal(((await lostAfterStop.json()) as { errors: { code: string }[] }).errors[0]?.code, 'BLOB_UPLOAD_UNKNOWN');
      // A made-up session id naming no node of the cluster: unknown, forwarded nowhere.
      const madeUp = await fetch(`${first.url}${uploads}${randomUUID()}.${randomUUID()}`);
      assert.equal(madeUp.status, 404);
      assert.equal(((await madeUp.json()) as { errors: { code: string }[] }).errors[0]?.code, 'BLOB_UPLOAD_UNKNOWN');
      // The internal endpoint wants the shared secret.
      const internal = `${second.url}/_regmirror/cluster/uploads/${location.split('/').pop() ?? ''}?registry=&name=team/pushed`;
      assert.equal((await fetch(internal)).status, 401);
      assert.equal((await fetch(internal, { headers: { authorization: 'Bearer wrong' } })).status, 403);
    } finally {
      for (const node of trio) await node.destroy();
    }
  });

  it('v1 layers: one node fills a layer for the cluster; the other waits for its commit and reads the bucket', async () => {
    const [image] = makeV1Chain('cluster-v1', [{ size: 3 * 1024 * 1024, seed: 7701 }]);
    assert.ok(image !== undefined);
    const source = await startFakeV1Source({ repository: 'legacy/app', images: [image] });
    const schema = await database.schema();
    const pair: Regmirror[] = [];
    try {
      const configFile = path.join(work, 'v1-mirroring.yaml');
      await writeFile(configFile, `v1:\n  mirroring:\n    source: ${source.url}\n`);
      for (let index = 0; index < 2; index++) {
        const port = await freePort();
        pair.push(await startRegmirror({ port, configFile, env: nodeEnvironment(`http://127.0.0.1:${port}`, 'v1/', schema) }));
      }
      const answers = await Promise.all(pair.map((node) => rawGet(`${node.url}/v1/images/${image.id}/layer`, { timeoutMs: 60_000 })));
      for (const answer of answers) {
        assert.equal(answer.status, 200);
        assert.ok(answer.body.equals(image.layer), 'the layer byte for byte');
      }
      assert.equal(source.count('GET', new RegExp(`^/v1/images/${image.id}/layer$`)), 1, 'one layer GET from the source for the two nodes');
    } finally {
      for (const node of pair) await node.destroy();
      await source.stop();
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

  it('Range requests on another node while one fills: served from one relay of its fill, the last byte once the blob verifies (206); 416 past the end', async () => {
    const blob = deterministicBytes(3 * 1024 * 1024, 7601);
    await withSlowFill(blob, 'ranges/', {}, 2, async ({ slow, nodes: [, other], blobPath, first }) => {
      assert.ok(other !== undefined);
      const [middle, suffix, beyond] = await Promise.all([
        rawGet(`${other.url}${blobPath}`, { timeoutMs: 60_000, headers: { range: 'bytes=1000000-1000099' } }),
        rawGet(`${other.url}${blobPath}`, { timeoutMs: 60_000, headers: { range: 'bytes=-100' } }),
        rawGet(`${other.url}${blobPath}`, { timeoutMs: 60_000, headers: { range: `bytes=${blob.length}-` } }),
      ]);
      await first;
      assert.equal(middle.status, 206);
      assert.ok(middle.complete);
      assert.ok(middle.body.equals(blob.subarray(1_000_000, 1_000_100)));
      assert.equal(middle.headers['content-range'], `bytes 1000000-1000099/${blob.length}`);
      assert.equal(suffix.status, 206);
      assert.ok(suffix.body.equals(blob.subarray(blob.length - 100)));
      assert.equal(beyond.status, 416);
      assert.equal(beyond.headers['content-range'], `bytes */${blob.length}`);
      assert.equal(await other.metricValue('regmirror_cluster_follows_total', { outcome: 'streamed' }), 1, 'the three followed one relay of the fill');
      assert.equal(slow.count('GET', new RegExp(`^${blobPath}$`)), 1, 'one upstream GET');
    });
  });

  const httpsSetups = [
    { name: 'over https (each node trusts the cluster\'s CA through NODE_EXTRA_CA_CERTS)', mutual: false },
    { name: 'under mutual TLS (tls.clientCA: each node presents its own certificate to the others)', mutual: true },
  ];
  for (const { name, mutual } of httpsSetups) it(`${name}: a node streams another's fill in progress, verified, and forwards an upload request`, async () => {
    const ca = await makeTestCa();
    const slow = await startFaultUpstream({ blobs: [deterministicBytes(6 * 1024 * 1024, 7501)], repository: 'slow/app', dripBytes: 256 * 1024, dripIntervalMs: 100 });
    const schema = await database.schema();
    const pair: Regmirror[] = [];
    try {
      const certificate = mutual ? await ca.issueServerAndClient('cluster-node') : await ca.issueServer('cluster-node');
      const clientCertificate = mutual ? await ca.issueClient('test-client') : undefined;
      const clientTls = { ca: ca.ca, ...(clientCertificate === undefined ? {} : { cert: clientCertificate.certificate, key: clientCertificate.key }) };
      const client = new Agent({ connect: clientTls });
      for (let index = 0; index < 2; index++) {
        const port = await freePort();
        pair.push(
          await startRegmirror({
            upstreams: [slow.url],
            port,
            tls: clientTls,
            env: {
              ...nodeEnvironment(`https://127.0.0.1:${port}`, mutual ? 'mtls/' : 'https/', schema),
              REGMIRROR_TLS_CERTIFICATE: certificate.certificateFile,
              REGMIRROR_TLS_KEY: certificate.keyFile,
              ...(mutual ? { REGMIRROR_TLS_CLIENT_CA: ca.caFile } : {}),
              REGMIRROR_HOSTED: 'team/**',
              NODE_EXTRA_CA_CERTS: ca.caFile,
            },
          }),
        );
      }
      const [filler, follower] = pair;
      assert.ok(filler !== undefined && follower !== undefined);
      const digest = slow.blobDigests[0] ?? '';
      slow.setMode('slow-drip', digest);
      const blobPath = `/v2/slow/app/blobs/${digest}`;
      const get = async (node: Regmirror): Promise<Buffer> => {
        const response = await request(`https://${node.host}${blobPath}`, { dispatcher: client });
        assert.equal(response.statusCode, 200);
        return Buffer.from(await response.body.arrayBuffer());
      };
      const first = get(filler);
      // The upstream sends the blob over about 2.4 s: the follower asks while the first node fills.
      await waitUntil('the first node is filling', () => slow.count('GET', new RegExp(`^${blobPath}$`)) > 0, 20_000);
      const [fromFiller, fromFollower] = await Promise.all([first, get(follower)]);
      assert.equal(sha256Of(fromFiller), digest);
      assert.equal(sha256Of(fromFollower), digest);
      assert.equal(await follower.metricValue('regmirror_cluster_follows_total', { outcome: 'streamed' }), 1, 'streamed from the filler');
      assert.equal(slow.count('GET', new RegExp(`^${blobPath}$`)), 1, 'one upstream GET');
      // An upload session of the first node, its chunk sent to the second: forwarded over the same TLS.
      const started = await request(`https://${filler.host}/v2/team/tls/blobs/uploads/`, { method: 'POST', dispatcher: client });
      assert.equal(started.statusCode, 202);
      await started.body.dump();
      const location = String(started.headers.location);
      const chunk = await request(`https://${follower.host}${location}`, { method: 'PATCH', body: 'chunk', headers: { 'content-type': 'application/octet-stream' }, dispatcher: client });
      assert.equal(chunk.statusCode, 202, await chunk.body.text());
      assert.equal(chunk.headers.range, '0-4');
      await client.close();
    } finally {
      for (const node of pair) await node.destroy();
      await slow.stop();
      await ca.destroy();
    }
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
