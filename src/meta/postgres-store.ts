// The PostgreSQL MetadataStore (pg, a pool of connections): the SQLite driver's records and content graph, for
// several nodes sharing one database; the schema is migrated at start under an advisory lock, and failures of
// the server or the network are MetadataErrors. Loaded only when `metadata.driver: postgres` (open-metadata-store.ts).

import pg from 'pg';
import type { PoolClient, QueryResultRow } from 'pg';
import { parseIntoClientConfig } from 'pg-connection-string';
import type { Digest } from '../oci/digest.js';
import type { ContentReference, ReferenceRole } from '../oci/manifest.js';
import { Pacer } from '../event-loop/pacer.js';
import { isPostgresFailure, MetadataError } from './metadata-error.js';
import { NotedReads, type TakenReads } from './noted-reads.js';
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

export interface PostgresOptions {
  /** postgres://USER@HOST:PORT/DATABASE, with pg's query parameters (sslmode, options …); no password. */
  url: string;
  password?: string;
  /** Connections per process (default 10). */
  poolSize?: number;
  /**
   * The longest a statement may run, and a request wait for a free connection, before it fails (default 10 s);
   * also how long a connection may sit idle inside a transaction (a node stuck with locks held).
   */
  statementTimeoutMs?: number;
  /**
   * A connection the pool kept idle failed (the server restarted, the network cut it): the pool has dropped it,
   * and the next statement opens another or fails with a MetadataError. For a log line.
   */
  onIdleError?: (error: Error) => void;
}

const DEFAULT_POOL_SIZE = 10;
const DEFAULT_STATEMENT_TIMEOUT_MS = 10_000;

/** Rows read at a time when the whole content graph is read. */
const GRAPH_PAGE = 2_000;
/**
 * Records a removal checks and removes in one call: a slice holds the graph lock (and so every other node's writes
 * to the graph) for a few milliseconds, as SQLite's removal slices hold its one writer.
 */
const REMOVAL_SLICE = 100;
/** Tries of a statement that was a deadlock's victim, or lost its connection (see isRetryable). */
const TRIES = 4;

/**
 * Advisory locks take two int4 keys here (a key space apart from single bigint keys): the first says what is
 * locked. (0, 0): the schema, while it is migrated. (1, 0): the content graph (below). Other uses (cluster
 * coordination) take other first keys.
 */
const SCHEMA_LOCK = '0, 0';

/**
 * Every change to the records, their references and their last reads runs in one of the functions below, and
 * each first takes the graph lock: one writer at a time across every node, as SQLite has one. The holders counts
 * and totals are then exact without more (a reference and the record it names, written at once by two nodes,
 * would each miss the other's row), and no two writers take row locks in crossing orders (which deadlocked here,
 * each deadlock costing a second of deadlock_timeout). A function is one statement, one round trip: the lock is
 * held for the server's work only, not across the network. Reads take no lock.
 */
const GRAPH_LOCK = 'SELECT pg_advisory_xact_lock(1, 0)';
/** Advisory locks (TASK_LOCK_SPACE, key) held by the node running a whole-cache task (runAlone). */
const TASK_LOCK_SPACE = 4;
const EXCLUSIVE_TASKS: Record<ExclusiveTask, number> = { eviction: 1, gc: 2 };

/**
 * `holders` kept by the database, whichever statement adds or removes references or records: eviction finds the
 * roots of the graph in indexes of the records whose count is 0.
 */
const HOLDERS_TRIGGERS = `
CREATE FUNCTION regmirror_count_holders() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  NEW.holders := (SELECT count(*) FROM content_references WHERE child = NEW.digest AND role <> 'subject');
  RETURN NEW;
END $$;
CREATE TRIGGER blob_holders BEFORE INSERT ON blobs FOR EACH ROW EXECUTE FUNCTION regmirror_count_holders();
CREATE TRIGGER manifest_holders BEFORE INSERT ON manifests FOR EACH ROW EXECUTE FUNCTION regmirror_count_holders();

-- Once per statement, with the references it added or removed (a manifest's 2,000 layers: one update of each table).
CREATE FUNCTION regmirror_references_changed() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  direction integer := CASE TG_OP WHEN 'INSERT' THEN 1 ELSE -1 END;
BEGIN
  UPDATE blobs SET holders = holders + direction * counted.listed
    FROM (SELECT child, count(*) AS listed FROM changed WHERE role <> 'subject' GROUP BY child) AS counted WHERE blobs.digest = counted.child;
  UPDATE manifests SET holders = holders + direction * counted.listed
    FROM (SELECT child, count(*) AS listed FROM changed WHERE role <> 'subject' GROUP BY child) AS counted WHERE manifests.digest = counted.child;
  RETURN NULL;
END $$;
CREATE TRIGGER references_added AFTER INSERT ON content_references REFERENCING NEW TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION regmirror_references_changed();
CREATE TRIGGER references_removed AFTER DELETE ON content_references REFERENCING OLD TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION regmirror_references_changed();
`;

/**
 * What the records hold, summed as they change (triggers), so that totals() reads one row however many records
 * there are. One row is no hot spot: its writers already come one at a time (the graph lock).
 */
const TOTALS_TRIGGERS = ['blob', 'manifest']
  .map(
    (kind) => `
CREATE FUNCTION regmirror_count_${kind}() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'INSERT' THEN
    UPDATE content_totals SET ${kind}s = ${kind}s + 1, ${kind}_bytes = ${kind}_bytes + NEW.size;
  ELSIF TG_OP = 'DELETE' THEN
    UPDATE content_totals SET ${kind}s = ${kind}s - 1, ${kind}_bytes = ${kind}_bytes - OLD.size;
  ELSE
    UPDATE content_totals SET ${kind}_bytes = ${kind}_bytes - OLD.size + NEW.size;
  END IF;
  RETURN NULL;
END $$;
CREATE TRIGGER ${kind}_counted AFTER INSERT OR DELETE ON ${kind}s FOR EACH ROW EXECUTE FUNCTION regmirror_count_${kind}();
CREATE TRIGGER ${kind}_resized AFTER UPDATE OF size ON ${kind}s FOR EACH ROW WHEN (OLD.size IS DISTINCT FROM NEW.size) EXECUTE FUNCTION regmirror_count_${kind}();`,
  )
  .join('');

/** The writers of the graph (see GRAPH_LOCK). Parameters are named apart from the columns they are compared with. */
const GRAPH_WRITERS = `
CREATE FUNCTION regmirror_link(holder_registry text, holder_name text, target text, linked bigint) RETURNS void LANGUAGE sql AS $$
  INSERT INTO repositories (registry, name, created_at) VALUES (holder_registry, holder_name, linked) ON CONFLICT DO NOTHING;
  INSERT INTO repository_content (registry, repository, digest, linked_at) VALUES (holder_registry, holder_name, target, linked) ON CONFLICT DO NOTHING;
$$;

CREATE FUNCTION regmirror_put_blob(target text, blob_size bigint, recorded bigint, holder_registry text, holder_name text) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
  ${GRAPH_LOCK.replace('SELECT', 'PERFORM')};
  INSERT INTO blobs (digest, size, created_at, last_access) VALUES (target, blob_size, recorded, recorded)
    ON CONFLICT (digest) DO UPDATE SET size = excluded.size, last_access = excluded.last_access;
  IF holder_name IS NOT NULL THEN PERFORM regmirror_link(holder_registry, holder_name, target, recorded); END IF;
END $$;

-- children NULL: the manifest alone, its references (if any) left as they are.
CREATE FUNCTION regmirror_put_manifest(target text, kind text, manifest_size bigint, recorded bigint, children text[], roles text[], holder_registry text, holder_name text)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
  ${GRAPH_LOCK.replace('SELECT', 'PERFORM')};
  INSERT INTO manifests (digest, media_type, size, created_at, last_access) VALUES (target, kind, manifest_size, recorded, recorded) ON CONFLICT (digest) DO NOTHING;
  IF children IS NULL THEN RETURN; END IF;
  DELETE FROM content_references WHERE parent = target;
  INSERT INTO content_references (parent, position, child, role)
    SELECT target, listed.position - 1, listed.child, listed.role FROM unnest(children, roles) WITH ORDINALITY AS listed (child, role, position);
  IF holder_name IS NOT NULL THEN PERFORM regmirror_link(holder_registry, holder_name, target, recorded); END IF;
END $$;

CREATE FUNCTION regmirror_forget(target text, kind text) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
  ${GRAPH_LOCK.replace('SELECT', 'PERFORM')};
  IF kind = 'manifest' THEN
    DELETE FROM manifests WHERE digest = target;
    DELETE FROM content_references WHERE parent = target;
  ELSE
    DELETE FROM blobs WHERE digest = target;
  END IF;
  DELETE FROM repository_content WHERE digest = target;
END $$;

-- Last access never moves back.
CREATE FUNCTION regmirror_note_reads(blob_digests text[], blob_reads bigint[], manifest_digests text[], manifest_reads bigint[]) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
  ${GRAPH_LOCK.replace('SELECT', 'PERFORM')};
  UPDATE blobs SET last_access = noted.at FROM unnest(blob_digests, blob_reads) AS noted (digest, at)
    WHERE blobs.digest = noted.digest AND blobs.last_access < noted.at;
  UPDATE manifests SET last_access = noted.at FROM unnest(manifest_digests, manifest_reads) AS noted (digest, at)
    WHERE manifests.digest = noted.digest AND manifests.last_access < noted.at;
END $$;

/*
 * Removes what eviction or GC decided on, each checked again here, with the reads noted by the caller written
 * first (see MetadataStore.removeContent): kept when a manifest that stays references it, or when it was read
 * since read_before. Returns what it removed, in the order given.
 */
CREATE FUNCTION regmirror_remove_content(kinds text[], digests text[], read_before bigint,
  blob_digests text[], blob_reads bigint[], manifest_digests text[], manifest_reads bigint[])
RETURNS TABLE (removed_kind text, removed_digest text, removed_size bigint) LANGUAGE plpgsql AS $$
DECLARE
  item integer;
  target text;
  freed bigint;
BEGIN
  PERFORM regmirror_note_reads(blob_digests, blob_reads, manifest_digests, manifest_reads);
  FOR item IN 1 .. coalesce(array_length(digests, 1), 0) LOOP
    target := digests[item];
    -- A subject does not hold its target (a signature does not keep the image it signs).
    CONTINUE WHEN EXISTS (SELECT 1 FROM content_references WHERE child = target AND role <> 'subject');
    freed := NULL;
    IF kinds[item] = 'manifest' THEN
      DELETE FROM manifests WHERE digest = target AND last_access < read_before RETURNING size INTO freed;
      CONTINUE WHEN freed IS NULL;
      DELETE FROM content_references WHERE parent = target;
      DELETE FROM tags WHERE digest = target;
    ELSE
      DELETE FROM blobs WHERE digest = target AND last_access < read_before RETURNING size INTO freed;
      CONTINUE WHEN freed IS NULL;
    END IF;
    DELETE FROM repository_content WHERE digest = target;
    removed_kind := kinds[item];
    removed_digest := target;
    removed_size := freed;
    RETURN NEXT;
  END LOOP;
END $$;
`;

/**
 * Text columns compare byte by byte (COLLATE "C", whatever the database's locale): digests, tags and names page
 * in the order SQLite and the conformance suite give them. Times are ms since the epoch, sizes bytes (bigint).
 */
const SCHEMA_V1 = `
CREATE TABLE blobs (
  digest text COLLATE "C" PRIMARY KEY,
  size bigint NOT NULL,
  created_at bigint NOT NULL,
  last_access bigint NOT NULL,
  holders integer NOT NULL DEFAULT 0
);
CREATE TABLE manifests (
  digest text COLLATE "C" PRIMARY KEY,
  media_type text NOT NULL,
  size bigint NOT NULL,
  created_at bigint NOT NULL,
  last_access bigint NOT NULL,
  holders integer NOT NULL DEFAULT 0
);
CREATE TABLE repositories (
  registry text COLLATE "C" NOT NULL,
  name text COLLATE "C" NOT NULL,
  created_at bigint NOT NULL,
  PRIMARY KEY (registry, name)
);
CREATE TABLE tags (
  registry text COLLATE "C" NOT NULL,
  repository text COLLATE "C" NOT NULL,
  tag text COLLATE "C" NOT NULL,
  digest text COLLATE "C" NOT NULL,
  fetched_at bigint NOT NULL,
  PRIMARY KEY (registry, repository, tag)
);
CREATE INDEX tags_by_digest ON tags (digest);
CREATE TABLE content_references (
  parent text COLLATE "C" NOT NULL,
  position integer NOT NULL,
  child text COLLATE "C" NOT NULL,
  role text NOT NULL,
  PRIMARY KEY (parent, position)
);
CREATE INDEX content_references_by_child ON content_references (child);
CREATE TABLE repository_content (
  registry text COLLATE "C" NOT NULL,
  repository text COLLATE "C" NOT NULL,
  digest text COLLATE "C" NOT NULL,
  linked_at bigint NOT NULL,
  PRIMARY KEY (registry, repository, digest)
);
CREATE INDEX repository_content_by_digest ON repository_content (digest);
CREATE INDEX blob_roots_by_last_access ON blobs (last_access, digest) WHERE holders = 0;
CREATE INDEX manifest_roots_by_last_access ON manifests (last_access, digest) WHERE holders = 0;
CREATE TABLE documents (
  key text COLLATE "C" PRIMARY KEY,
  body bytea NOT NULL,
  fetched_at bigint NOT NULL
);
CREATE TABLE content_totals (
  id integer PRIMARY KEY CHECK (id = 1),
  blobs bigint NOT NULL,
  blob_bytes bigint NOT NULL,
  manifests bigint NOT NULL,
  manifest_bytes bigint NOT NULL
);
INSERT INTO content_totals VALUES (1, 0, 0, 0, 0);
${HOLDERS_TRIGGERS}
${TOTALS_TRIGGERS}
${GRAPH_WRITERS}
`;

interface Migration {
  version: number;
  name: string;
  sql: string;
}

/** Applied in order, each in its own transaction, each once (schema_migrations). Never edit one released: add the next. */
const MIGRATIONS: readonly Migration[] = [{ version: 1, name: 'records, tags, the content graph, documents; holders and totals kept by triggers', sql: SCHEMA_V1 }];

const SQL = {
  getBlob: 'SELECT size, last_access FROM blobs WHERE digest = $1',
  putBlob: 'SELECT regmirror_put_blob($1, $2, $3, $4, $5)',
  /** A repository holds content: its row among the repositories too (the catalog lists it). */
  link: 'SELECT regmirror_link($1, $2, $3, $4)',
  forget: 'SELECT regmirror_forget($1, $2)',
  noteReads: 'SELECT regmirror_note_reads($1::text[], $2::bigint[], $3::text[], $4::bigint[])',
  listBlobs: 'SELECT digest, size, last_access FROM blobs WHERE digest > $1 ORDER BY digest LIMIT $2',
  getManifest: 'SELECT media_type, size FROM manifests WHERE digest = $1',
  putManifest: 'SELECT regmirror_put_manifest($1, $2, $3, $4, $5::text[], $6::text[], $7, $8)',
  referencesOf: 'SELECT child, role FROM content_references WHERE parent = $1 ORDER BY position',
  holdsContent: 'SELECT 1 AS found FROM repository_content WHERE registry = $1 AND repository = $2 AND digest = $3',
  listManifests: 'SELECT digest, media_type, size FROM manifests WHERE digest > $1 ORDER BY digest LIMIT $2',
  totals: 'SELECT blobs, blob_bytes, manifests, manifest_bytes FROM content_totals WHERE id = 1',
  // One statement: one snapshot for both kinds.
  totalsByRegistry: `SELECT held.registry, 'blob' AS kind, count(*) AS count, coalesce(sum(blobs.size), 0)::bigint AS bytes
      FROM (SELECT DISTINCT registry, digest FROM repository_content) AS held JOIN blobs ON blobs.digest = held.digest GROUP BY held.registry
    UNION ALL SELECT held.registry, 'manifest', count(*), coalesce(sum(manifests.size), 0)::bigint
      FROM (SELECT DISTINCT registry, digest FROM repository_content) AS held JOIN manifests ON manifests.digest = held.digest GROUP BY held.registry`,
  graphReferences: 'SELECT parent, position, child, role FROM content_references WHERE (parent, position) > ($1, $2) ORDER BY parent, position LIMIT $3',
  graphManifests: 'SELECT digest, size, last_access FROM manifests WHERE digest > $1 ORDER BY digest LIMIT $2',
  graphBlobs: 'SELECT digest, size, last_access FROM blobs WHERE digest > $1 ORDER BY digest LIMIT $2',
  // `holders = 0` as written: what matches the partial indexes of the roots. A manifest before a blob of the same digest and read.
  roots: `(SELECT digest, 'manifest' AS kind, size, last_access, holders FROM manifests WHERE holders = 0 AND (last_access, digest) > ($1::bigint, $2::text) ORDER BY last_access, digest LIMIT $3)
    UNION ALL (SELECT digest, 'blob', size, last_access, holders FROM blobs WHERE holders = 0 AND (last_access, digest) > ($1::bigint, $2::text) ORDER BY last_access, digest LIMIT $3)
    ORDER BY last_access, digest, kind DESC LIMIT $3`,
  heldBy: `SELECT r.child AS digest, 'manifest' AS kind, m.size, m.last_access, m.holders, r.position FROM content_references r JOIN manifests m ON m.digest = r.child WHERE r.parent = $1 AND r.role <> 'subject'
    UNION ALL SELECT r.child, 'blob', b.size, b.last_access, b.holders, r.position FROM content_references r JOIN blobs b ON b.digest = r.child WHERE r.parent = $1 AND r.role <> 'subject'
    ORDER BY position`,
  holdersOf: "SELECT DISTINCT r.parent AS digest, m.holders FROM content_references r JOIN manifests m ON m.digest = r.parent WHERE r.child = $1 AND r.role <> 'subject'",
  taggedDigests: 'SELECT DISTINCT digest FROM tags',
  // One statement: the repository's tags pointing at it go with the link.
  unlinkContent:
    'WITH untagged AS (DELETE FROM tags WHERE registry = $1 AND repository = $2 AND digest = $3) DELETE FROM repository_content WHERE registry = $1 AND repository = $2 AND digest = $3 RETURNING 1 AS found',
  contentHeldByRegistry: 'SELECT DISTINCT digest FROM repository_content WHERE registry = $1',
  referrersOf: "SELECT DISTINCT parent FROM content_references WHERE child = $1 AND role = 'subject' ORDER BY parent",
  removeContent:
    'SELECT removed_kind, removed_digest, removed_size FROM regmirror_remove_content($1::text[], $2::text[], $3::bigint, $4::text[], $5::bigint[], $6::text[], $7::bigint[])',
  getTag: 'SELECT digest, fetched_at FROM tags WHERE registry = $1 AND repository = $2 AND tag = $3',
  putTag:
    'INSERT INTO tags (registry, repository, tag, digest, fetched_at) VALUES ($1, $2, $3, $4, $5) ON CONFLICT (registry, repository, tag) DO UPDATE SET digest = excluded.digest, fetched_at = excluded.fetched_at',
  deleteTag: 'DELETE FROM tags WHERE registry = $1 AND repository = $2 AND tag = $3',
  listTags: 'SELECT tag FROM tags WHERE registry = $1 AND repository = $2 AND tag > $3 ORDER BY tag LIMIT $4',
  addRepository: 'INSERT INTO repositories (registry, name, created_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING',
  listRepositories: `SELECT shown FROM (SELECT DISTINCT CASE WHEN registry = $1 OR registry = '' THEN name ELSE registry || '/' || name END AS shown FROM repositories) AS names
    WHERE shown > $2 ORDER BY shown LIMIT $3`,
  hasRepository: 'SELECT 1 AS found FROM repositories WHERE registry = $1 AND name = $2',
  getDocument: 'SELECT body, fetched_at FROM documents WHERE key = $1',
  putDocument: 'INSERT INTO documents (key, body, fetched_at) VALUES ($1, $2, $3) ON CONFLICT (key) DO UPDATE SET body = excluded.body, fetched_at = excluded.fetched_at',
  deleteDocument: 'DELETE FROM documents WHERE key = $1',
} as const;

interface EntryRow {
  digest: string;
  kind: ContentEntry['kind'];
  size: number;
  last_access: number;
  holders: number;
}

function entryOf(row: EntryRow): ContentEntry {
  return { digest: row.digest as Digest, kind: row.kind, size: row.size, lastAccess: row.last_access, holders: row.holders };
}

/** bigint (times, sizes, counts) as numbers: every one here is far below 2^53. */
const INT8 = 20;
function parserOf(oid: number, format?: 'text' | 'binary'): (value: string) => unknown {
  return oid === INT8 && format !== 'binary' ? Number : (pg.types.getTypeParser(oid, format) as (value: string) => unknown);
}
const types = { getTypeParser: parserOf as typeof pg.types.getTypeParser };

/**
 * Worth another try: the victim of a deadlock or of a serialization failure (nothing it did was kept), or a
 * connection the server ended (restarted, or its backends terminated: the pool may still hold connections that died
 * while idle, and the next try gets a new one). A connection lost during a COMMIT leaves it unknown whether the
 * transaction was kept: every statement and transaction here can be run twice to the same effect.
 */
function isRetryable(error: unknown): boolean {
  const code = (error as { code?: unknown } | undefined)?.code;
  if (code === '40P01' || code === '40001' || code === '57P01' || code === '57P02' || code === 'ECONNRESET' || code === 'EPIPE') return true;
  if (typeof code === 'string' && code.startsWith('08')) return true;
  return error instanceof Error && error.message === 'Connection terminated unexpectedly';
}

function failureOf(operation: string, error: unknown): Error {
  return isPostgresFailure(error) ? new MetadataError(operation, error) : (error as Error);
}

/** A short random pause before another try, longer at each: a server restarting, or two victims of one deadlock, get time. */
function pauseBeforeRetry(attempt: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, attempt * (5 + Math.random() * 20)));
}

/** The noted reads as the four arrays regmirror_note_reads takes. */
function readsParameters(taken: TakenReads): [string[], number[], string[], number[]] {
  return [taken.blobs.map(([digest]) => digest), taken.blobs.map(([, at]) => at), taken.manifests.map(([digest]) => digest), taken.manifests.map(([, at]) => at)];
}

export class PostgresMetadataStore implements MetadataStore {
  /** Reads noted and not yet written. */
  private readonly reads = new NotedReads(() => this.flushAccess());
  private closing: Promise<void> | undefined;

  private constructor(private readonly pool: pg.Pool) {}

  /** Connects, and brings the database's schema up to this version's (waiting while another node does). */
  static async open(options: PostgresOptions): Promise<PostgresMetadataStore> {
    const statementTimeoutMs = options.statementTimeoutMs ?? DEFAULT_STATEMENT_TIMEOUT_MS;
    const pool = new pg.Pool({
      // Parsed here rather than given as connectionString, which pg lets override every setting beside it: the
      // URL's empty password would replace `password`.
      ...parseIntoClientConfig(options.url),
      password: options.password,
      max: options.poolSize ?? DEFAULT_POOL_SIZE,
      statement_timeout: statementTimeoutMs,
      idle_in_transaction_session_timeout: statementTimeoutMs,
      connectionTimeoutMillis: statementTimeoutMs,
      keepAlive: true,
      fallback_application_name: 'regmirror',
      types,
    });
    // Without a listener an idle connection's error would end the process.
    pool.on('error', (error) => options.onIdleError?.(error));
    const store = new PostgresMetadataStore(pool);
    try {
      while (await store.transaction('open', (client) => migrateOneStep(client))) {
        // each step is a transaction of its own
      }
    } catch (error) {
      await pool.end();
      throw error instanceof MetadataError ? error : failureOf('open', error);
    }
    return store;
  }

  /** One statement; a failure of the database becomes a MetadataError, after more tries where one may pass (isRetryable). */
  private async run<R extends QueryResultRow>(operation: string, sql: string, parameters: unknown[] = []): Promise<R[]> {
    for (let attempt = 1; ; attempt++) {
      try {
        return (await this.pool.query<R>(sql, parameters)).rows;
      } catch (error) {
        if (isRetryable(error) && attempt < TRIES) {
          await pauseBeforeRetry(attempt);
          continue;
        }
        throw failureOf(operation, error);
      }
    }
  }

  /** Runs work in one transaction on one connection, tried again whole where another try may pass (isRetryable). */
  private async transaction<T>(operation: string, work: (client: PoolClient) => Promise<T>): Promise<T> {
    for (let attempt = 1; ; attempt++) {
      let client: PoolClient;
      try {
        client = await this.pool.connect();
      } catch (error) {
        throw failureOf(operation, error);
      }
      // A connection that fails between two statements fails the next one too: that one reports it.
      const ignoreBetweenStatements = (): void => undefined;
      client.on('error', ignoreBetweenStatements);
      let broken: Error | undefined;
      try {
        await client.query('BEGIN');
        const result = await work(client);
        await client.query('COMMIT');
        return result;
      } catch (error) {
        broken = await client.query('ROLLBACK').then(
          () => undefined,
          (rollbackFailed: unknown) => rollbackFailed as Error,
        );
        if (isRetryable(error) && attempt < TRIES) {
          await pauseBeforeRetry(attempt);
          continue;
        }
        throw failureOf(operation, error);
      } finally {
        client.removeListener('error', ignoreBetweenStatements);
        // A connection whose rollback failed is not given to anyone else.
        client.release(broken);
      }
    }
  }

  getBlob(digest: Digest): Promise<BlobRecord | undefined> {
    return this.run<{ size: number; last_access: number }>('getBlob', SQL.getBlob, [digest]).then(([row]) => row && { digest, size: row.size, lastAccess: row.last_access });
  }

  async putBlob(digest: Digest, size: number, now: number, holder?: RepositoryRef): Promise<void> {
    await this.run('putBlob', SQL.putBlob, [digest, size, now, holder?.registry ?? null, holder?.name ?? null]);
  }

  async deleteBlob(digest: Digest): Promise<void> {
    await this.run('deleteBlob', SQL.forget, [digest, 'blob']);
  }

  touchBlob(digest: Digest, now: number): Promise<void> {
    this.reads.noteBlob(digest, now);
    return Promise.resolve();
  }

  touchManifest(digest: Digest, now: number): Promise<void> {
    this.reads.noteManifest(digest, now);
    return Promise.resolve();
  }

  /** Writes the reads noted since the last flush: one statement, whatever their number. */
  async flushAccess(): Promise<void> {
    if (this.reads.empty) {
      this.reads.stop();
      return;
    }
    await this.withReadsWritten((reads) => this.run('flushAccess', SQL.noteReads, reads));
  }

  /** Runs a statement given the reads noted so far, to write them first. A failure keeps them for the next flush. */
  private async withReadsWritten<T>(statement: (reads: ReturnType<typeof readsParameters>) => Promise<T>): Promise<T> {
    const taken = this.reads.take();
    try {
      return await statement(readsParameters(taken));
    } catch (error) {
      this.reads.restore(taken);
      throw error;
    }
  }

  async listBlobs(page: Page): Promise<BlobRecord[]> {
    const rows = await this.run<{ digest: string; size: number; last_access: number }>('listBlobs', SQL.listBlobs, [page.last ?? '', page.limit]);
    return rows.map((row) => ({ digest: row.digest as Digest, size: row.size, lastAccess: row.last_access }));
  }

  getManifest(digest: Digest): Promise<ManifestRecord | undefined> {
    return this.run<{ media_type: string; size: number }>('getManifest', SQL.getManifest, [digest]).then(([row]) => row && { digest, mediaType: row.media_type, size: row.size });
  }

  async putManifest(record: ManifestRecord, now: number, graph?: ManifestGraph): Promise<void> {
    const references = graph?.references;
    await this.run('putManifest', SQL.putManifest, [
      record.digest,
      record.mediaType,
      record.size,
      now,
      references?.map((reference) => reference.digest) ?? null,
      references?.map((reference) => reference.role) ?? null,
      graph?.holder?.registry ?? null,
      graph?.holder?.name ?? null,
    ]);
  }

  async graph(): Promise<ContentGraph> {
    // Page by page, letting the event loop run between them. Not one snapshot: what decides on it checks each
    // removal again (removeContent).
    const pacer = new Pacer();
    const references = new Map<string, ContentReference[]>();
    for (let after = { parent: '', position: -1 }; ; ) {
      const rows = await this.run<{ parent: string; position: number; child: string; role: ReferenceRole }>('graph', SQL.graphReferences, [after.parent, after.position, GRAPH_PAGE]);
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
    for (const record of await this.recordsInPages(SQL.graphManifests, pacer)) manifests.push({ ...record, references: references.get(record.digest) ?? [] });
    return { manifests, blobs: await this.recordsInPages(SQL.graphBlobs, pacer) };
  }

  /** Every record of one kind, in digest order, read GRAPH_PAGE at a time. */
  private async recordsInPages(sql: string, pacer: Pacer): Promise<BlobRecord[]> {
    const records: BlobRecord[] = [];
    for (let after = ''; ; ) {
      const rows = await this.run<{ digest: string; size: number; last_access: number }>('graph', sql, [after, GRAPH_PAGE]);
      for (const row of rows) records.push({ digest: row.digest as Digest, size: row.size, lastAccess: row.last_access });
      const last = rows.at(-1);
      if (last === undefined || rows.length < GRAPH_PAGE) return records;
      after = last.digest;
      await pacer.pace();
    }
  }

  async rootsByLastRead(after: ReadOrderPosition | undefined, limit: number): Promise<ContentEntry[]> {
    const from = after ?? { lastAccess: Number.MIN_SAFE_INTEGER, digest: '' };
    return (await this.run<EntryRow>('rootsByLastRead', SQL.roots, [from.lastAccess, from.digest, limit])).map(entryOf);
  }

  async heldBy(manifest: Digest): Promise<ContentEntry[]> {
    return (await this.run<EntryRow>('heldBy', SQL.heldBy, [manifest])).map(entryOf);
  }

  async holdersOf(digest: Digest): Promise<Array<{ digest: Digest; holders: number }>> {
    const rows = await this.run<{ digest: string; holders: number }>('holdersOf', SQL.holdersOf, [digest]);
    return rows.map((row) => ({ digest: row.digest as Digest, holders: row.holders }));
  }

  async totals(): Promise<ContentTotals> {
    const [row] = await this.run<{ blobs: number; blob_bytes: number; manifests: number; manifest_bytes: number }>('totals', SQL.totals);
    return { blobs: row?.blobs ?? 0, blobBytes: row?.blob_bytes ?? 0, manifests: row?.manifests ?? 0, manifestBytes: row?.manifest_bytes ?? 0 };
  }

  async totalsByRegistry(): Promise<RegistryTotals[]> {
    const byRegistry = new Map<string, RegistryTotals>();
    for (const row of await this.run<{ registry: string; kind: 'blob' | 'manifest'; count: number; bytes: number }>('totalsByRegistry', SQL.totalsByRegistry)) {
      let totals = byRegistry.get(row.registry);
      if (totals === undefined) byRegistry.set(row.registry, (totals = { registry: row.registry, blobs: 0, blobBytes: 0, manifests: 0, manifestBytes: 0 }));
      if (row.kind === 'blob') Object.assign(totals, { blobs: row.count, blobBytes: row.bytes });
      else Object.assign(totals, { manifests: row.count, manifestBytes: row.bytes });
    }
    return [...byRegistry.values()].sort((a, b) => a.registry.localeCompare(b.registry));
  }

  async referencesOf(digest: Digest): Promise<ContentReference[]> {
    return (await this.run<{ child: string; role: ReferenceRole }>('referencesOf', SQL.referencesOf, [digest])).map((row) => ({ digest: row.child as Digest, role: row.role }));
  }

  async linkContent(repository: RepositoryRef, digest: Digest, now: number): Promise<void> {
    await this.run('linkContent', SQL.link, [repository.registry, repository.name, digest, now]);
  }

  async holdsContent(repository: RepositoryRef, digest: Digest): Promise<boolean> {
    return (await this.run('holdsContent', SQL.holdsContent, [repository.registry, repository.name, digest])).length > 0;
  }

  async unlinkContent(repository: RepositoryRef, digest: Digest): Promise<boolean> {
    return (await this.run('unlinkContent', SQL.unlinkContent, [repository.registry, repository.name, digest])).length > 0;
  }

  async contentHeldByRegistry(registry: string): Promise<Digest[]> {
    return (await this.run<{ digest: string }>('contentHeldByRegistry', SQL.contentHeldByRegistry, [registry])).map((row) => row.digest as Digest);
  }

  async referrersOf(subject: Digest): Promise<Digest[]> {
    return (await this.run<{ parent: string }>('referrersOf', SQL.referrersOf, [subject])).map((row) => row.parent as Digest);
  }

  async deleteManifest(digest: Digest): Promise<void> {
    await this.run('deleteManifest', SQL.forget, [digest, 'manifest']);
  }

  async runAlone<T>(task: ExclusiveTask, work: () => Promise<T>): Promise<T | undefined> {
    // Its own connection, not the pool's: the work needs the pool, which may be one connection.
    const session = new pg.Client(this.pool.options);
    try {
      await session.connect();
      session.on('error', () => undefined);
      const [row] = (await session.query<{ locked: boolean }>('SELECT pg_try_advisory_lock($1, $2) AS locked', [TASK_LOCK_SPACE, EXCLUSIVE_TASKS[task]])).rows;
      if (row?.locked !== true) {
        // Another node runs it: this session is of no more use (left open, every refused turn kept a connection).
        await session.end().catch(() => undefined);
        return undefined;
      }
    } catch (error) {
      await session.end().catch(() => undefined);
      throw failureOf('runAlone', error);
    }
    try {
      return await work();
    } finally {
      // Closing the session releases its lock.
      await session.end().catch(() => undefined);
    }
  }

  async taggedDigests(): Promise<Digest[]> {
    return (await this.run<{ digest: string }>('taggedDigests', SQL.taggedDigests)).map((row) => row.digest as Digest);
  }

  async removeContent(removal: ContentRemoval): Promise<RemovedContent> {
    // Manifests first (parents before children, as given), so that what they alone referenced is no longer
    // referenced when its turn comes. Each slice first writes the reads noted here, so that a read since the
    // decision counts (reads other nodes noted and have not flushed yet do not: see docs/operations.md).
    const removed: RemovedContent = { manifests: [], blobs: [] };
    const work = [...removal.manifests.map((digest) => ({ kind: 'manifest', digest })), ...removal.blobs.map((digest) => ({ kind: 'blob', digest }))];
    for (let next = 0; next < work.length; next += REMOVAL_SLICE) {
      const slice = work.slice(next, next + REMOVAL_SLICE);
      const rows = await this.withReadsWritten((reads) =>
        this.run<{ removed_kind: string; removed_digest: string; removed_size: number }>('removeContent', SQL.removeContent, [
          slice.map((item) => item.kind),
          slice.map((item) => item.digest),
          removal.readBefore,
          ...reads,
        ]),
      );
      for (const row of rows) (row.removed_kind === 'manifest' ? removed.manifests : removed.blobs).push({ digest: row.removed_digest as Digest, size: row.removed_size });
    }
    return removed;
  }

  async listManifests(page: Page): Promise<ManifestRecord[]> {
    const rows = await this.run<{ digest: string; media_type: string; size: number }>('listManifests', SQL.listManifests, [page.last ?? '', page.limit]);
    return rows.map((row) => ({ digest: row.digest as Digest, mediaType: row.media_type, size: row.size }));
  }

  async getTag(repository: RepositoryRef, tag: string): Promise<TagRecord | undefined> {
    const [row] = await this.run<{ digest: string; fetched_at: number }>('getTag', SQL.getTag, [repository.registry, repository.name, tag]);
    return row && { digest: row.digest as Digest, fetchedAt: row.fetched_at };
  }

  async putTag(repository: RepositoryRef, tag: string, record: TagRecord): Promise<void> {
    await this.run('putTag', SQL.putTag, [repository.registry, repository.name, tag, record.digest, record.fetchedAt]);
  }

  async deleteTag(repository: RepositoryRef, tag: string): Promise<void> {
    await this.run('deleteTag', SQL.deleteTag, [repository.registry, repository.name, tag]);
  }

  async listTags(repository: RepositoryRef, page: Page): Promise<string[]> {
    return (await this.run<{ tag: string }>('listTags', SQL.listTags, [repository.registry, repository.name, page.last ?? '', page.limit])).map((row) => row.tag);
  }

  async addRepository(repository: RepositoryRef, now: number): Promise<void> {
    await this.run('addRepository', SQL.addRepository, [repository.registry, repository.name, now]);
  }

  async listRepositories(page: Page, defaultRegistry: string): Promise<string[]> {
    return (await this.run<{ shown: string }>('listRepositories', SQL.listRepositories, [defaultRegistry, page.last ?? '', page.limit])).map((row) => row.shown);
  }

  async hasRepository(repository: RepositoryRef): Promise<boolean> {
    return (await this.run('hasRepository', SQL.hasRepository, [repository.registry, repository.name])).length > 0;
  }

  async getDocument(key: string): Promise<CachedDocument | undefined> {
    const [row] = await this.run<{ body: Buffer; fetched_at: number }>('getDocument', SQL.getDocument, [key]);
    return row && { body: row.body, fetchedAt: row.fetched_at };
  }

  async putDocument(key: string, body: Buffer, fetchedAt: number): Promise<void> {
    await this.run('putDocument', SQL.putDocument, [key, body, fetchedAt]);
  }

  async deleteDocument(key: string): Promise<void> {
    await this.run('deleteDocument', SQL.deleteDocument, [key]);
  }

  /** Writes the reads noted, and closes the connections (once, however often it is called). */
  close(): Promise<void> {
    this.closing ??= (async () => {
      try {
        await this.flushAccess();
      } finally {
        this.reads.stop();
        await this.pool.end();
      }
    })();
    return this.closing;
  }
}

/**
 * Applies the next migration the database lacks, in the caller's transaction, under the schema lock (a node
 * starting beside another waits for it, then finds the work done). Resolves whether there may be more to apply.
 */
async function migrateOneStep(client: PoolClient): Promise<boolean> {
  // A migration may build indexes over a large database: no statement timeout for it.
  await client.query('SET LOCAL statement_timeout = 0');
  await client.query(`SELECT pg_advisory_xact_lock(${SCHEMA_LOCK})`);
  await client.query('CREATE TABLE IF NOT EXISTS schema_migrations (version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())');
  const [row] = (await client.query<{ version: number }>('SELECT coalesce(max(version), 0) AS version FROM schema_migrations')).rows;
  const applied = row?.version ?? 0;
  const latest = MIGRATIONS.at(-1)?.version ?? 0;
  if (applied > latest) {
    throw new MetadataError('migrate', new Error(`the database's schema is at version ${applied}, newer than this regmirror knows (${latest}): run the newer regmirror`));
  }
  const next = MIGRATIONS.find((migration) => migration.version === applied + 1);
  if (next === undefined) return false;
  await client.query(next.sql);
  await client.query('INSERT INTO schema_migrations (version, name) VALUES ($1, $2)', [next.version, next.name]);
  return true;
}
