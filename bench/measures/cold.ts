// Cold measures: every run starts the peer and regmirror afresh on empty storage (and warms the process,
// not its cache: see withFresh).
//   - a whole-image pull with skopeo, against the same pull straight from the upstream
//   - time to first byte of the 500 MiB blob
//   - peak RSS while 8 clients GET that blob at once
//   - bytes the upstream sent for 4 and 16 concurrent pulls of one image

import { MEDIA_TYPES } from '../../test/support/images.js';
import type { BenchContext } from '../lib/context.js';
import { appBlobPath, largeLayer } from '../lib/images.js';
import { fmt, type Row } from '../lib/report.js';
import { alternate } from '../lib/schedule.js';
import { startPeer, startRegmirror, type BenchServer } from '../lib/servers.js';
import { mediansOf, ratio } from '../lib/stats.js';
import { download, pullImage } from '../lib/tools.js';
import { peakRssOfConcurrentGets, rssRow } from './warm.js';

const KINDS = ['peer', 'regmirror'] as const;
type Kind = (typeof KINDS)[number];

/**
 * Runs work against a server started for it alone on empty storage, then stops it. Before the work, a
 * warm-up fetches content no measure asks for: a mirror is a long-running process, so neither a fresh
 * Node's first compilations nor a fresh Go process's first connection should count as "cold".
 */
async function withFresh<T>(ctx: BenchContext, kind: Kind, work: (server: BenchServer) => Promise<T>): Promise<T> {
  const server = kind === 'peer' ? await startPeer(ctx.upstream.url) : await startRegmirror({ upstreamUrl: ctx.upstream.url, nodeArgs: ctx.regmirrorNodeArgs });
  try {
    await warmProcess(ctx, server.url);
    return await work(server);
  } finally {
    await server.stop();
  }
}

/**
 * The warm-up of a fresh process (not of its cache): bench/app's arm64 manifest and a small blob no measure asks for,
 * three times (follow: through the 307 a node with storage.s3.redirect answers once the blob is in the bucket).
 */
export async function warmProcess(ctx: BenchContext, url: string, follow = false): Promise<void> {
  const { repository, manifestDigest, blob } = ctx.images.warmUp;
  await download(`${url}/v2/${repository}/manifests/${manifestDigest}`, 30_000, { accept: MEDIA_TYPES.ociManifest });
  for (let round = 0; round < 3; round++) await download(`${url}/v2/${repository}/blobs/${blob.digest}`, 30_000, {}, follow);
}

export async function coldMeasures(ctx: BenchContext): Promise<Row[]> {
  return [await coldPull(ctx), await firstByte(ctx), await coldRss(ctx), ...(await upstreamBytes(ctx))];
}

async function coldPull(ctx: BenchContext): Promise<Row> {
  const app = ctx.images.app;
  const reference = `${app.repository}:${app.tag}`;
  const samples = await alternate(ctx.runs, ['direct', ...KINDS], (contender, run) => {
    ctx.say(`cold skopeo pull of ${reference} (${fmt.mib(app.pullBytes)}): run ${run}/${ctx.runs}, ${contender === 'direct' ? 'straight from the upstream' : contender}`);
    if (contender === 'direct') return pullImage(`127.0.0.1:${ctx.upstream.port}`, reference, ctx.scratch);
    return withFresh(ctx, contender, (server) => pullImage(server.host, reference, ctx.scratch));
  });
  const medians = mediansOf(samples);
  const direct = medians.direct ?? Number.NaN;
  const ours = ratio(medians.regmirror ?? Number.NaN, direct);
  const theirs = ratio(medians.peer ?? Number.NaN, direct);
  return {
    id: 'cold-pull',
    measure: `cold whole-image pull with skopeo, ${fmt.mib(app.pullBytes)} (direct from the upstream: ${fmt.seconds(direct)})`,
    peer: `${fmt.seconds(medians.peer ?? Number.NaN)} = ${fmt.times(theirs)} direct`,
    regmirror: `${fmt.seconds(medians.regmirror ?? Number.NaN)} = ${fmt.times(ours)} direct`,
    ratio: fmt.times(ratio(medians.regmirror ?? Number.NaN, medians.peer ?? Number.NaN)),
    target: '≤ 1.05× a direct pull',
    met: ours <= 1.05,
    samples,
    medians,
    unit: 'seconds',
  };
}

async function firstByte(ctx: BenchContext): Promise<Row> {
  const large = largeLayer(ctx.images);
  const path = appBlobPath(ctx.images, large.digest);
  const rates: Record<string, number[]> = { 'peer bytes/s': [], 'regmirror bytes/s': [] };
  const firstBytes = await alternate(ctx.runs, KINDS, async (kind, run) => {
    ctx.say(`time to first byte, cold ${fmt.mib(large.size)} blob: run ${run}/${ctx.runs}, ${kind}`);
    const result = await withFresh(ctx, kind, (server) => download(`${server.url}${path}`, 600_000));
    if (result.bytes !== large.size) throw new Error(`${kind}: got ${result.bytes} bytes of ${large.size}`);
    rates[`${kind} bytes/s`]?.push(result.bytesPerS);
    return result.firstByteS * 1000;
  });
  const samples = { ...firstBytes, ...rates };
  const medians = mediansOf(samples);
  const ours = medians.regmirror ?? Number.NaN;
  const theirs = medians.peer ?? Number.NaN;
  return {
    id: 'cold-first-byte',
    measure: `time to first byte, cold ${fmt.mib(large.size)} blob (whole GET at)`,
    peer: `${fmt.ms(theirs)} (${fmt.gbps(medians['peer bytes/s'] ?? Number.NaN)})`,
    regmirror: `${fmt.ms(ours)} (${fmt.gbps(medians['regmirror bytes/s'] ?? Number.NaN)})`,
    ratio: fmt.times(ratio(ours, theirs)),
    target: '≤ the peer',
    met: ours <= theirs,
    samples,
    medians,
    unit: 'ms',
  };
}

async function coldRss(ctx: BenchContext): Promise<Row> {
  const large = largeLayer(ctx.images);
  const path = appBlobPath(ctx.images, large.digest);
  const samples = await alternate(ctx.runs, KINDS, (kind, run) => {
    ctx.say(`cold peak RSS, 8 GETs of ${fmt.mib(large.size)} at once: run ${run}/${ctx.runs}, ${kind}`);
    return withFresh(ctx, kind, (server) => peakRssOfConcurrentGets([server.pid], `${server.url}${path}`, large.size));
  });
  return rssRow('cold-peak-rss', `peak RSS, 8 concurrent ${fmt.mib(large.size)} GETs, cold`, samples);
}

/** Blob and manifest bytes the upstream's access log shows so far. */
export async function upstreamContentBytes(ctx: BenchContext): Promise<number> {
  await ctx.upstream.settle();
  return ctx.upstream.bytesSent('GET', /^\/v2\/.+\/(blobs|manifests)\//);
}

async function upstreamBytes(ctx: BenchContext): Promise<Row[]> {
  const image = ctx.images.concurrent;
  const reference = `${image.repository}:${image.tag}`;
  const rows: Row[] = [];
  for (const clients of [4, 16]) {
    const samples = await alternate(ctx.runs, KINDS, async (kind, run) => {
      ctx.say(`upstream bytes, ${clients} concurrent cold pulls of ${reference} (${fmt.mib(image.pullBytes)}): run ${run}/${ctx.runs}, ${kind}`);
      const sent = await withFresh(ctx, kind, async (server) => {
        const before = await upstreamContentBytes(ctx);
        await Promise.all(Array.from({ length: clients }, () => pullImage(server.host, reference, ctx.scratch)));
        return (await upstreamContentBytes(ctx)) - before;
      });
      return sent / image.pullBytes;
    });
    const medians = mediansOf(samples);
    const ours = medians.regmirror ?? Number.NaN;
    rows.push({
      id: `upstream-bytes-${clients}`,
      measure: `upstream bytes, ${clients} concurrent cold pulls of one ${fmt.mib(image.pullBytes)} image (× the image)`,
      peer: fmt.times(medians.peer ?? Number.NaN),
      regmirror: fmt.times(ours),
      ratio: fmt.times(ratio(ours, medians.peer ?? Number.NaN)),
      target: '1.00× the image',
      // A manifest fetched twice (a HEAD revalidation is 0 bytes) is a few hundred bytes: round to 2 places.
      met: Math.round(ours * 100) / 100 <= 1.0,
      samples,
      medians,
      unit: '× image size',
    });
  }
  return rows;
}
