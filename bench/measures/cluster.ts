// Cluster measures (issue 12): regmirror nodes in cluster mode as docs/cluster.md sets them up (storage.driver s3 on
// OpenStack Swift's s3api, metadata.driver postgres, cluster.advertise and cluster.secretFile, GC off), 1 node against
// 3, everything on loopback and 2 cores: a ratio, not a promise of linear scaling.
//   - 24 concurrent cold skopeo pulls of bench/concurrent (8 per node on 3 nodes; all 24 on the single node), fresh
//     nodes on a fresh schema and prefix every run: the bytes the upstream sent (its access log, as the cold group
//     counts them) over one image's, and the time until the last pull is done; distribution 2.8.2 in proxy mode (one
//     instance: its replicas cannot coordinate) is the peer for both; and the CPU the servers used meanwhile (node
//     processes, or docker-registry; not Swift's nor PostgreSQL's)
//   - warm GET throughput of the large blob with 6 concurrent curls (all on node 1, or 2 on each of 3 nodes): the
//     whole of their bytes over the time until the last one ends, streamed through the nodes from the bucket, then
//     redirected (storage.s3.redirect, curl following the 307 to the bucket); Swift (one Python process) bounds both

import { randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import nodePath from 'node:path';
import { runCommand } from '../../test/support/commands.js';
import { freePort } from '../../test/support/ports.js';
import { startPostgres, type Postgres, type PostgresSchema } from '../../test/support/postgres.js';
import { sumMetric } from '../../test/support/regmirror.js';
import { s3StorageEnvironment, startSwift, type Swift } from '../../test/support/swift.js';
import type { BenchContext } from '../lib/context.js';
import { appBlobPath, largeLayer } from '../lib/images.js';
import { fmt, type Row } from '../lib/report.js';
import { alternate } from '../lib/schedule.js';
import { startPeer, startRegmirror, type BenchServer } from '../lib/servers.js';
import { mediansOf, ratio } from '../lib/stats.js';
import { download, pullImage } from '../lib/tools.js';
import { upstreamContentBytes, warmProcess } from './cold.js';

const BUCKET = 'regmirror-bench-cluster';
const NODES = 3;
const PULLS_PER_NODE = 8;
const PULLS = NODES * PULLS_PER_NODE;
/** Concurrent warm GETs of the large blob: 2 per node on 3 nodes. */
const WARM_CLIENTS = 6;
const CONTENDERS = ['peer', 'one', 'three'] as const;
type Contender = (typeof CONTENDERS)[number];

/** What every node of every cluster here shares: the database server, the bucket's Swift, the secret. */
interface Shared {
  database: Postgres;
  swift: Swift;
  secretFile: string;
}

/** count nodes on one schema (its URL) and one prefix of the bucket, each on a port chosen first (its advertise URL names it). */
async function startNodes(ctx: BenchContext, shared: Shared, count: number, schemaUrl: string, prefix: string, extra: NodeJS.ProcessEnv = {}): Promise<BenchServer[]> {
  const nodes: BenchServer[] = [];
  try {
    for (let index = 0; index < count; index++) {
      const port = await freePort();
      nodes.push(
        await startRegmirror({
          upstreamUrl: ctx.upstream.url,
          nodeArgs: ctx.regmirrorNodeArgs,
          port,
          env: {
            ...s3StorageEnvironment(shared.swift, BUCKET, prefix),
            REGMIRROR_METADATA_DRIVER: 'postgres',
            REGMIRROR_METADATA_URL: schemaUrl,
            REGMIRROR_CLUSTER_ADVERTISE: `http://127.0.0.1:${port}`,
            REGMIRROR_CLUSTER_SECRET_FILE: shared.secretFile,
            REGMIRROR_GC_INTERVAL: '0',
            ...extra,
          },
        }),
      );
    }
  } catch (error) {
    await stopNodes(nodes);
    throw error;
  }
  return nodes;
}

async function stopNodes(nodes: BenchServer[]): Promise<void> {
  for (const node of [...nodes].reverse()) await node.stop();
}

/** One series of a node's /metrics, summed over the labels not given. */
async function metricOf(url: string, name: string, labels: Record<string, string> = {}): Promise<number> {
  const response = await fetch(`${url}/metrics`);
  if (!response.ok) throw new Error(`${url}/metrics: status ${response.status}`);
  return sumMetric(await response.text(), name, labels);
}

/** Until a node runs no fill: a client has the whole blob before the fill's upload to the bucket ends. */
async function fillsSettled(url: string, timeoutMs = 300_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if ((await metricOf(url, 'regmirror_fills_in_progress')) === 0) return;
    if (Date.now() > deadline) throw new Error(`${url}: a fill was still in progress after ${timeoutMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/** CPU seconds (user and system) a process has used so far, from /proc/PID/stat; ticksPerS from getconf CLK_TCK. */
async function cpuSeconds(pid: number, ticksPerS: number): Promise<number> {
  const text = await readFile(`/proc/${pid}/stat`, 'utf8');
  // Fields after the command's closing parenthesis start at the 3rd (state): utime is the 14th, stime the 15th.
  const fields = text.slice(text.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / ticksPerS;
}

export async function clusterMeasures(ctx: BenchContext): Promise<Row[]> {
  ctx.say('cluster: starting PostgreSQL and Swift with its S3 API');
  const secretDir = await mkdtemp(nodePath.join(ctx.scratch, 'cluster-'));
  const secretFile = nodePath.join(secretDir, 'secret');
  await writeFile(secretFile, `${randomBytes(24).toString('hex')}\n`, { mode: 0o600 });
  const database = await startPostgres();
  let swift: Swift | undefined;
  try {
    swift = await startSwift();
    await swift.createBucket(BUCKET);
    const shared: Shared = { database, swift, secretFile };
    return [...(await coldPulls(ctx, shared)), ...(await warmGets(ctx, shared))];
  } finally {
    await swift?.destroy();
    await database.stop();
    await rm(secretDir, { recursive: true, force: true });
  }
}

/** 24 concurrent cold pulls on fresh servers every run: seconds until the last is done, and the upstream's bytes over one image's. */
async function coldPulls(ctx: BenchContext, shared: Shared): Promise<Row[]> {
  const image = ctx.images.concurrent;
  const reference = `${image.repository}:${image.tag}`;
  const bytes: Record<Contender, number[]> = { peer: [], one: [], three: [] };
  const cpu: Record<`${Contender} cpu-s`, number[]> = { 'peer cpu-s': [], 'one cpu-s': [], 'three cpu-s': [] };
  /** Blob answers streamed from another node's fill (regmirror_cluster_follows_total{outcome="streamed"}, all nodes). */
  const follows: number[] = [];
  const ticksPerS = Number((await runCommand('getconf', ['CLK_TCK'])).stdout.trim());
  const streamedFollows = async (servers: BenchServer[]): Promise<number> =>
    (await Promise.all(servers.map((server) => metricOf(server.url, 'regmirror_cluster_follows_total', { outcome: 'streamed' })))).reduce((sum, value) => sum + value, 0);
  const serversCpu = async (servers: BenchServer[]): Promise<number> => (await Promise.all(servers.map((server) => cpuSeconds(server.pid, ticksPerS)))).reduce((sum, value) => sum + value, 0);
  const times = await alternate(ctx.runs, CONTENDERS, async (contender, run) => {
    ctx.say(`cluster: ${PULLS} concurrent cold pulls of ${reference} (${fmt.mib(image.pullBytes)}): run ${run}/${ctx.runs}, ${label(contender)}`);
    let servers: BenchServer[];
    let schema: PostgresSchema | undefined;
    if (contender === 'peer') {
      servers = [await startPeer(ctx.upstream.url)];
    } else {
      schema = await shared.database.schema();
      servers = await startNodes(ctx, shared, contender === 'one' ? 1 : NODES, schema.url, `cold-${contender}-${run}/`);
    }
    try {
      // Each node's process warmed (the first node fills the warm-up blob, the others read it from the bucket).
      for (const server of servers) await warmProcess(ctx, server.url);
      const before = await upstreamContentBytes(ctx);
      const cpuBefore = await serversCpu(servers);
      // The warm-up's small blob may have been followed too (asked while its upload ran).
      const followsBefore = contender === 'three' ? await streamedFollows(servers) : 0;
      const started = performance.now();
      await Promise.all(Array.from({ length: PULLS }, (_, index) => pullImage(servers[index % servers.length]?.host ?? '', reference, ctx.scratch)));
      const seconds = (performance.now() - started) / 1000;
      cpu[`${contender} cpu-s`].push((await serversCpu(servers)) - cpuBefore);
      bytes[contender].push(((await upstreamContentBytes(ctx)) - before) / image.pullBytes);
      if (contender === 'three') follows.push((await streamedFollows(servers)) - followsBefore);
      return seconds;
    } finally {
      await stopNodes(servers);
      await schema?.drop();
    }
  });
  const byteMedians = mediansOf(bytes);
  const timeSamples = { ...times, ...cpu, 'three follows streamed': follows };
  const timeMedians = mediansOf(timeSamples);
  const cpuOf = (contender: Contender): string => `CPU ${fmt.seconds(timeMedians[`${contender} cpu-s`] ?? Number.NaN)}`;
  const [peerBytes, oneBytes, threeBytes] = CONTENDERS.map((contender) => byteMedians[contender] ?? Number.NaN);
  const [peerTime, oneTime, threeTime] = CONTENDERS.map((contender) => timeMedians[contender] ?? Number.NaN);
  const spread = `${PULLS} concurrent cold pulls of one ${fmt.mib(image.pullBytes)} image (3 nodes: ${PULLS_PER_NODE} each; 1 node and the peer: all ${PULLS})`;
  // A manifest fetched once per node (not coordinated) is a few hundred bytes: round to 2 places.
  const whole = (value: number): boolean => Math.round(value * 100) / 100 <= 1.0;
  return [
    {
      id: 'cluster-upstream-bytes-24',
      measure: `cluster: upstream bytes, ${spread} (× the image)`,
      peer: fmt.times(peerBytes ?? Number.NaN),
      regmirror: `1 node ${fmt.times(oneBytes ?? Number.NaN)} · 3 nodes ${fmt.times(threeBytes ?? Number.NaN)}`,
      ratio: `${fmt.times(ratio(threeBytes ?? Number.NaN, peerBytes ?? Number.NaN))} (3 nodes / peer)`,
      target: '1.00× the image',
      met: whole(oneBytes ?? Number.NaN) && whole(threeBytes ?? Number.NaN),
      samples: bytes,
      medians: byteMedians,
      unit: '× image size',
    },
    {
      id: 'cluster-cold-pull-24',
      measure: `cluster: time of ${spread}, until the last is done (CPU: the servers' own while the pulls ran)`,
      peer: `${fmt.seconds(peerTime ?? Number.NaN)} (${cpuOf('peer')})`,
      regmirror: `1 node ${fmt.seconds(oneTime ?? Number.NaN)} (${cpuOf('one')}) · 3 nodes ${fmt.seconds(threeTime ?? Number.NaN)} (${cpuOf('three')})`,
      ratio: `${fmt.times(ratio(threeTime ?? Number.NaN, oneTime ?? Number.NaN))} (3 nodes / 1 node); 1 node ${fmt.times(ratio(oneTime ?? Number.NaN, peerTime ?? Number.NaN))} the peer`,
      target: 'informative (lower is better; 2 cores for every process)',
      met: undefined,
      samples: timeSamples,
      medians: timeMedians,
      unit: 'seconds',
    },
  ];
}

function label(contender: Contender): string {
  return contender === 'peer' ? 'distribution 2.8.2 (one instance)' : contender === 'one' ? 'regmirror, 1 node' : `regmirror, ${NODES} nodes`;
}

/**
 * The large blob filled once into the bucket, then GET by WARM_CLIENTS curls at once: on node 1 alone, or spread over
 * the 3 nodes; the nodes stream it from the bucket, then (nodes started again on the same schema and prefix, with
 * storage.s3.redirect) answer 307 to the bucket and curl follows. Bytes/s: all the clients' bytes over the time until
 * the last is done.
 */
async function warmGets(ctx: BenchContext, shared: Shared): Promise<Row[]> {
  const large = largeLayer(ctx.images);
  const path = appBlobPath(ctx.images, large.digest);
  const schema = await shared.database.schema();
  const rows: Row[] = [];
  try {
    for (const redirect of [false, true]) {
      const mode = redirect ? 'redirected' : 'streamed';
      ctx.say(`cluster: starting ${NODES} nodes, ${mode}`);
      const nodes = await startNodes(ctx, shared, NODES, schema.url, 'warm/', redirect ? { REGMIRROR_STORAGE_S3_REDIRECT: 'true' } : {});
      try {
        for (const node of nodes) await warmProcess(ctx, node.url, redirect);
        // The first pass fills the bucket; the second started again on it finds the blob there.
        const filled = await download(`${nodes[0]?.url ?? ''}${path}`, 600_000, {}, redirect);
        if (filled.bytes !== large.size) throw new Error(`cluster: the fill of the large blob gave ${filled.bytes} bytes of ${large.size}`);
        // Until the upload ends, the first node would serve the blob from its fill's spool, not from the bucket.
        await fillsSettled(nodes[0]?.url ?? '');
        const samples = await alternate(ctx.runs, ['one', 'three'] as const, async (contender, run) => {
          ctx.say(`cluster: warm GET of ${fmt.mib(large.size)} by ${WARM_CLIENTS} clients at once, ${mode}: run ${run}/${ctx.runs}, ${contender === 'one' ? '1 node' : `${NODES} nodes`}`);
          const serving = contender === 'one' ? nodes.slice(0, 1) : nodes;
          const started = performance.now();
          const results = await Promise.all(Array.from({ length: WARM_CLIENTS }, (_, index) => download(`${serving[index % serving.length]?.url ?? ''}${path}`, 600_000, {}, redirect)));
          const seconds = (performance.now() - started) / 1000;
          for (const result of results) if (result.bytes !== large.size) throw new Error(`cluster: got ${result.bytes} bytes of ${large.size}`);
          return (WARM_CLIENTS * large.size) / seconds;
        });
        const medians = mediansOf(samples);
        const one = medians.one ?? Number.NaN;
        const three = medians.three ?? Number.NaN;
        rows.push({
          id: `cluster-warm-blob-get-${mode}`,
          measure: `cluster: warm GET throughput of a ${fmt.mib(large.size)} blob, ${WARM_CLIENTS} clients at once (3 nodes: 2 each), ${redirect ? 'a 307 to the bucket (storage.s3.redirect), curl following' : 'streamed from the bucket through the nodes'}: all their bytes`,
          peer: '—',
          regmirror: `1 node ${fmt.gbps(one)} · 3 nodes ${fmt.gbps(three)}`,
          ratio: `${fmt.times(ratio(three, one))} (3 nodes / 1 node)`,
          target: 'informative (Swift, one Python process, bounds both)',
          met: undefined,
          samples,
          medians,
          unit: 'bytes/s',
        });
      } finally {
        await stopNodes(nodes);
      }
    }
  } finally {
    await schema.drop();
  }
  return rows;
}
