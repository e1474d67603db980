// Clients that stop reading (issue 9, hole 8): what they cost the serving process.
//   - 200 clients GET the cached 500 MiB blob and never read
//   - 64 clients GET 64 distinct cold 16 MiB blobs (64 fills at once) and never read, after one cold blob was
//     pulled whole (so the first fill's code loading is not counted)
// Each server is started afresh per run; its resident memory is read before the clients connect and sampled while
// they hang on (the peak), so the figure is what the stalled clients cost, next to the peer's in the same run.

import { connect, type Socket } from 'node:net';
import { deterministicBytes, sha256Digest } from '../../test/support/images.js';
import { residentBytes } from '../../test/support/processes.js';
import type { BenchContext } from '../lib/context.js';
import { appBlobPath, largeLayer } from '../lib/images.js';
import { fmt, type Row } from '../lib/report.js';
import { alternate } from '../lib/schedule.js';
import { startPeer, startRegmirror, type BenchServer } from '../lib/servers.js';
import { MiB, mediansOf, ratio } from '../lib/stats.js';
import { download, sampleRss } from '../lib/tools.js';

const KINDS = ['peer', 'regmirror'] as const;
type Kind = (typeof KINDS)[number];
const CACHED_CLIENTS = 200;
const COLD_CLIENTS = 64;
const COLD_BLOB_BYTES = 16 * MiB;
const COLD_REPOSITORY = 'bench/stalled';
/** How long the stalled clients hang on while memory is sampled. */
const HOLD_MS = 8_000;
const TARGET = 128 * MiB;

export async function stalledMeasures(ctx: BenchContext): Promise<Row[]> {
  const coldDigests = await pushColdBlobs(ctx);
  return [await stalledCached(ctx), await stalledCold(ctx, coldDigests)];
}

async function withServer<T>(ctx: BenchContext, kind: Kind, work: (server: BenchServer) => Promise<T>): Promise<T> {
  const server = kind === 'peer' ? await startPeer(ctx.upstream.url) : await startRegmirror({ upstreamUrl: ctx.upstream.url, nodeArgs: ctx.regmirrorNodeArgs });
  try {
    return await work(server);
  } finally {
    await server.stop();
  }
}

async function stalledCached(ctx: BenchContext): Promise<Row> {
  const large = largeLayer(ctx.images);
  const path = appBlobPath(ctx.images, large.digest);
  const samples = await alternate(ctx.runs, KINDS, (kind, run) =>
    withServer(ctx, kind, async (server) => {
      ctx.say(`stalled readers: ${CACHED_CLIENTS} on the cached ${fmt.mib(large.size)} blob, run ${run}/${ctx.runs}, ${kind}`);
      const warm = await download(`${server.url}${path}`, 300_000);
      if (warm.bytes !== large.size) throw new Error(`${kind}: got ${warm.bytes} bytes of ${large.size}`);
      return costOfStalledClients(server, Array.from({ length: CACHED_CLIENTS }, () => path));
    }),
  );
  return row('stalled-cached', `memory cost of ${CACHED_CLIENTS} clients that never read, on a cached ${fmt.mib(large.size)} blob`, samples);
}

async function stalledCold(ctx: BenchContext, digests: string[]): Promise<Row> {
  const samples = await alternate(ctx.runs, KINDS, (kind, run) =>
    withServer(ctx, kind, async (server) => {
      ctx.say(`stalled readers: ${COLD_CLIENTS} on ${COLD_CLIENTS} cold ${fmt.mib(COLD_BLOB_BYTES)} blobs, run ${run}/${ctx.runs}, ${kind}`);
      // One cold blob pulled whole first, by a client that reads: the code a first fill loads and compiles is not
      // what stalled clients cost (the cached case warms the same way, with its blob).
      const [warmUp, ...stalled] = digests.map((digest) => `/v2/${COLD_REPOSITORY}/blobs/${digest}`);
      const warm = await download(`${server.url}${warmUp ?? ''}`, 300_000);
      if (warm.bytes !== (ctx.quick ? MiB : COLD_BLOB_BYTES)) throw new Error(`${kind}: got ${warm.bytes} bytes of the warm-up blob`);
      return costOfStalledClients(server, stalled);
    }),
  );
  return row('stalled-cold', `memory cost of ${COLD_CLIENTS} clients that never read, each on its own cold ${fmt.mib(COLD_BLOB_BYTES)} blob (${COLD_CLIENTS} fills)`, samples);
}

/** Resident memory the server gains while one never-reading client per path hangs on (peak minus before). */
async function costOfStalledClients(server: BenchServer, paths: string[]): Promise<number> {
  const before = (await residentBytes(server.pid, 'VmRSS')) ?? 0;
  const sampler = await sampleRss(server.pid);
  const sockets = await Promise.all(paths.map((path) => stalledGet(server, path)));
  try {
    await new Promise((resolve) => setTimeout(resolve, HOLD_MS));
  } finally {
    for (const socket of sockets) socket.destroy();
  }
  return (await sampler.stop()) - before;
}

async function stalledGet(server: BenchServer, path: string): Promise<Socket> {
  const port = Number(new URL(server.url).port);
  const socket = connect({ host: '127.0.0.1', port });
  socket.on('error', () => undefined);
  await new Promise<void>((resolve, reject) => {
    socket.once('connect', resolve);
    socket.once('error', reject);
  });
  socket.pause();
  socket.write(`GET ${path} HTTP/1.1\r\nHost: ${server.host}\r\n\r\n`);
  return socket;
}

function row(id: string, measure: string, samples: Record<Kind, number[]>): Row {
  const medians = mediansOf(samples);
  const ours = medians.regmirror ?? Number.NaN;
  return {
    id,
    measure,
    peer: fmt.mib(medians.peer ?? Number.NaN),
    regmirror: fmt.mib(ours),
    ratio: fmt.times(ratio(ours, medians.peer ?? Number.NaN)),
    target: `< ${fmt.mib(TARGET)}`,
    met: ours < TARGET,
    samples,
    medians,
    unit: 'bytes',
  };
}

/**
 * Pushes COLD_CLIENTS + 1 distinct blobs to the upstream (once: they stay in its cached storage) and returns their
 * digests: the first for the warm-up, one for each stalled client.
 */
async function pushColdBlobs(ctx: BenchContext): Promise<string[]> {
  const digests: string[] = [];
  for (let index = 0; index <= COLD_CLIENTS; index++) {
    const bytes = deterministicBytes(ctx.quick ? MiB : COLD_BLOB_BYTES, 7000 + index);
    const digest = sha256Digest(bytes);
    digests.push(digest);
    const head = await fetch(`${ctx.upstream.url}/v2/${COLD_REPOSITORY}/blobs/${digest}`, { method: 'HEAD' });
    if (head.status === 200) continue;
    ctx.say(`stalled readers: pushing cold blob ${index + 1}/${COLD_CLIENTS + 1} to the upstream`);
    const started = await fetch(`${ctx.upstream.url}/v2/${COLD_REPOSITORY}/blobs/uploads/`, { method: 'POST' });
    const location = started.headers.get('location');
    if (started.status !== 202 || location === null) throw new Error(`upstream refused an upload: ${started.status}`);
    const target = new URL(location, ctx.upstream.url);
    target.searchParams.set('digest', digest);
    const put = await fetch(target, { method: 'PUT', body: bytes, headers: { 'content-type': 'application/octet-stream' } });
    if (put.status !== 201) throw new Error(`upstream refused blob ${digest}: ${put.status}`);
  }
  return digests;
}
