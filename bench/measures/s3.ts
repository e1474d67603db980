// The s3 store against the fs store (regmirror both sides; the table's peer column is regmirror on fs): the app
// image pulled once through each, then the large blob served from each cache, streamed from Swift's s3api on
// loopback or read from the data directory.
//   - warm blob GET throughput, as a ratio s3/fs: Swift is Python and sends about 230 MB/s per stream here, so this
//     measures Swift as much as regmirror; informative, no target
//   - peak RSS while 8 clients GET that blob at once from the bucket (memory stays flat whatever the size)

import { startSwift, SWIFT_ACCESS_KEY, SWIFT_SECRET_KEY } from '../../test/support/swift.js';
import type { BenchContext } from '../lib/context.js';
import { appBlobPath, largeLayer } from '../lib/images.js';
import { fmt, type Row } from '../lib/report.js';
import { alternate } from '../lib/schedule.js';
import { serverStack, startRegmirror } from '../lib/servers.js';
import { mediansOf, ratio } from '../lib/stats.js';
import { download, pullImage } from '../lib/tools.js';
import { peakRssOfConcurrentGets, rssRow } from './warm.js';

const BUCKET = 'regmirror-bench';

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
        env: {
          REGMIRROR_STORAGE_DRIVER: 's3',
          REGMIRROR_STORAGE_S3_BUCKET: BUCKET,
          REGMIRROR_STORAGE_S3_ENDPOINT: swift.endpoint,
          REGMIRROR_STORAGE_S3_FORCE_PATH_STYLE: 'true',
          REGMIRROR_STORAGE_S3_ACCESS_KEY_ENV: 'BENCH_S3_KEY',
          REGMIRROR_STORAGE_S3_SECRET_KEY_ENV: 'BENCH_S3_SECRET',
          BENCH_S3_KEY: SWIFT_ACCESS_KEY,
          BENCH_S3_SECRET: SWIFT_SECRET_KEY,
        },
      }),
    );
    const reference = `${ctx.images.app.repository}:${ctx.images.app.tag}`;
    for (const [name, host] of [
      ['fs', onFs.host],
      ['s3', onS3.host],
    ] as const) {
      ctx.say(`s3: pulling ${reference} through regmirror on ${name} to fill its cache`);
      await pullImage(host, reference, ctx.scratch);
    }

    const large = largeLayer(ctx.images);
    const path = appBlobPath(ctx.images, large.digest);
    const runs = ctx.runs + 2;
    const urls = { peer: `${onFs.url}${path}`, regmirror: `${onS3.url}${path}` };
    const samples = await alternate(runs, ['peer', 'regmirror'] as const, async (name, run) => {
      ctx.say(`s3: warm blob GET ${fmt.mib(large.size)}: run ${run}/${runs}, ${name === 'peer' ? 'fs' : 's3'}`);
      const result = await download(urls[name], 300_000);
      if (result.bytes !== large.size) throw new Error(`${name}: got ${result.bytes} bytes of ${large.size}`);
      return result.bytesPerS;
    });
    const medians = mediansOf(samples);
    const throughput: Row = {
      id: 's3-warm-blob-get',
      measure: `warm blob GET throughput, ${fmt.mib(large.size)}: regmirror on s3 (Swift's s3api) vs on fs (the peer column)`,
      peer: fmt.gbps(medians.peer ?? Number.NaN),
      regmirror: fmt.gbps(medians.regmirror ?? Number.NaN),
      ratio: fmt.times(ratio(medians.regmirror ?? Number.NaN, medians.peer ?? Number.NaN)),
      target: 'informative (Swift ≈ 230 MB/s per stream here)',
      met: undefined,
      samples,
      medians,
      unit: 'bytes/s',
    };

    const rss = await alternate(ctx.runs, ['peer', 'regmirror'] as const, (name, run) => {
      ctx.say(`s3: peak RSS, 8 GETs of ${fmt.mib(large.size)} at once: run ${run}/${ctx.runs}, ${name === 'peer' ? 'fs' : 's3'}`);
      const server = name === 'peer' ? onFs : onS3;
      return peakRssOfConcurrentGets([server.pid], `${server.url}${path}`, large.size);
    });
    const memory = rssRow('s3-warm-peak-rss', `peak RSS, 8 concurrent ${fmt.mib(large.size)} GETs, warm: regmirror on s3 vs on fs (the peer column)`, rss);
    return [throughput, memory];
  } finally {
    await stopAll();
    await swift.destroy();
  }
}
