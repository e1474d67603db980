// Warm measures: the image pulled once through each server, then served from their caches.
//   - a 500 MiB blob GET: the peer, regmirror, regmirror behind nginx (X-Accel-Redirect), nginx alone
//   - peak RSS while 8 clients GET that blob at once
//   - requests/s and latency with wrk (32 connections): manifest by tag, manifest by digest, blob HEAD

import { MEDIA_TYPES } from '../../test/support/images.js';
import { startNginx, type Nginx } from '../../test/support/nginx.js';
import type { BenchContext } from '../lib/context.js';
import { appBlobPath, largeLayer } from '../lib/images.js';
import { fmt, type Row } from '../lib/report.js';
import { alternate } from '../lib/schedule.js';
import { serverStack, startPeer, startRegmirror, type BenchServer } from '../lib/servers.js';
import { MiB, mediansOf, ratio } from '../lib/stats.js';
import { abHead, childPids, download, pullImage, sampleRss, wrk } from '../lib/tools.js';

const OFFLOAD_PREFIX = '/_regmirror_data';
const MANIFEST_ACCEPT = [MEDIA_TYPES.ociIndex, MEDIA_TYPES.ociManifest, MEDIA_TYPES.dockerManifestList, MEDIA_TYPES.dockerManifest].join(', ');
const RSS_LIMIT = 128 * MiB;
const CONCURRENT_PULLS = 8;

export async function warmMeasures(ctx: BenchContext): Promise<Row[]> {
  const { keep, stopAll } = serverStack();
  try {
    ctx.say('warm: starting the peer, regmirror, regmirror with the offload, nginx in front and nginx alone');
    const peer = keep(await startPeer(ctx.upstream.url));
    const mirror = keep(await startRegmirror({ upstreamUrl: ctx.upstream.url, nodeArgs: ctx.regmirrorNodeArgs }));
    const offloaded = keep(await startRegmirror({ upstreamUrl: ctx.upstream.url, nodeArgs: ctx.regmirrorNodeArgs, env: { REGMIRROR_OFFLOAD_X_ACCEL_REDIRECT: OFFLOAD_PREFIX } }));
    const nginx = keep(await startNginx({ upstream: offloaded.host, dataDir: offloaded.dataDir }));
    const reference = `${ctx.images.app.repository}:${ctx.images.app.tag}`;
    for (const [name, host] of [
      ['peer', peer.host],
      ['regmirror', mirror.host],
      ['regmirror+nginx', `127.0.0.1:${nginx.port}`],
    ] as const) {
      ctx.say(`warm: pulling ${reference} through ${name} to fill its cache`);
      await pullImage(host, reference, ctx.scratch);
    }
    // The same file nginx sends for the offload, by a server block that does nothing else: the ceiling.
    const plainNginx = keep(await startNginx({ upstream: offloaded.host, dataDir: offloaded.dataDir, block: (port) => staticBlock(port, offloaded.dataDir) }));

    return [
      ...(await throughput(ctx, peer, mirror, nginx, plainNginx)),
      await warmRss(ctx, peer, mirror, offloaded, nginx),
      ...(await requestRates(ctx, peer, mirror)),
    ];
  } finally {
    await stopAll();
  }
}

function staticBlock(port: number, dataDir: string): string {
  return `server {
    listen 127.0.0.1:${port};
    location /blobs/ { root ${dataDir}; sendfile off; output_buffers 2 1m; }
    location = /healthz { return 200; }
}`;
}

async function throughput(ctx: BenchContext, peer: BenchServer, mirror: BenchServer, nginx: Nginx, plainNginx: Nginx): Promise<Row[]> {
  const large = largeLayer(ctx.images);
  const hex = large.digest.slice('sha256:'.length);
  const path = appBlobPath(ctx.images, large.digest);
  const urls = {
    peer: `${peer.url}${path}`,
    regmirror: `${mirror.url}${path}`,
    'regmirror+nginx': `${nginx.url}${path}`,
    'nginx alone': `${plainNginx.url}/blobs/sha256/${hex.slice(0, 2)}/${hex}`,
  };
  // Cheap: a few more runs than elsewhere steady the median.
  const runs = ctx.runs + 2;
  const samples = await alternate(runs, ['peer', 'regmirror', 'regmirror+nginx', 'nginx alone'] as const, async (name, run) => {
    ctx.say(`warm blob GET ${fmt.mib(large.size)}: run ${run}/${runs}, ${name}`);
    const result = await download(urls[name], 120_000);
    if (result.bytes !== large.size) throw new Error(`${name}: got ${result.bytes} bytes of ${large.size}`);
    return result.bytesPerS;
  });
  const medians = mediansOf(samples);
  const peerRate = medians.peer ?? Number.NaN;
  const plain = ratio(medians.regmirror ?? Number.NaN, peerRate);
  const offload = ratio(medians['regmirror+nginx'] ?? Number.NaN, peerRate);
  const size = fmt.mib(large.size);
  return [
    {
      id: 'warm-blob-get',
      measure: `warm blob GET throughput, ${size}`,
      peer: fmt.gbps(peerRate),
      regmirror: fmt.gbps(medians.regmirror ?? Number.NaN),
      ratio: fmt.times(plain),
      target: '≥ 1.0× the peer',
      met: plain >= 1.0,
      samples,
      medians,
      unit: 'bytes/s',
    },
    {
      id: 'warm-blob-get-offload',
      measure: `warm blob GET throughput, ${size}, nginx in front (X-Accel-Redirect)`,
      peer: fmt.gbps(peerRate),
      regmirror: `${fmt.gbps(medians['regmirror+nginx'] ?? Number.NaN)} (nginx alone: ${fmt.gbps(medians['nginx alone'] ?? Number.NaN)})`,
      ratio: fmt.times(offload),
      target: '≥ 1.4× the peer',
      met: offload >= 1.4,
      samples,
      medians,
      unit: 'bytes/s',
    },
  ];
}

/**
 * Peak resident memory of the serving processes while CONCURRENT_PULLS clients GET the large blob at once:
 * for several processes (regmirror and nginx's worker), the sum of each one's peak.
 */
export async function peakRssOfConcurrentGets(pids: number[], url: string, expectedBytes: number): Promise<number> {
  const samplers = await Promise.all(pids.map((pid) => sampleRss(pid)));
  const stop = async (): Promise<number> => (await Promise.all(samplers.map((sampler) => sampler.stop()))).reduce((sum, peak) => sum + peak, 0);
  const results = await Promise.all(Array.from({ length: CONCURRENT_PULLS }, () => download(url, 600_000))).finally(stop);
  for (const result of results) if (result.bytes !== expectedBytes) throw new Error(`got ${result.bytes} bytes of ${expectedBytes}`);
  return stop();
}

export function rssRow(id: string, measure: string, samples: Record<string, number[]>): Row {
  const medians = mediansOf(samples);
  const peerRss = medians.peer ?? Number.NaN;
  const ours = medians.regmirror ?? Number.NaN;
  const offloaded = medians['regmirror+nginx'];
  return {
    id,
    measure,
    peer: fmt.mib(peerRss),
    regmirror: offloaded === undefined ? fmt.mib(ours) : `${fmt.mib(ours)} (behind nginx: ${fmt.mib(offloaded)}, node and nginx's worker)`,
    ratio: fmt.times(ratio(ours, peerRss)),
    target: `< ${fmt.mib(RSS_LIMIT)}`,
    met: ours < RSS_LIMIT,
    samples,
    medians,
    unit: 'bytes',
  };
}

async function warmRss(ctx: BenchContext, peer: BenchServer, mirror: BenchServer, offloaded: BenchServer, nginx: Nginx): Promise<Row> {
  const large = largeLayer(ctx.images);
  const path = appBlobPath(ctx.images, large.digest);
  const targets = {
    peer: { pids: [peer.pid], url: `${peer.url}${path}` },
    regmirror: { pids: [mirror.pid], url: `${mirror.url}${path}` },
    'regmirror+nginx': { pids: [offloaded.pid, ...(await childPids(nginx.pid))], url: `${nginx.url}${path}` },
  };
  const samples = await alternate(ctx.runs, ['peer', 'regmirror', 'regmirror+nginx'] as const, (name, run) => {
    ctx.say(`warm peak RSS, ${CONCURRENT_PULLS} GETs of ${fmt.mib(large.size)} at once: run ${run}/${ctx.runs}, ${name}`);
    return peakRssOfConcurrentGets(targets[name].pids, targets[name].url, large.size);
  });
  return rssRow('warm-peak-rss', `peak RSS, ${CONCURRENT_PULLS} concurrent ${fmt.mib(large.size)} GETs, warm`, samples);
}

interface RateSpec {
  id: string;
  measure: string;
  path: string;
  method: 'GET' | 'HEAD';
  headers: Record<string, string>;
  factor: number;
}

async function requestRates(ctx: BenchContext, peer: BenchServer, mirror: BenchServer): Promise<Row[]> {
  const app = ctx.images.app;
  const specs: RateSpec[] = [
    { id: 'manifest-by-tag', measure: 'warm manifest GET by tag', path: `/v2/${app.repository}/manifests/${app.tag}`, method: 'GET', headers: { accept: MANIFEST_ACCEPT }, factor: 10 },
    { id: 'manifest-by-digest', measure: 'warm manifest GET by digest', path: `/v2/${app.repository}/manifests/${app.manifestDigest}`, method: 'GET', headers: { accept: MANIFEST_ACCEPT }, factor: 5 },
    { id: 'blob-head', measure: 'warm blob HEAD', path: appBlobPath(ctx.images, app.layers[1]?.digest ?? ''), method: 'HEAD', headers: {}, factor: 5 },
  ];
  const rows: Row[] = [];
  for (const spec of specs) {
    const servers = { peer, regmirror: mirror };
    const details: Record<string, number[]> = { 'peer p99 ms': [], 'regmirror p99 ms': [], 'peer errors': [], 'regmirror errors': [] };
    const rates = await alternate(ctx.runs, ['peer', 'regmirror'] as const, async (name, run) => {
      ctx.say(`${spec.measure} (${spec.method === 'HEAD' ? 'ab' : 'wrk'}, 32 connections, ${ctx.wrkSeconds} s): run ${run}/${ctx.runs}, ${name}`);
      const url = `${servers[name].url}${spec.path}`;
      const result =
        spec.method === 'HEAD'
          ? await abHead(url, { connections: 32, durationS: ctx.wrkSeconds })
          : await wrk(url, { connections: 32, threads: 2, durationS: ctx.wrkSeconds, headers: spec.headers });
      if (result.errors > 0) ctx.say(`${spec.measure}: ${name} answered ${result.errors} errors in ${result.requests} requests`);
      details[`${name} p99 ms`]?.push(result.p99Ms);
      details[`${name} errors`]?.push(result.errors);
      return result.requestsPerS;
    });
    const samples = { ...rates, ...details };
    const medians = mediansOf(samples);
    const speedup = ratio(medians.regmirror ?? Number.NaN, medians.peer ?? Number.NaN);
    const errors = (medians['regmirror errors'] ?? 0) > 0 ? ' (with errors)' : '';
    rows.push({
      id: spec.id,
      measure: `${spec.measure}: requests/s, p99 (${spec.method === 'HEAD' ? 'ab -k' : 'wrk'}, 32 connections)`,
      peer: `${fmt.rps(medians.peer ?? Number.NaN)}, p99 ${fmt.ms(medians['peer p99 ms'] ?? Number.NaN)}`,
      regmirror: `${fmt.rps(medians.regmirror ?? Number.NaN)}, p99 ${fmt.ms(medians['regmirror p99 ms'] ?? Number.NaN)}${errors}`,
      ratio: fmt.times(speedup),
      target: `≥ ${spec.factor}× the peer`,
      met: speedup >= spec.factor && errors === '',
      samples,
      medians,
      unit: 'requests/s',
    });
  }
  return rows;
}
