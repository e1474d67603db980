// Metadata at scale (regmirror alone; distribution keeps no such index): data directories seeded through
// the SQLite MetadataStore with N blobs and N/10 tags (each tag its own manifest file), then
//   - start-up time: spawn to the first /healthz answer
//   - lookup latency, one request at a time: blob HEAD by a random digest, manifest GET by a random tag
// at each N; the target is that neither grows with N.

import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { makeTempDir, removeDir } from '../../test/support/temp.js';
import { MEDIA_TYPES } from '../../test/support/images.js';
import { SqliteMetadataStore } from '../../src/meta/sqlite-store.js';
import { contentKey } from '../../src/store/layout.js';
import { digestOf, type Digest } from '../../src/oci/digest.js';
import type { BenchBasics } from '../lib/context.js';
import { fmt, type Row } from '../lib/report.js';
import { alternate } from '../lib/schedule.js';
import { startRegmirror, type BenchServer } from '../lib/servers.js';
import { mediansOf, ratio } from '../lib/stats.js';
import { sequentialLatency } from '../lib/tools.js';

/** Growth from the smallest to the largest count still called flat. */
const FLAT = 1.5;
const REPOSITORIES = 100;
/** Paths wrk picks from at random: spread over the whole key space. */
const SAMPLED_PATHS = 1000;

interface Seeded {
  count: number;
  dataDir: string;
  blobPaths: string[];
  tagPaths: string[];
}

function digestOfText(text: string): Digest {
  return digestOf(Buffer.from(text));
}

/** A data directory with count blobs and count/10 tags, as a plain registry (registry '') holds them. */
async function seed(count: number): Promise<Seeded> {
  const dataDir = await makeTempDir(`regmirror-bench-meta-${fmt.count(count)}-`);
  const meta = new SqliteMetadataStore(path.join(dataDir, 'metadata.sqlite'));
  const now = Date.now();
  const stride = Math.max(1, Math.floor(count / SAMPLED_PATHS));
  const blobPaths: string[] = [];
  const tagPaths: string[] = [];
  try {
    for (let index = 0; index < count; index++) {
      const digest = digestOfText(`bench blob ${index}`);
      // Each held by the repository it is asked for under: a plain registry's repositories are hosted.
      await meta.putBlob(digest, 1000 + index, now, { registry: '', name: `bench/repo-${index % REPOSITORIES}` });
      if (index % stride === 0) blobPaths.push(`/v2/bench/repo-${index % REPOSITORIES}/blobs/${digest}`);
    }
    const tags = Math.floor(count / 10);
    const tagStride = Math.max(1, Math.floor(tags / SAMPLED_PATHS));
    const folders = new Set<string>();
    for (let index = 0; index < tags; index++) {
      const config = digestOfText(`bench blob ${index}`);
      const bytes = Buffer.from(
        JSON.stringify({ schemaVersion: 2, mediaType: MEDIA_TYPES.ociManifest, config: { mediaType: MEDIA_TYPES.ociConfig, digest: config, size: 1000 + index }, layers: [] }),
      );
      const digest = digestOf(bytes);
      const file = path.join(dataDir, contentKey(digest));
      const folder = path.dirname(file);
      if (!folders.has(folder)) {
        await mkdir(folder, { recursive: true });
        folders.add(folder);
      }
      await writeFile(file, bytes);
      const repository = { registry: '', name: `bench/repo-${index % REPOSITORIES}` };
      await meta.putManifest({ digest, mediaType: MEDIA_TYPES.ociManifest, size: bytes.length }, now, { references: [{ digest: config, role: 'config' }], holder: repository });
      await meta.addRepository(repository, now);
      const tag = `t${index}`;
      await meta.putTag(repository, tag, { digest, fetchedAt: now });
      if (index % tagStride === 0) tagPaths.push(`/v2/${repository.name}/manifests/${tag}`);
    }
  } finally {
    await meta.close();
  }
  return { count, dataDir, blobPaths, tagPaths };
}

export async function metadataMeasures(ctx: BenchBasics): Promise<Row[]> {
  const counts = ctx.quick ? [1_000, 10_000] : [1_000, 10_000, 100_000];
  const seeded: Seeded[] = [];
  const running: BenchServer[] = [];
  try {
    for (const count of counts) {
      ctx.say(`metadata at scale: seeding ${fmt.count(count)} blobs and ${fmt.count(count / 10)} tags`);
      seeded.push(await seed(count));
    }
    const byLabel = new Map(seeded.map((data) => [fmt.count(data.count), data]));
    const labels = [...byLabel.keys()];
    const startup = await alternate(ctx.runs, labels, async (name, run) => {
      ctx.say(`metadata at scale: start-up with ${name} blobs, run ${run}/${ctx.runs}`);
      const started = performance.now();
      const server = await startRegmirror({ dataDir: byLabel.get(name)?.dataDir, nodeArgs: ctx.regmirrorNodeArgs });
      const elapsed = performance.now() - started;
      await server.stop();
      return elapsed;
    });
    const servers = new Map<string, BenchServer>();
    for (const [name, data] of byLabel) {
      const server = await startRegmirror({ dataDir: data.dataDir, nodeArgs: ctx.regmirrorNodeArgs });
      running.push(server);
      servers.set(name, server);
    }
    const tagLatency: Record<string, number[]> = Object.fromEntries(labels.map((name) => [name, []]));
    const seconds = Math.max(2, Math.round(ctx.wrkSeconds / 2));
    const headLatency = await alternate(ctx.runs, labels, async (name, run) => {
      const data = byLabel.get(name);
      const server = servers.get(name);
      if (data === undefined || server === undefined) throw new Error(`no server for ${name}`);
      ctx.say(`metadata at scale: lookups with ${name} blobs, run ${run}/${ctx.runs}`);
      const head = await sequentialLatency(server.url, { method: 'HEAD', paths: data.blobPaths, durationS: seconds });
      const tag = await sequentialLatency(server.url, { method: 'GET', paths: data.tagPaths, headers: { accept: MEDIA_TYPES.ociManifest }, durationS: seconds });
      if (head.errors > 0 || tag.errors > 0) throw new Error(`lookups at ${name}: ${head.errors} HEAD and ${tag.errors} GET errors`);
      tagLatency[name]?.push(tag.p50Ms);
      return head.p50Ms;
    });
    return [
      scaleRow('metadata-startup', 'metadata at scale: start-up time (spawn to /healthz)', startup, fmt.ms, 'ms'),
      scaleRow('metadata-blob-head', 'metadata at scale: blob HEAD latency by random digest, p50 (one at a time)', headLatency, fmt.ms, 'ms'),
      scaleRow('metadata-tag-get', 'metadata at scale: manifest GET latency by random tag, p50 (one at a time)', tagLatency, fmt.ms, 'ms'),
    ];
  } finally {
    for (const server of running) await server.stop();
    for (const data of seeded) await removeDir(data.dataDir);
  }
}

function scaleRow(id: string, measure: string, samples: Record<string, number[]>, format: (value: number) => string, unit: string): Row {
  const medians = mediansOf(samples);
  const labels = Object.keys(samples);
  const first = medians[labels[0] ?? ''] ?? Number.NaN;
  const lastLabel = labels[labels.length - 1] ?? '';
  const growth = ratio(medians[lastLabel] ?? Number.NaN, first);
  return {
    id,
    measure: `${measure}, ${labels.join(' / ')} blobs (tags: a tenth)`,
    peer: '—',
    regmirror: labels.map((name) => format(medians[name] ?? Number.NaN)).join(' / '),
    ratio: `${fmt.times(growth)} (${lastLabel} / ${labels[0] ?? ''})`,
    target: `flat (≤ ${FLAT}× from ${labels[0] ?? ''} to ${lastLabel})`,
    met: growth <= FLAT,
    samples,
    medians,
    unit,
  };
}
