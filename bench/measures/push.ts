// Pushing to regmirror (a plain instance: every repository hosted) against distribution 2.8.2 as a plain registry:
//   - one 500 MiB layer (50 MiB with --quick) pushed whole, POST then one PUT with the body (the monolithic form
//     both take: distribution 2.8.2 does not take a body on the POST), and in 8 MiB PATCH chunks with
//     Content-Range, then an empty PUT: throughput, target ≥ 1.0× distribution
//   - the whole bench/app index (both platforms, --all) with skopeo copy from its OCI layout, each run on fresh
//     servers (so that nothing is already there to mount): time, target ≥ 1.0× distribution's speed
// The client is node (undici) streaming from the layout's blob file, the same for both servers.

import { createReadStream } from 'node:fs';
import { performance } from 'node:perf_hooks';
import { request } from 'undici';
import { layoutBlobPath } from '../../test/support/images.js';
import { skopeo } from '../../test/support/skopeo.js';
import type { BenchContext } from '../lib/context.js';
import { largeLayer } from '../lib/images.js';
import { fmt, type Row } from '../lib/report.js';
import { alternate } from '../lib/schedule.js';
import { serverStack, startPlainPeer, startRegmirror, type BenchServer } from '../lib/servers.js';
import { mediansOf, MiB, ratio } from '../lib/stats.js';

const CHUNK_BYTES = 8 * MiB;

export async function pushMeasures(ctx: BenchContext): Promise<Row[]> {
  const large = largeLayer(ctx.images);
  const file = layoutBlobPath(ctx.layoutDir, large.digest);
  const { keep, stopAll } = serverStack();
  const rows: Row[] = [];
  try {
    ctx.say('push: starting distribution (plain) and regmirror (plain)');
    const servers: Record<'peer' | 'regmirror', BenchServer> = {
      peer: keep(await startPlainPeer()),
      regmirror: keep(await startRegmirror({ nodeArgs: ctx.regmirrorNodeArgs })),
    };
    for (const [id, label, chunkBytes] of [
      ['push-layer-whole', 'whole (POST, then one PUT)', undefined],
      ['push-layer-chunked', `in ${fmt.mib(CHUNK_BYTES)} PATCH chunks`, CHUNK_BYTES],
    ] as const) {
      const samples = await alternate(ctx.runs, ['peer', 'regmirror'] as const, async (name, run) => {
        ctx.say(`push: ${fmt.mib(large.size)} layer ${label}: run ${run}/${ctx.runs}, ${name}`);
        const seconds = await pushBlob(servers[name].url, `bench/${id}-${run}`, file, large.digest, large.size, chunkBytes);
        return large.size / seconds;
      });
      rows.push(targetRow(id, `push of one ${fmt.mib(large.size)} layer, ${label}: throughput`, samples, fmt.gbps, 'bytes/s', 'faster-is-more'));
    }
  } finally {
    await stopAll();
  }

  const image = ctx.images.app;
  const samples = await alternate(ctx.runs, ['peer', 'regmirror'] as const, async (name, run) => {
    ctx.say(`push: skopeo copy --all bench/app: run ${run}/${ctx.runs}, ${name} (fresh server)`);
    const server = name === 'peer' ? await startPlainPeer() : await startRegmirror({ nodeArgs: ctx.regmirrorNodeArgs });
    try {
      const started = performance.now();
      await skopeo(['copy', '--quiet', '--all', '--preserve-digests', '--dest-tls-verify=false', `oci:${ctx.layoutDir}:app`, `docker://${server.host}/${image.repository}:${image.tag}`], { timeoutMs: 900_000 });
      return (performance.now() - started) / 1000;
    } finally {
      await server.stop();
    }
  });
  const measure = `skopeo copy --all of bench/app (${fmt.mib(image.pullBytes)} for linux/amd64 and the arm64 image) to a fresh registry: time (ratio: peer's time / regmirror's)`;
  rows.push(targetRow('push-image-skopeo', measure, samples, fmt.seconds, 's', 'less-is-faster'));
  return rows;
}

/** A row with the target ≥ 1.0×: regmirror's median over the peer's (or, for times, the peer's over regmirror's). */
function targetRow(id: string, measure: string, samples: Record<'peer' | 'regmirror', number[]>, format: (value: number) => string, unit: string, sense: 'faster-is-more' | 'less-is-faster'): Row {
  const medians = mediansOf(samples);
  const peer = medians.peer ?? Number.NaN;
  const regmirror = medians.regmirror ?? Number.NaN;
  const value = sense === 'faster-is-more' ? ratio(regmirror, peer) : ratio(peer, regmirror);
  return { id, measure, peer: format(peer), regmirror: format(regmirror), ratio: fmt.times(value), target: '≥ 1.0×', met: value >= 1.0, samples, medians, unit };
}

/** Pushes a blob from its file: POST, then one PUT with the body, or PATCH chunks and an empty PUT. Seconds taken. */
async function pushBlob(origin: string, repository: string, file: string, digest: string, size: number, chunkBytes: number | undefined): Promise<number> {
  const started = performance.now();
  const opened = await request(`${origin}/v2/${repository}/blobs/uploads/`, { method: 'POST' });
  await opened.body.dump();
  if (opened.statusCode !== 202) throw new Error(`POST upload: ${opened.statusCode}`);
  let location = new URL(String(opened.headers.location), origin);
  if (chunkBytes !== undefined) {
    for (let start = 0; start < size; start += chunkBytes) {
      const end = Math.min(size, start + chunkBytes) - 1;
      const chunk = await request(location, {
        method: 'PATCH',
        body: createReadStream(file, { start, end }),
        headers: { 'content-type': 'application/octet-stream', 'content-length': String(end - start + 1), 'content-range': `${start}-${end}` },
      });
      await chunk.body.dump();
      if (chunk.statusCode !== 202) throw new Error(`PATCH ${start}-${end}: ${chunk.statusCode}`);
      location = new URL(String(chunk.headers.location), origin);
    }
  }
  location.searchParams.set('digest', digest);
  const whole = chunkBytes === undefined;
  const done = await request(location, {
    method: 'PUT',
    ...(whole ? { body: createReadStream(file) } : {}),
    headers: { 'content-type': 'application/octet-stream', 'content-length': whole ? String(size) : '0' },
  });
  await done.body.dump();
  if (done.statusCode !== 201) throw new Error(`PUT upload: ${done.statusCode}`);
  return (performance.now() - started) / 1000;
}
