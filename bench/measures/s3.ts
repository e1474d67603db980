// The s3 store against the fs store (regmirror both sides; the table's peer column is regmirror on fs): the app
// image pulled once through each, then the large blob served from each cache, streamed from Swift's s3api on
// loopback or read from the data directory.
//   - warm blob GET throughput, as a ratio s3/fs: Swift is Python and sends about 230 MB/s per stream here, so this
//     measures Swift as much as regmirror; informative, no target
//   - the same GET with storage.s3.redirect (curl follows the 307 to the bucket) against streamed from the bucket
//   - peak RSS while 8 clients GET that blob at once from the bucket (memory stays flat whatever the size)
//   - the commit of a fill of that size (its last byte in → the object visible), with the parts streamed during
//     the fill against the whole upload at commit of the design before (a writer not told its key still does that),
//     the bytes appended at a cold fill's pace here

import { mkdtemp, rm } from 'node:fs/promises';
import nodePath from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { S3ObjectStore } from '../../src/store/s3-store.js';
import { s3StorageEnvironment, startSwift, SWIFT_ACCESS_KEY, SWIFT_REGION, SWIFT_SECRET_KEY, type Swift } from '../../test/support/swift.js';
import type { BenchContext } from '../lib/context.js';
import { appBlobPath, largeLayer } from '../lib/images.js';
import { fmt, type Row } from '../lib/report.js';
import { alternate } from '../lib/schedule.js';
import { serverStack, startRegmirror } from '../lib/servers.js';
import { mediansOf, ratio } from '../lib/stats.js';
import { download, pullImage } from '../lib/tools.js';
import { peakRssOfConcurrentGets, rssRow } from './warm.js';

const BUCKET = 'regmirror-bench';
/** The pace of the bytes into the commit measure: a cold fill from distribution on loopback here (benchmarks.md). */
const FILL_BYTES_PER_S = 250e6;
const FILL_CHUNK = 4 * 1024 * 1024;

export async function s3Measures(ctx: BenchContext): Promise<Row[]> {
  const { keep, stopAll } = serverStack();
  ctx.say('s3: starting Swift with its S3 API');
  const swift = await startSwift();
  try {
    await swift.createBucket(BUCKET);
    ctx.say('s3: starting regmirror on fs and on s3');
    const onFs = keep(await startRegmirror({ upstreamUrl: ctx.upstream.url, nodeArgs: ctx.regmirrorNodeArgs }));
    const onS3 = keep(
      await startRegmirror({
        upstreamUrl: ctx.upstream.url,
        nodeArgs: ctx.regmirrorNodeArgs,
        // Each process its own prefix: one node per prefix (a start aborts the uploads under its own).
        env: s3StorageEnvironment(swift, BUCKET, 'streamed/'),
      }),
    );
    const redirected = keep(
      await startRegmirror({
        upstreamUrl: ctx.upstream.url,
        nodeArgs: ctx.regmirrorNodeArgs,
        env: { ...s3StorageEnvironment(swift, BUCKET, 'redirected/'), REGMIRROR_STORAGE_S3_REDIRECT: 'true' },
      }),
    );
    const reference = `${ctx.images.app.repository}:${ctx.images.app.tag}`;
    for (const [name, host] of [
      ['fs', onFs.host],
      ['s3', onS3.host],
      ['s3 with redirects', redirected.host],
    ] as const) {
      ctx.say(`s3: pulling ${reference} through regmirror on ${name} to fill its cache`);
      await pullImage(host, reference, ctx.scratch);
    }

    const large = largeLayer(ctx.images);
    const path = appBlobPath(ctx.images, large.digest);
    const runs = ctx.runs + 2;
    /** Warm GETs of the large blob, alternating two URLs (the second followed through a redirect when told). */
    const gets = (labels: { peer: string; regmirror: string }, target: { peer: string; regmirror: string }, followRegmirror: boolean): Promise<Record<'peer' | 'regmirror', number[]>> =>
      alternate(runs, ['peer', 'regmirror'] as const, async (name, run) => {
        ctx.say(`s3: warm blob GET ${fmt.mib(large.size)}: run ${run}/${runs}, ${labels[name]}`);
        const result = await download(target[name], 300_000, {}, followRegmirror && name === 'regmirror');
        if (result.bytes !== large.size) throw new Error(`${name}: got ${result.bytes} bytes of ${large.size}`);
        return result.bytesPerS;
      });
    const throughput = informativeRow(
      's3-warm-blob-get',
      `warm blob GET throughput, ${fmt.mib(large.size)}: regmirror on s3 (Swift's s3api) vs on fs (the peer column)`,
      await gets({ peer: 'fs', regmirror: 's3' }, { peer: `${onFs.url}${path}`, regmirror: `${onS3.url}${path}` }, false),
      { format: fmt.gbps, target: 'informative (Swift ≈ 230 MB/s per stream here)', unit: 'bytes/s' },
    );
    const redirect = informativeRow(
      's3-warm-blob-get-redirected',
      `warm blob GET throughput, ${fmt.mib(large.size)}, on s3: a 307 to the bucket (storage.s3.redirect) vs streamed through regmirror (the peer column)`,
      await gets({ peer: 'streamed', regmirror: 'redirected' }, { peer: `${onS3.url}${path}`, regmirror: `${redirected.url}${path}` }, true),
      { format: fmt.gbps, target: 'informative (both bounded by Swift)', unit: 'bytes/s' },
    );

    const rss = await alternate(ctx.runs, ['peer', 'regmirror'] as const, (name, run) => {
      ctx.say(`s3: peak RSS, 8 GETs of ${fmt.mib(large.size)} at once: run ${run}/${ctx.runs}, ${name === 'peer' ? 'fs' : 's3'}`);
      const server = name === 'peer' ? onFs : onS3;
      return peakRssOfConcurrentGets([server.pid], `${server.url}${path}`, large.size);
    });
    const memory = rssRow('s3-warm-peak-rss', `peak RSS, 8 concurrent ${fmt.mib(large.size)} GETs, warm: regmirror on s3 vs on fs (the peer column)`, rss);
    return [throughput, redirect, memory, await commitTimes(ctx, swift, large.size)];
  } finally {
    await stopAll();
    await swift.destroy();
  }
}

/**
 * Seconds from a fill's last byte into the writer to the object visible in the bucket, for size bytes appended at
 * FILL_BYTES_PER_S: the peer column is a writer not told its key (the whole upload at commit, as before the streamed
 * fill), regmirror's the writer told it (parts uploaded during the fill, the commit completes them).
 */
async function commitTimes(ctx: BenchContext, swift: Swift, size: number): Promise<Row> {
  const spools = await mkdtemp(nodePath.join(ctx.scratch, 's3-commit-'));
  const store = new S3ObjectStore(
    {
      bucket: BUCKET,
      region: SWIFT_REGION,
      endpoint: swift.endpoint,
      forcePathStyle: true,
      prefix: 'commit/',
      credentials: { accessKeyId: SWIFT_ACCESS_KEY, secretAccessKey: SWIFT_SECRET_KEY },
      requestTimeoutMs: 60_000,
      redirectTtlMs: undefined,
    },
    spools,
  );
  const chunk = Buffer.alloc(FILL_CHUNK, 7);
  try {
    await store.init();
    const samples = await alternate(ctx.runs, ['peer', 'regmirror'] as const, async (name, run) => {
      const key = `blobs/commit-${name}-${run}`;
      const writer = await store.createWriter(name === 'regmirror' ? key : undefined);
      const started = performance.now();
      for (let written = 0; written < size; written += FILL_CHUNK) {
        await writer.append(chunk.subarray(0, Math.min(FILL_CHUNK, size - written)));
        const due = started + ((written + FILL_CHUNK) / FILL_BYTES_PER_S) * 1000;
        if (due > performance.now()) await sleep(due - performance.now());
      }
      const filled = performance.now();
      await writer.commit(key);
      const committed = performance.now();
      await writer.close();
      await store.delete(key);
      ctx.say(`s3: commit of a ${fmt.mib(size)} fill: run ${run}/${ctx.runs}, ${name === 'peer' ? 'whole at commit' : 'streamed'}: fill ${fmt.seconds((filled - started) / 1000)}, commit ${fmt.seconds((committed - filled) / 1000)}`);
      return (committed - filled) / 1000;
    });
    return informativeRow(
      's3-fill-commit',
      `fill commit (last byte in → object visible), ${fmt.mib(size)} filled at ${fmt.gbps(FILL_BYTES_PER_S)}: parts streamed during the fill vs the whole upload at commit (the peer column, as before)`,
      samples,
      { format: fmt.seconds, target: 'informative (lower is better; the bucket’s upload speed bounds both)', unit: 's' },
    );
  } finally {
    store.close();
    await rm(spools, { recursive: true, force: true });
  }
}

/** A row with no target: the medians of the samples, peer and regmirror, and their ratio. */
function informativeRow(id: string, measure: string, samples: Record<'peer' | 'regmirror', number[]>, shown: { format: (value: number) => string; target: string; unit: string }): Row {
  const medians = mediansOf(samples);
  const peer = medians.peer ?? Number.NaN;
  const regmirror = medians.regmirror ?? Number.NaN;
  return { id, measure, peer: shown.format(peer), regmirror: shown.format(regmirror), ratio: fmt.times(ratio(regmirror, peer)), target: shown.target, met: undefined, samples, medians, unit: shown.unit };
}
