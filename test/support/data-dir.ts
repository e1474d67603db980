// What a regmirror data directory holds, as tests read it (and damage it on purpose): the files under a
// folder, and the rows of its metadata.sqlite, opened beside the running process (SQLite in WAL mode).
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import Database from 'better-sqlite3';

/** Every file under dir, recursively ([] when dir does not exist). */
export async function filesUnder(dir: string): Promise<string[]> {
  let entries;
  try {
    entries = await readdir(dir, { withFileTypes: true, recursive: true });
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw error;
  }
  return entries.filter((entry) => entry.isFile()).map((entry) => join(entry.parentPath, entry.name));
}

function openMetadata(dataDir: string, readonly: boolean): Database.Database {
  const db = new Database(join(dataDir, 'metadata.sqlite'), { readonly, fileMustExist: true });
  // The running mirror may be writing: wait for its lock rather than fail.
  db.pragma('busy_timeout = 5000');
  return db;
}

export interface MetadataRows {
  blobs: string[];
  manifests: string[];
  /** `repository:tag` → digest. */
  tags: Record<string, string>;
}

/** The digests of the blob and manifest records, and the tags, sorted. */
export function metadataRows(dataDir: string): MetadataRows {
  const db = openMetadata(dataDir, true);
  try {
    const digests = (table: 'blobs' | 'manifests'): string[] =>
      (db.prepare(`SELECT digest FROM ${table} ORDER BY digest`).all() as Array<{ digest: string }>).map((row) => row.digest);
    const tags = db.prepare('SELECT repository, tag, digest FROM tags ORDER BY repository, tag').all() as Array<{ repository: string; tag: string; digest: string }>;
    return { blobs: digests('blobs'), manifests: digests('manifests'), tags: Object.fromEntries(tags.map((row) => [`${row.repository}:${row.tag}`, row.digest])) };
  } finally {
    db.close();
  }
}

/** The content graph as recorded: what a manifest references (`role digest`, in order), and what a repository holds. */
export function contentGraph(dataDir: string): { referencesOf(manifest: string): string[]; holds(repository: string, digest: string): boolean } {
  const db = openMetadata(dataDir, true);
  try {
    const references = db.prepare('SELECT parent, role, child FROM content_references ORDER BY parent, position').all() as Array<{ parent: string; role: string; child: string }>;
    const links = db.prepare('SELECT repository, digest FROM repository_content').all() as Array<{ repository: string; digest: string }>;
    const held = new Set(links.map((link) => `${link.repository}@${link.digest}`));
    return {
      referencesOf: (manifest) => references.filter((row) => row.parent === manifest).map((row) => `${row.role} ${row.child}`),
      holds: (repository, digest) => held.has(`${repository}@${digest}`),
    };
  } finally {
    db.close();
  }
}

/** Deletes a blob's record, leaving its file: the mirror must not trust a file it has no record of. */
export function deleteBlobRecord(dataDir: string, digest: string): void {
  const db = openMetadata(dataDir, false);
  try {
    const { changes } = db.prepare('DELETE FROM blobs WHERE digest = ?').run(digest);
    if (changes !== 1) throw new Error(`no blob record for ${digest}`);
  } finally {
    db.close();
  }
}
