// A canary folder around a data directory: sentinel files beside it, above it and in look-alike siblings
// (`data-sibling`, `datax`: a prefix check without a separator lets a path into them), whose names,
// modes, sizes and times are compared before and after, so a write, a delete or a new file outside the
// data directory is seen. Each sentinel holds a marker that must never appear in an answer.

import { randomBytes } from 'node:crypto';
import { lstat, mkdir, readdir, writeFile } from 'node:fs/promises';
import path from 'node:path';

export interface Canary {
  root: string;
  /** The data directory to give the server: root/inner/data. */
  dataDir: string;
  /** Paths of the sentinel files, relative to the data directory (`../sentinel.txt`, …), for traversal payloads. */
  sentinelsFromData: string[];
  /** Text inside every sentinel; an answer that contains it read a file outside the data directory. */
  marker: string;
  /** What is under root except the data directory, as one line per entry. */
  snapshot(): Promise<Map<string, string>>;
}

/** Lays out the canary under `root` (which must exist and be empty). */
export async function makeCanary(root: string): Promise<Canary> {
  const marker = `regmirror-canary-${randomBytes(8).toString('hex')}`;
  const inner = path.join(root, 'inner');
  const dataDir = path.join(inner, 'data');
  await mkdir(dataDir, { recursive: true });
  const sentinels = [
    path.join(root, 'sentinel.txt'),
    path.join(inner, 'sentinel.txt'),
    path.join(inner, 'data-sibling', 'sentinel.txt'),
    path.join(inner, 'datax', 'sentinel.txt'),
    path.join(inner, 'data-sibling', 'blobs', 'sha256', 'sentinel.txt'),
  ];
  for (const file of sentinels) {
    await mkdir(path.dirname(file), { recursive: true });
    await writeFile(file, `${marker}\n`);
  }
  return {
    root,
    dataDir,
    sentinelsFromData: sentinels.map((file) => path.relative(dataDir, file)),
    marker,
    snapshot: () => snapshotOutside(root, dataDir),
  };
}

async function snapshotOutside(root: string, excluded: string): Promise<Map<string, string>> {
  const entries = new Map<string, string>();
  const walk = async (dir: string): Promise<void> => {
    for (const name of (await readdir(dir)).sort()) {
      const full = path.join(dir, name);
      if (full === excluded) continue;
      const stat = await lstat(full);
      entries.set(path.relative(root, full), `mode=${stat.mode.toString(8)} size=${stat.size} mtime=${stat.mtimeMs} ctime=${stat.ctimeMs}`);
      if (stat.isDirectory()) await walk(full);
    }
  };
  await walk(root);
  return entries;
}

/** What changed between two snapshots, one line per entry; empty when nothing did. */
export function snapshotChanges(before: Map<string, string>, after: Map<string, string>): string[] {
  const changes: string[] = [];
  for (const [name, facts] of after) {
    const earlier = before.get(name);
    if (earlier === undefined) changes.push(`new: ${name} (${facts})`);
    else if (earlier !== facts) changes.push(`changed: ${name} (${earlier} → ${facts})`);
  }
  for (const name of before.keys()) if (!after.has(name)) changes.push(`removed: ${name}`);
  return changes;
}
