// Commits per second of small objects through the fs ObjectStore (putBytes of 1 KiB, spools of 4 KiB
// committed), one at a time and 8 at once, on the filesystem of --dir: what durable commits cost. The 256
// content folders exist beforehand, as in any store that has cached a few thousand objects.
// node --import tsx bench/commit-rate.ts [--count N] [--rounds R] [--dir DIR] [--store FILE ...]
// Each --store is an fs-store.ts to compare (e.g. an older one from `git archive`); rounds alternate them.

import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { digestOf } from '../src/oci/digest.js';
import { contentKey } from '../src/store/layout.js';
import type { ObjectStore } from '../src/store/object-store.js';

interface StoreModule {
  FsObjectStore: new (root: string) => ObjectStore & { init(): Promise<void> };
}

type Workload = 'putBytes 1 KiB' | 'spool 4 KiB';
const WORKLOADS: Workload[] = ['putBytes 1 KiB', 'spool 4 KiB'];
const CONCURRENCY = [1, 8];

async function commit(store: ObjectStore, workload: Workload): Promise<void> {
  if (workload === 'putBytes 1 KiB') {
    const bytes = randomBytes(1024);
    await store.putBytes(contentKey(digestOf(bytes)), bytes);
    return;
  }
  const bytes = randomBytes(4096);
  const spool = await store.createWriter();
  await spool.append(bytes);
  await spool.commit(contentKey(digestOf(bytes)));
  await spool.close();
}

/** Commits per second of `count` commits into a fresh store, `concurrency` at a time. */
async function rate(module: StoreModule, dir: string, workload: Workload, count: number, concurrency: number): Promise<number> {
  const root = await mkdtemp(path.join(dir, 'regmirror-commit-rate-'));
  try {
    const store = new module.FsObjectStore(root);
    await store.init();
    for (let folder = 0; folder < 256; folder++) {
      await mkdir(path.dirname(path.join(root, contentKey(`sha256:${folder.toString(16).padStart(2, '0')}${'0'.repeat(62)}`))), { recursive: true });
    }
    let next = 0;
    const started = process.hrtime.bigint();
    await Promise.all(
      Array.from({ length: concurrency }, async () => {
        while (next < count) {
          next += 1;
          await commit(store, workload);
        }
      }),
    );
    const seconds = Number(process.hrtime.bigint() - started) / 1e9;
    return count / seconds;
  } finally {
    await rm(root, { recursive: true, force: true });
  }
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? (sorted[middle] ?? 0) : ((sorted[middle - 1] ?? 0) + (sorted[middle] ?? 0)) / 2;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      count: { type: 'string', default: '2000' },
      rounds: { type: 'string', default: '5' },
      dir: { type: 'string', default: os.tmpdir() },
      store: { type: 'string', multiple: true },
    },
    strict: true,
  });
  const count = Number(values.count);
  const rounds = Number(values.rounds);
  const here = path.dirname(fileURLToPath(import.meta.url));
  const files = values.store ?? [path.join(here, '..', 'src', 'store', 'fs-store.ts')];
  const stores = await Promise.all(files.map(async (file) => ({ file, module: (await import(pathToFileURL(path.resolve(file)).href)) as StoreModule })));
  const samples = new Map<string, number[]>();
  for (let round = 0; round < rounds; round++) {
    for (const workload of WORKLOADS) {
      for (const concurrency of CONCURRENCY) {
        for (const { file, module } of stores) {
          const key = `${file}\t${workload}\t${concurrency}`;
          samples.set(key, [...(samples.get(key) ?? []), await rate(module, values.dir, workload, count, concurrency)]);
        }
      }
    }
  }
  console.log(`${count} commits per sample, ${rounds} rounds, in ${values.dir}; median commits/s (min–max)`);
  for (const [key, rates] of samples) {
    const [file, workload, concurrency] = key.split('\t');
    console.log(`${file}  ${workload}  ×${concurrency}: ${median(rates).toFixed(0)} (${Math.min(...rates).toFixed(0)}–${Math.max(...rates).toFixed(0)})`);
  }
}

await main();
