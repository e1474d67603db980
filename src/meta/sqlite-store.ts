// The SQLite MetadataStore (WAL): one file under the data directory, prepared statements,
// synchronous calls behind the async interface; failures of the database are MetadataErrors. A database kept
// busy by another connection is waited for between the statement's tries, not inside one: SQLite's own busy
// wait blocks the thread, and here the thread is the whole server's event loop.

import Database from 'better-sqlite3';
import type { Digest } from '../oci/digest.js';
import { isSqliteFailure, MetadataError } from './metadata-error.js';
import { Pacer } from '../event-loop/pacer.js';
import { byLastRead } from './metadata-store.js';
import { CHECKPOINT_BYTES, LOG_FILE_LIMIT_BYTES, WalCheckpointer } from './wal-checkpointer.js';
import { NotedReads } from './noted-reads.js';
import type { ContentReference, ReferenceRole } from '../oci/manifest.js';
import type {
  BlobRecord,
  CachedDocument,
  ContentEntry,
  ContentGraph,
  ContentRemoval,
  ContentTotals,
  ExclusiveTask,
  ManifestGraph,
  ManifestRecord,
  MetadataStore,
  Page,
  ReadOrderPosition,
  RegistryTotals,
  RemovedContent,
  RepositoryRef,
  TagRecord,
} from './metadata-store.js';

/** The database's file in the data directory. */
export const SQLITE_FILE = 'metadata.sqlite';

/** Rows read at a time when the whole content graph is read. */
const GRAPH_PAGE = 2_000;
/** Work done in one transaction of a removal: a removal of thousands lets the event loop run between them. */
const REMOVAL_SLICE_MS = 10;

/** How many references other than a subject a blob or manifest has from recorded manifests: 0 for a root. */
const HOLDERS_OF = (digest: string): string => `(SELECT count(*) FROM content_references WHERE child = ${digest} AND role != 'subject')`;

/**
 * `holders` kept by the database itself, whichever statement adds or removes a reference or a record: eviction
 * finds the roots of the graph, least recently read first, in an index of the records whose count is 0.
 */
const HOLDERS_TRIGGERS = `
CREATE TRIGGER IF NOT EXISTS reference_holds AFTER INSERT ON content_references WHEN NEW.role != 'subject' BEGIN
  UPDATE blobs SET holders = holders + 1 WHERE digest = NEW.child;
  UPDATE manifests SET holders = holders + 1 WHERE digest = NEW.child;
END;
CREATE TRIGGER IF NOT EXISTS reference_releases AFTER DELETE ON content_references WHEN OLD.role != 'subject' BEGIN
  UPDATE blobs SET holders = holders - 1 WHERE digest = OLD.child;
  UPDATE manifests SET holders = holders - 1 WHERE digest = OLD.child;
END;
CREATE TRIGGER IF NOT EXISTS blob_holders AFTER INSERT ON blobs BEGIN
  UPDATE blobs SET holders = ${HOLDERS_OF('NEW.digest')} WHERE digest = NEW.digest;
END;
CREATE TRIGGER IF NOT EXISTS manifest_holders AFTER INSERT ON manifests BEGIN
  UPDATE manifests SET holders = ${HOLDERS_OF('NEW.digest')} WHERE digest = NEW.digest;
END;`;

/** What the records hold, summed as they change (triggers), so that totals() reads one row however many there are. */
const TOTALS_TRIGGERS = ['blob', 'manifest']
  .map(
    (kind) => `
CREATE TRIGGER IF NOT EXISTS ${kind}_counted AFTER INSERT ON ${kind}s BEGIN
  UPDATE content_totals SET ${kind}s = ${kind}s + 1, ${kind}_bytes = ${kind}_bytes + NEW.size;
END;
CREATE TRIGGER IF NOT EXISTS ${kind}_uncounted AFTER DELETE ON ${kind}s BEGIN
  UPDATE content_totals SET ${kind}s = ${kind}s - 1, ${kind}_bytes = ${kind}_bytes - OLD.size;
END;
CREATE TRIGGER IF NOT EXISTS ${kind}_resized AFTER UPDATE OF size ON ${kind}s BEGIN
  UPDATE content_totals SET ${kind}_bytes = ${kind}_bytes - OLD.size + NEW.size;
END;`,
  )
  .join('');

const SCHEMA = `
CREATE TABLE IF NOT EXISTS blobs (
  digest TEXT PRIMARY KEY,
  size INTEGER NOT NULL,
  created_at INTEGER NOT NULL,
  last_access INTEGER NOT NULL,
  holders INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS manifests (
  digest TEXT PRIMARY KEY,
  media_type TEXT NOT NULL,
  size INTEGER NOT NULL,
  created_at INTEGER NOT NULL,
  last_access INTEGER NOT NULL DEFAULT 0,
  holders INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS repositories (
  registry TEXT NOT NULL,
  name TEXT NOT NULL,
  created_at INTEGER NOT NULL,
  PRIMARY KEY (registry, name)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS tags (
  registry TEXT NOT NULL,
  repository TEXT NOT NULL,
  tag TEXT NOT NULL,
  digest TEXT NOT NULL,
  fetched_at INTEGER NOT NULL,
  PRIMARY KEY (registry, repository, tag)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS content_references (
  parent TEXT NOT NULL,
  position INTEGER NOT NULL,
  child TEXT NOT NULL,
  role TEXT NOT NULL,
  PRIMARY KEY (parent, position)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS content_references_by_child ON content_references (child);
${HOLDERS_TRIGGERS}
CREATE INDEX IF NOT EXISTS blob_roots_by_last_access ON blobs (last_access, digest) WHERE holders = 0;
CREATE INDEX IF NOT EXISTS manifest_roots_by_last_access ON manifests (last_access, digest) WHERE holders = 0;
CREATE TABLE IF NOT EXISTS repository_content (
  registry TEXT NOT NULL,
  repository TEXT NOT NULL,
  digest TEXT NOT NULL,
  linked_at INTEGER NOT NULL,
  PRIMARY KEY (registry, repository, digest)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS repository_content_by_digest ON repository_content (digest);
CREATE INDEX IF NOT EXISTS tags_by_digest ON tags (digest);
CREATE TABLE IF NOT EXISTS content_totals (
  id INTEGER PRIMARY KEY CHECK (id = 1),
  blobs INTEGER NOT NULL,
  blob_bytes INTEGER NOT NULL,
  manifests INTEGER NOT NULL,
  manifest_bytes INTEGER NOT NULL
);
-- Made with the table, or by this version from what an earlier one recorded.
INSERT INTO content_totals (id, blobs, blob_bytes, manifests, manifest_bytes)
  SELECT 1, (SELECT count(*) FROM blobs), (SELECT coalesce(sum(size), 0) FROM blobs), (SELECT count(*) FROM manifests), (SELECT coalesce(sum(size), 0) FROM manifests)
  WHERE NOT EXISTS (SELECT 1 FROM content_totals);
${TOTALS_TRIGGERS}
CREATE TABLE IF NOT EXISTS documents (
  key TEXT PRIMARY KEY,
  body BLOB NOT NULL,
  fetched_at INTEGER NOT NULL
) WITHOUT ROWID;
`;

interface EntryRow {
  digest: string;
  size: number;
  last_access: number;
  holders: number;
}

function entryOf(row: EntryRow, kind: ContentEntry['kind']): ContentEntry {
  return { digest: row.digest as Digest, kind, size: row.size, lastAccess: row.last_access, holders: row.holders };
}

export interface SqliteOptions {
  /** How long a statement waits for another connection's write, in all, before it fails with SQLITE_BUSY. */
  busyTimeoutMs?: number;
}

/** The longest SQLite itself waits for a lock within one try: the longest the event loop is held by a busy database. */
const BUSY_SLICE_MS = 20;
/** The pause between two tries of a statement that found the database busy. */
const BUSY_PAUSE_MS = 30;

/** SQLITE_BUSY and its extended codes: another connection holds the lock, a later try may pass. */
function isBusy(error: unknown): boolean {
  const code = (error as { code?: unknown } | undefined)?.code;
  return typeof code === 'string' && (code === 'SQLITE_BUSY' || code.startsWith('SQLITE_BUSY_'));
}

export class SqliteMetadataStore implements MetadataStore {
  private readonly db: Database.Database;
  private readonly statements: ReturnType<SqliteMetadataStore['prepare']>;
  private readonly busyTimeoutMs: number;
  /** Reads noted and not yet written. */
  private readonly reads = new NotedReads(() => this.flushAccess());
  /** Settles when the statements waiting behind a busy database have run; undefined when none wait. */
  private waiting: Promise<void> | undefined;
  private readonly checkpointer: WalCheckpointer;

  constructor(file: string, options: SqliteOptions = {}) {
    this.busyTimeoutMs = Math.trunc(options.busyTimeoutMs ?? 5000);
    try {
      this.db = new Database(file);
      // Opening may wait for a lock inside SQLite (a one-off, at start): the whole timeout then.
      this.db.pragma(`busy_timeout = ${this.busyTimeoutMs}`);
      this.db.pragma('journal_mode = WAL');
      this.db.pragma('synchronous = NORMAL');
      // The log is checkpointed on a worker thread; should the worker fail, by this connection's commits again.
      this.db.pragma('wal_autocheckpoint = 0');
      this.db.pragma(`journal_size_limit = ${LOG_FILE_LIMIT_BYTES}`);
      this.migrate();
      // One transaction: the totals are made from the records with nothing recorded in between.
      this.db.transaction(() => this.db.exec(SCHEMA))();
      this.statements = this.prepare();
      this.db.pragma(`busy_timeout = ${Math.min(BUSY_SLICE_MS, this.busyTimeoutMs)}`);
      this.checkpointer = new WalCheckpointer(
        file,
        (work) => this.afterWaiting(work),
        () => {
          if (this.db.open) this.db.pragma(`wal_autocheckpoint = ${CHECKPOINT_BYTES / 4096}`);
        },
      );
      this.checkpointer.start();
    } catch (error) {
      throw isSqliteFailure(error) ? new MetadataError('open', error) : error;
    }
  }

  /** Brings a database an earlier version made up to SCHEMA (whose CREATE … IF NOT EXISTS adds tables, not columns). */
  private migrate(): void {
    const manifestColumns = this.db.pragma('table_info(manifests)') as Array<{ name: string }>;
    if (manifestColumns.length > 0 && !manifestColumns.some((column) => column.name === 'last_access')) {
      // Not read since the upgrade, as far as anyone knows: as recent as its record.
      this.db.exec('ALTER TABLE manifests ADD COLUMN last_access INTEGER NOT NULL DEFAULT 0; UPDATE manifests SET last_access = created_at');
    }
    const hasReferences = (this.db.pragma('table_info(content_references)') as unknown[]).length > 0;
    for (const table of ['blobs', 'manifests']) {
      const columns = this.db.pragma(`table_info(${table})`) as Array<{ name: string }>;
      if (columns.length === 0 || columns.some((column) => column.name === 'holders')) continue;
      this.db.exec(`ALTER TABLE ${table} ADD COLUMN holders INTEGER NOT NULL DEFAULT 0`);
      // A version with no references table recorded no references: every count is 0.
      if (hasReferences) this.db.exec(`UPDATE ${table} SET holders = ${HOLDERS_OF(`${table}.digest`)}`);
    }
  }

  private prepare() {
    return {
      getBlob: this.db.prepare<[string], { size: number; last_access: number }>(
        'SELECT size, last_access FROM blobs WHERE digest = ?',
      ),
      putBlob: this.db.prepare(
        'INSERT INTO blobs (digest, size, created_at, last_access) VALUES (?, ?, ?, ?) ON CONFLICT (digest) DO UPDATE SET size = excluded.size, last_access = excluded.last_access',
      ),
      deleteBlob: this.db.prepare('DELETE FROM blobs WHERE digest = ?'),
      touchBlob: this.db.prepare('UPDATE blobs SET last_access = ? WHERE digest = ? AND last_access < ?'),
      getManifest: this.db.prepare<[string], { media_type: string; size: number }>(
        'SELECT media_type, size FROM manifests WHERE digest = ?',
      ),
      putManifest: this.db.prepare(
        'INSERT INTO manifests (digest, media_type, size, created_at, last_access) VALUES (?, ?, ?, ?, ?) ON CONFLICT (digest) DO NOTHING',
      ),
      touchManifest: this.db.prepare('UPDATE manifests SET last_access = ? WHERE digest = ? AND last_access < ?'),
      graphManifests: this.db.prepare<[string, number], { digest: string; size: number; last_access: number }>(
        'SELECT digest, size, last_access FROM manifests WHERE digest > ? ORDER BY digest LIMIT ?',
      ),
      graphReferences: this.db.prepare<[string, string, number, number], { parent: string; position: number; child: string; role: ReferenceRole }>(
        'SELECT parent, position, child, role FROM content_references WHERE parent > ? OR (parent = ? AND position > ?) ORDER BY parent, position LIMIT ?',
      ),
      graphBlobs: this.db.prepare<[string, number], { digest: string; size: number; last_access: number }>(
        'SELECT digest, size, last_access FROM blobs WHERE digest > ? ORDER BY digest LIMIT ?',
      ),
      // `holders = 0` as written: what lets SQLite use the partial indexes of the roots.
      blobRoots: this.db.prepare<[number, string, number], EntryRow>(
        'SELECT digest, size, last_access, holders FROM blobs WHERE holders = 0 AND (last_access, digest) > (?, ?) ORDER BY last_access, digest LIMIT ?',
      ),
      manifestRoots: this.db.prepare<[number, string, number], EntryRow>(
        'SELECT digest, size, last_access, holders FROM manifests WHERE holders = 0 AND (last_access, digest) > (?, ?) ORDER BY last_access, digest LIMIT ?',
      ),
      heldBy: this.db.prepare<[string, string], EntryRow & { kind: ContentEntry['kind'] }>(
        "SELECT r.child AS digest, 'manifest' AS kind, m.size AS size, m.last_access AS last_access, m.holders AS holders, r.position AS position FROM content_references r JOIN manifests m ON m.digest = r.child WHERE r.parent = ? AND r.role != 'subject' " +
          "UNION ALL SELECT r.child, 'blob', b.size, b.last_access, b.holders, r.position FROM content_references r JOIN blobs b ON b.digest = r.child WHERE r.parent = ? AND r.role != 'subject' ORDER BY position",
      ),
      holdersOf: this.db.prepare<[string], { digest: string; holders: number }>(
        "SELECT DISTINCT r.parent AS digest, m.holders AS holders FROM content_references r JOIN manifests m ON m.digest = r.parent WHERE r.child = ? AND r.role != 'subject'",
      ),
      deleteManifest: this.db.prepare('DELETE FROM manifests WHERE digest = ?'),
      unlinkEverywhere: this.db.prepare('DELETE FROM repository_content WHERE digest = ?'),
      unlinkFromRepository: this.db.prepare('DELETE FROM repository_content WHERE registry = ? AND repository = ? AND digest = ?'),
      deleteRepositoryTagsOf: this.db.prepare('DELETE FROM tags WHERE registry = ? AND repository = ? AND digest = ?'),
      contentHeldByRegistry: this.db.prepare<[string], { digest: string }>('SELECT DISTINCT digest FROM repository_content WHERE registry = ?'),
      referrersOf: this.db.prepare<[string], { parent: string }>("SELECT DISTINCT parent FROM content_references WHERE child = ? AND role = 'subject' ORDER BY parent"),
      deleteTagsOf: this.db.prepare('DELETE FROM tags WHERE digest = ?'),
      taggedDigests: this.db.prepare<[], { digest: string }>('SELECT DISTINCT digest FROM tags'),
      // A subject does not hold its target (a signature does not keep the image it signs).
      isReferenced: this.db.prepare<[string], { found: number }>("SELECT 1 AS found FROM content_references WHERE child = ? AND role != 'subject' LIMIT 1"),
      manifestReadBefore: this.db.prepare<[string, number], { size: number }>('SELECT size FROM manifests WHERE digest = ? AND last_access < ?'),
      blobReadBefore: this.db.prepare<[string, number], { size: number }>('SELECT size FROM blobs WHERE digest = ? AND last_access < ?'),
      getTag: this.db.prepare<[string, string, string], { digest: string; fetched_at: number }>(
        'SELECT digest, fetched_at FROM tags WHERE registry = ? AND repository = ? AND tag = ?',
      ),
      putTag: this.db.prepare(
        'INSERT INTO tags (registry, repository, tag, digest, fetched_at) VALUES (?, ?, ?, ?, ?) ON CONFLICT (registry, repository, tag) DO UPDATE SET digest = excluded.digest, fetched_at = excluded.fetched_at',
      ),
      deleteTag: this.db.prepare('DELETE FROM tags WHERE registry = ? AND repository = ? AND tag = ?'),
      listTags: this.db.prepare<[string, string, string, number], { tag: string }>(
        'SELECT tag FROM tags WHERE registry = ? AND repository = ? AND tag > ? ORDER BY tag LIMIT ?',
      ),
      addRepository: this.db.prepare(
        'INSERT INTO repositories (registry, name, created_at) VALUES (?, ?, ?) ON CONFLICT DO NOTHING',
      ),
      listRepositories: this.db.prepare<[{ defaultRegistry: string; last: string; limit: number }], { shown: string }>(
        "SELECT DISTINCT CASE WHEN registry = @defaultRegistry OR registry = '' THEN name ELSE registry || '/' || name END AS shown FROM repositories WHERE shown > @last ORDER BY shown LIMIT @limit",
      ),
      hasRepository: this.db.prepare<[string, string], { found: number }>(
        'SELECT 1 AS found FROM repositories WHERE registry = ? AND name = ?',
      ),
      getDocument: this.db.prepare<[string], { body: Buffer; fetched_at: number }>('SELECT body, fetched_at FROM documents WHERE key = ?'),
      putDocument: this.db.prepare(
        'INSERT INTO documents (key, body, fetched_at) VALUES (?, ?, ?) ON CONFLICT (key) DO UPDATE SET body = excluded.body, fetched_at = excluded.fetched_at',
      ),
      deleteDocument: this.db.prepare('DELETE FROM documents WHERE key = ?'),
      totals: this.db.prepare<[], ContentTotals>(
        'SELECT blobs, blob_bytes AS blobBytes, manifests, manifest_bytes AS manifestBytes FROM content_totals WHERE id = 1',
      ),
      blobTotalsByRegistry: this.db.prepare<[], { registry: string; count: number; bytes: number }>(
        'SELECT held.registry AS registry, count(*) AS count, coalesce(sum(blobs.size), 0) AS bytes FROM (SELECT DISTINCT registry, digest FROM repository_content) AS held JOIN blobs ON blobs.digest = held.digest GROUP BY held.registry',
      ),
      manifestTotalsByRegistry: this.db.prepare<[], { registry: string; count: number; bytes: number }>(
        'SELECT held.registry AS registry, count(*) AS count, coalesce(sum(manifests.size), 0) AS bytes FROM (SELECT DISTINCT registry, digest FROM repository_content) AS held JOIN manifests ON manifests.digest = held.digest GROUP BY held.registry',
      ),
      deleteReferences: this.db.prepare('DELETE FROM content_references WHERE parent = ?'),
      putReference: this.db.prepare('INSERT INTO content_references (parent, position, child, role) VALUES (?, ?, ?, ?)'),
      referencesOf: this.db.prepare<[string], { child: string; role: ReferenceRole }>('SELECT child, role FROM content_references WHERE parent = ? ORDER BY position'),
      linkContent: this.db.prepare('INSERT INTO repository_content (registry, repository, digest, linked_at) VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING'),
      holdsContent: this.db.prepare<[string, string, string], { found: number }>(
        'SELECT 1 AS found FROM repository_content WHERE registry = ? AND repository = ? AND digest = ?',
      ),
      listBlobs: this.db.prepare<[string, number], { digest: string; size: number; last_access: number }>(
        'SELECT digest, size, last_access FROM blobs WHERE digest > ? ORDER BY digest LIMIT ?',
      ),
      listManifests: this.db.prepare<[string, number], { digest: string; media_type: string; size: number }>(
        'SELECT digest, media_type, size FROM manifests WHERE digest > ? ORDER BY digest LIMIT ?',
      ),
    };
  }

  /**
   * Runs a statement; a failure of the database (not of the SQL) becomes a MetadataError. A statement that finds
   * the database busy (it changed nothing) is tried again after pauses until busyTimeoutMs has passed, and every
   * statement after it waits its turn behind it, so statements still run in the order they were asked for.
   */
  private guard<T>(operation: string, work: () => T): Promise<T> {
    if (this.waiting !== undefined) return this.inTurn(operation, work, false);
    try {
      return Promise.resolve(work());
    } catch (error) {
      if (isBusy(error) && this.busyTimeoutMs > BUSY_SLICE_MS) return this.inTurn(operation, work, true);
      return Promise.reject(isSqliteFailure(error) ? new MetadataError(operation, error) : (error as Error));
    }
  }

  private inTurn<T>(operation: string, work: () => T, foundBusy: boolean): Promise<T> {
    return this.afterWaiting(() => this.untilNotBusy(operation, work, foundBusy));
  }

  /** Runs work once the statements already waiting have run; every statement asked meanwhile waits for it. */
  private afterWaiting<T>(work: () => Promise<T>): Promise<T> {
    const turn = (this.waiting ?? Promise.resolve()).then(work);
    const settled = turn.then(
      () => undefined,
      () => undefined,
    );
    this.waiting = settled;
    void settled.then(() => {
      if (this.waiting === settled) this.waiting = undefined;
    });
    return turn;
  }

  private async untilNotBusy<T>(operation: string, work: () => T, pauseFirst: boolean): Promise<T> {
    const deadline = performance.now() + this.busyTimeoutMs;
    let pause = pauseFirst;
    for (;;) {
      if (pause) await new Promise((resolve) => setTimeout(resolve, BUSY_PAUSE_MS));
      pause = true;
      try {
        return work();
      } catch (error) {
        if (isBusy(error) && performance.now() < deadline) continue;
        throw isSqliteFailure(error) ? new MetadataError(operation, error) : (error as Error);
      }
    }
  }

  getBlob(digest: Digest): Promise<BlobRecord | undefined> {
    return this.guard('getBlob', () => {
      const row = this.statements.getBlob.get(digest);
      return row && { digest, size: row.size, lastAccess: row.last_access };
    });
  }

  putBlob(digest: Digest, size: number, now: number, holder?: RepositoryRef): Promise<void> {
    return this.guard(
      'putBlob',
      this.db.transaction(() => {
        this.statements.putBlob.run(digest, size, now, now);
        if (holder !== undefined) this.link(holder, digest, now);
      }),
    );
  }

  /** A repository holds content: its row among the repositories too (the catalog lists it). */
  private link(holder: RepositoryRef, digest: Digest, now: number): void {
    this.statements.addRepository.run(holder.registry, holder.name, now);
    this.statements.linkContent.run(holder.registry, holder.name, digest, now);
  }

  deleteBlob(digest: Digest): Promise<void> {
    return this.guard(
      'deleteBlob',
      this.db.transaction(() => this.forgetBlob(digest)),
    );
  }

  touchBlob(digest: Digest, now: number): Promise<void> {
    this.reads.noteBlob(digest, now);
    return Promise.resolve();
  }

  touchManifest(digest: Digest, now: number): Promise<void> {
    this.reads.noteManifest(digest, now);
    return Promise.resolve();
  }

  /** Writes the reads noted since the last flush, in one transaction. */
  flushAccess(): Promise<void> {
    if (this.reads.empty) {
      this.reads.stop();
      return Promise.resolve();
    }
    return this.withReadsWritten('flushAccess', () => undefined);
  }

  /** Runs work in one transaction that first writes the reads noted so far. A failure keeps them for the next flush. */
  private withReadsWritten<T>(operation: string, work: () => T): Promise<T> {
    const taken = this.reads.take();
    return this.guard(
      operation,
      this.db.transaction(() => {
        for (const [digest, at] of taken.blobs) this.statements.touchBlob.run(at, digest, at);
        for (const [digest, at] of taken.manifests) this.statements.touchManifest.run(at, digest, at);
        return work();
      }),
    ).catch((error: unknown) => {
      this.reads.restore(taken);
      throw error;
    });
  }

  listBlobs(page: Page): Promise<BlobRecord[]> {
    return this.guard('listBlobs', () =>
      this.statements.listBlobs.all(page.last ?? '', page.limit).map((row) => ({ digest: row.digest as Digest, size: row.size, lastAccess: row.last_access })),
    );
  }

  getManifest(digest: Digest): Promise<ManifestRecord | undefined> {
    return this.guard('getManifest', () => {
      const row = this.statements.getManifest.get(digest);
      return row && { digest, mediaType: row.media_type, size: row.size };
    });
  }

  putManifest(record: ManifestRecord, now: number, graph?: ManifestGraph): Promise<void> {
    return this.guard(
      'putManifest',
      this.db.transaction(() => {
        this.statements.putManifest.run(record.digest, record.mediaType, record.size, now, now);
        if (graph === undefined) return;
        this.statements.deleteReferences.run(record.digest);
        graph.references.forEach((reference, position) => this.statements.putReference.run(record.digest, position, reference.digest, reference.role));
        if (graph.holder !== undefined) this.link(graph.holder, record.digest, now);
      }),
    );
  }

  async graph(): Promise<ContentGraph> {
    // Page by page, letting the event loop run between them: at 100k blobs one read of it all held the loop for
    // most of a second. Not one snapshot: what decides on it checks each removal again (removeContent).
    const pacer = new Pacer();
    const references = new Map<string, ContentReference[]>();
    for (let after = { parent: '', position: -1 }; ; ) {
      const rows = await this.guard('graph', () => this.statements.graphReferences.all(after.parent, after.parent, after.position, GRAPH_PAGE));
      for (const row of rows) {
        const list = references.get(row.parent) ?? [];
        list.push({ digest: row.child as Digest, role: row.role });
        references.set(row.parent, list);
      }
      const last = rows.at(-1);
      if (last === undefined || rows.length < GRAPH_PAGE) break;
      after = { parent: last.parent, position: last.position };
      await pacer.pace();
    }
    const manifests: ContentGraph['manifests'] = [];
    for (let after = ''; ; ) {
      const rows = await this.guard('graph', () => this.statements.graphManifests.all(after, GRAPH_PAGE));
      for (const row of rows) manifests.push({ digest: row.digest as Digest, size: row.size, lastAccess: row.last_access, references: references.get(row.digest) ?? [] });
      const last = rows.at(-1);
      if (last === undefined || rows.length < GRAPH_PAGE) break;
      after = last.digest;
      await pacer.pace();
    }
    const blobs: BlobRecord[] = [];
    for (let after = ''; ; ) {
      const rows = await this.guard('graph', () => this.statements.graphBlobs.all(after, GRAPH_PAGE));
      for (const row of rows) blobs.push({ digest: row.digest as Digest, size: row.size, lastAccess: row.last_access });
      const last = rows.at(-1);
      if (last === undefined || rows.length < GRAPH_PAGE) break;
      after = last.digest;
      await pacer.pace();
    }
    return { manifests, blobs };
  }

  rootsByLastRead(after: ReadOrderPosition | undefined, limit: number): Promise<ContentEntry[]> {
    return this.guard('rootsByLastRead', () => {
      const from = after ?? { lastAccess: Number.MIN_SAFE_INTEGER, digest: '' };
      const manifests = this.statements.manifestRoots.all(from.lastAccess, from.digest, limit).map((row) => entryOf(row, 'manifest'));
      const blobs = this.statements.blobRoots.all(from.lastAccess, from.digest, limit).map((row) => entryOf(row, 'blob'));
      return [...manifests, ...blobs].sort(byLastRead).slice(0, limit);
    });
  }

  heldBy(manifest: Digest): Promise<ContentEntry[]> {
    return this.guard('heldBy', () => this.statements.heldBy.all(manifest, manifest).map((row) => entryOf(row, row.kind)));
  }

  holdersOf(digest: Digest): Promise<Array<{ digest: Digest; holders: number }>> {
    return this.guard('holdersOf', () => this.statements.holdersOf.all(digest).map((row) => ({ digest: row.digest as Digest, holders: row.holders })));
  }

  totals(): Promise<ContentTotals> {
    return this.guard('totals', () => {
      const row = this.statements.totals.get();
      return row ?? { blobs: 0, blobBytes: 0, manifests: 0, manifestBytes: 0 };
    });
  }

  totalsByRegistry(): Promise<RegistryTotals[]> {
    return this.guard(
      'totalsByRegistry',
      this.db.transaction((): RegistryTotals[] => {
        const byRegistry = new Map<string, RegistryTotals>();
        const entry = (registry: string): RegistryTotals => {
          let totals = byRegistry.get(registry);
          if (totals === undefined) byRegistry.set(registry, (totals = { registry, blobs: 0, blobBytes: 0, manifests: 0, manifestBytes: 0 }));
          return totals;
        };
        for (const row of this.statements.blobTotalsByRegistry.all()) Object.assign(entry(row.registry), { blobs: row.count, blobBytes: row.bytes });
        for (const row of this.statements.manifestTotalsByRegistry.all()) Object.assign(entry(row.registry), { manifests: row.count, manifestBytes: row.bytes });
        return [...byRegistry.values()].sort((a, b) => a.registry.localeCompare(b.registry));
      }),
    );
  }

  referencesOf(digest: Digest): Promise<ContentReference[]> {
    return this.guard('referencesOf', () => this.statements.referencesOf.all(digest).map((row) => ({ digest: row.child as Digest, role: row.role })));
  }

  linkContent(repository: RepositoryRef, digest: Digest, now: number): Promise<void> {
    return this.guard('linkContent', this.db.transaction(() => this.link(repository, digest, now)));
  }

  holdsContent(repository: RepositoryRef, digest: Digest): Promise<boolean> {
    return this.guard('holdsContent', () => this.statements.holdsContent.get(repository.registry, repository.name, digest) !== undefined);
  }

  unlinkContent(repository: RepositoryRef, digest: Digest): Promise<boolean> {
    return this.guard(
      'unlinkContent',
      this.db.transaction(() => {
        this.statements.deleteRepositoryTagsOf.run(repository.registry, repository.name, digest);
        return this.statements.unlinkFromRepository.run(repository.registry, repository.name, digest).changes > 0;
      }),
    );
  }

  contentHeldByRegistry(registry: string): Promise<Digest[]> {
    return this.guard('contentHeldByRegistry', () => this.statements.contentHeldByRegistry.all(registry).map((row) => row.digest as Digest));
  }

  referrersOf(subject: Digest): Promise<Digest[]> {
    return this.guard('referrersOf', () => this.statements.referrersOf.all(subject).map((row) => row.parent as Digest));
  }

  deleteManifest(digest: Digest): Promise<void> {
    return this.guard(
      'deleteManifest',
      this.db.transaction(() => this.forgetManifest(digest)),
    );
  }

  private forgetBlob(digest: Digest): void {
    this.statements.deleteBlob.run(digest);
    this.statements.unlinkEverywhere.run(digest);
  }

  private forgetManifest(digest: Digest): void {
    this.statements.deleteManifest.run(digest);
    this.statements.deleteReferences.run(digest);
    this.statements.unlinkEverywhere.run(digest);
  }

  /** One process per data directory (its lock): nobody else runs it. */
  runAlone<T>(_task: ExclusiveTask, work: () => Promise<T>): Promise<T | undefined> {
    return work();
  }

  taggedDigests(): Promise<Digest[]> {
    return this.guard('taggedDigests', () => this.statements.taggedDigests.all().map((row) => row.digest as Digest));
  }

  async removeContent(removal: ContentRemoval): Promise<RemovedContent> {
    // In transactions of at most REMOVAL_SLICE_MS of work, the loop let run between them (a manifest's removal
    // updates every record it referenced: 500 of them took 250-400 ms at 50k blobs); each first writes the reads
    // noted in memory, so a read since the decision counts, whichever transaction its content is in. Manifests go
    // first (parents before children, as given), so what they alone referenced is no longer referenced when its
    // turn comes.
    const removed: RemovedContent = { manifests: [], blobs: [] };
    const work = [...removal.manifests.map((digest) => ({ kind: 'manifest' as const, digest })), ...removal.blobs.map((digest) => ({ kind: 'blob' as const, digest }))];
    const pacer = new Pacer();
    for (let next = 0; next < work.length; ) {
      next = await this.withReadsWritten('removeContent', () => {
        const deadline = performance.now() + REMOVAL_SLICE_MS;
        let index = next;
        do {
          const item = work[index];
          index += 1;
          if (item === undefined) continue;
          const { kind, digest } = item;
          const row = kind === 'manifest' ? this.statements.manifestReadBefore.get(digest, removal.readBefore) : this.statements.blobReadBefore.get(digest, removal.readBefore);
          if (row === undefined || this.statements.isReferenced.get(digest) !== undefined) continue;
          if (kind === 'manifest') {
            this.forgetManifest(digest);
            this.statements.deleteTagsOf.run(digest);
            removed.manifests.push({ digest, size: row.size });
          } else {
            this.forgetBlob(digest);
            removed.blobs.push({ digest, size: row.size });
          }
        } while (index < work.length && performance.now() < deadline);
        return index;
      });
      await pacer.pace();
    }
    return removed;
  }

  listManifests(page: Page): Promise<ManifestRecord[]> {
    return this.guard('listManifests', () =>
      this.statements.listManifests.all(page.last ?? '', page.limit).map((row) => ({ digest: row.digest as Digest, mediaType: row.media_type, size: row.size })),
    );
  }

  getTag(repository: RepositoryRef, tag: string): Promise<TagRecord | undefined> {
    return this.guard('getTag', () => {
      const row = this.statements.getTag.get(repository.registry, repository.name, tag);
      return row && { digest: row.digest as Digest, fetchedAt: row.fetched_at };
    });
  }

  putTag(repository: RepositoryRef, tag: string, record: TagRecord): Promise<void> {
    return this.guard('putTag', () => void this.statements.putTag.run(repository.registry, repository.name, tag, record.digest, record.fetchedAt));
  }

  deleteTag(repository: RepositoryRef, tag: string): Promise<void> {
    return this.guard('deleteTag', () => void this.statements.deleteTag.run(repository.registry, repository.name, tag));
  }

  listTags(repository: RepositoryRef, page: Page): Promise<string[]> {
    return this.guard('listTags', () => this.statements.listTags.all(repository.registry, repository.name, page.last ?? '', page.limit).map((row) => row.tag));
  }

  addRepository(repository: RepositoryRef, now: number): Promise<void> {
    return this.guard('addRepository', () => void this.statements.addRepository.run(repository.registry, repository.name, now));
  }

  listRepositories(page: Page, defaultRegistry: string): Promise<string[]> {
    return this.guard('listRepositories', () =>
      this.statements.listRepositories.all({ defaultRegistry, last: page.last ?? '', limit: page.limit }).map((row) => row.shown),
    );
  }

  hasRepository(repository: RepositoryRef): Promise<boolean> {
    return this.guard('hasRepository', () => this.statements.hasRepository.get(repository.registry, repository.name) !== undefined);
  }

  getDocument(key: string): Promise<CachedDocument | undefined> {
    return this.guard('getDocument', () => {
      const row = this.statements.getDocument.get(key);
      return row && { body: row.body, fetchedAt: row.fetched_at };
    });
  }

  putDocument(key: string, body: Buffer, fetchedAt: number): Promise<void> {
    return this.guard('putDocument', () => void this.statements.putDocument.run(key, body, fetchedAt));
  }

  deleteDocument(key: string): Promise<void> {
    return this.guard('deleteDocument', () => void this.statements.deleteDocument.run(key));
  }

  async close(): Promise<void> {
    try {
      await this.flushAccess();
    } finally {
      this.reads.stop();
      await this.checkpointer.close();
      await this.guard('close', () => void this.db.close());
    }
  }
}
