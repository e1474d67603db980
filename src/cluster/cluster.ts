// Coordination of several nodes on one PostgreSQL database and one bucket (docs/cluster.md), on the engines
// themselves: a table of the nodes (heartbeats), and a fill lease per digest that dies with its node's connection
// (a session-level advisory lock on a connection of its own), announced in a row with the node's address. A node
// that finds a lease held elsewhere streams the fill from that node (fill-route.ts; the Mirror relays it as a fill
// of its own), or waits for the commit, or for the lease to be given up; a lease given up is announced with NOTIFY.
// The same leases make one node ask an upstream a question for all (askAlone), and upload sessions are reached on
// the node holding them (cluster-uploads.ts). Loaded only when `cluster` is configured.

import { createHash, randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Readable } from 'node:stream';
import pg from 'pg';
import { parseIntoClientConfig } from 'pg-connection-string';
import { Agent, request, type Dispatcher } from 'undici';
import { MetadataError } from '../meta/metadata-error.js';
import type { Digest } from '../oci/digest.js';
import type { SharedNotFoundAnswer } from '../mirror/not-found-cache.js';
import { RegistryError } from '../registry/errors.js';
import type { UploadSessions } from '../registry/uploads.js';
import { ClusterUploads, sessionPrefixOf } from './cluster-uploads.js';
import { CLUSTER_FILLS_PATH, clusterAuthorization } from './fill-route.js';

/**
 * Advisory locks take two int4 keys (postgres-store.ts): (0, 0) is the schema's migration, (1, 0) the content graph.
 * Here: (2, key of a digest) a fill lease; (3, 0) this module's tables while they are created; (5, key of a question)
 * an upstream question one node asks for all (a tag, a manifest by digest). (4, 0) is MetadataStore.runAlone's.
 */
const LEASE_CLASS = 2;
const CLUSTER_SCHEMA_LOCK = '3, 0';
const QUESTION_CLASS = 5;

/** How often a node says it is alive; a node not seen for three of these is shown as gone. */
export const HEARTBEAT_MS = 5_000;
/** A node seen within this many seconds is alive (three heartbeats). */
const ALIVE_SECONDS = (3 * HEARTBEAT_MS) / 1000;
/** Rows of nodes not seen for this long are removed (any node's heartbeat removes them). */
const FORGET_NODES_MS = 3_600_000;
/** The server's keepalive probes on the lease connection: idle 15 s, then 3 probes 5 s apart (about 30 s in all). */
const SESSION_KEEPALIVE = { idleS: 15, intervalS: 5, count: 3 };
/**
 * How often a node waiting for another's lease (a fill, a question, a removal) looks again (the record, the lease,
 * the announcement) when nothing woke it first: a lease given up is announced on NOTIFY_CHANNEL, and the waiting
 * nodes look at once.
 */
const WAIT_STEP_MS = 1_000;
/** Where a node says it gave a lease up (`<class>:<key>`); every node listens on its lease session. */
const NOTIFY_CHANNEL = 'regmirror_cluster';
/** How long a node that found a fill's lease taken but no announcement yet waits before it looks once more. */
const ANNOUNCEMENT_GRACE_MS = 100;
/** The longest a node waits for another's response headers before it counts that node unreachable. */
const PEER_HEADERS_MS = 5_000;
/** The longest a peer's fill stream may stay silent (the filler holds back its last byte only until it verifies). */
const PEER_BODY_IDLE_MS = 60_000;

const SCHEMA = `
CREATE TABLE IF NOT EXISTS cluster_nodes (
  id text PRIMARY KEY,
  advertise text NOT NULL,
  started_at timestamptz NOT NULL DEFAULT now(),
  last_seen timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS cluster_circuits (
  registry text PRIMARY KEY,
  reason text NOT NULL,
  open_until bigint NOT NULL,
  cause text NOT NULL,
  node_id text NOT NULL
);
CREATE TABLE IF NOT EXISTS cluster_not_found (
  key text PRIMARY KEY,
  answer jsonb NOT NULL,
  expires_at bigint NOT NULL
);
CREATE TABLE IF NOT EXISTS cluster_fills (
  digest text PRIMARY KEY,
  node_id text NOT NULL,
  advertise text NOT NULL,
  started_at timestamptz NOT NULL DEFAULT now()
);
`;

export interface ClusterOptions {
  /** postgres://… without a password, as metadata.url. */
  url: string;
  password: string | undefined;
  statementTimeoutMs: number;
  /** This node's URL for the others. */
  advertise: string;
  secret: string;
  /** Whether the blob is committed (its record exists): a waiting node then reads it from the store. */
  isStored(digest: Digest): Promise<boolean>;
  /** The longest a request waits for another node's fill. */
  waitMs: number;
  log: { warn(fields: object, message: string): void; info(fields: object, message: string): void };
  /**
   * With mutual TLS (`tls.clientCA`): the certificate and key this node presents to the others (its own server
   * certificate, which must then allow client authentication too).
   */
  peerCertificate?: { cert: Buffer; key: Buffer };
}

/** This node takes the fill: release it once the fill has committed or failed. */
export interface FillLease {
  release(): void;
}

/** Thrown by lease(): another node holds the digest's lease. */
export class FillHeldElsewhere extends Error {
  override readonly name = 'FillHeldElsewhere';
  constructor(readonly digest: Digest) {
    super(`another node fills ${digest}`);
  }
}

export function isFillHeldElsewhere(error: unknown): error is FillHeldElsewhere {
  return error instanceof FillHeldElsewhere;
}

/** A fill another node runs, streamed from it as it sends it (the receiving node verifies it). */
export interface FollowedFill {
  size: number | undefined;
  body: Readable;
}

/** Leases taken for a removal: the digests held, and how to give them back. */
export interface HeldDigests {
  held: ReadonlySet<Digest>;
  release(): Promise<void>;
}

/** An upstream's circuit opened by one node, for every node: until when, and why. */
export interface SharedOpening {
  registry: string;
  reason: 'rate-limited' | 'failing';
  /** ms since epoch. */
  openUntil: number;
  cause: string;
}

/** How often a node reads the circuits the others opened: a 429 seen by one fails fast on all within this. */
export const CIRCUIT_WATCH_MS = 1_000;

export interface NodeStatus {
  id: string;
  advertise: string;
  startedAt: string;
  lastSeen: string;
  alive: boolean;
  self: boolean;
}

/** The second key of a question's lease: 31 bits of its SHA-256 (another question sharing them only waits for this one). */
export function questionKey(question: string): number {
  return createHash('sha256').update(question).digest().readUInt32BE(0) & 0x7fffffff;
}

/** The two keys of a digest's lease: its first 31 bits (another digest sharing them only waits for this one). */
export function leaseKey(digest: Digest): number {
  return Number.parseInt(digest.slice('sha256:'.length, 'sha256:'.length + 8), 16) & 0x7fffffff;
}

/**
 * The nodes on the database that were seen within three heartbeats, read without joining (for the offline commands,
 * which must not run beside them); none when the cluster's tables do not exist yet.
 */
export async function liveClusterNodes(options: Pick<ClusterOptions, 'url' | 'password' | 'statementTimeoutMs'>): Promise<{ id: string; advertise: string }[]> {
  const client = new pg.Client({
    ...parseIntoClientConfig(options.url),
    password: options.password,
    statement_timeout: options.statementTimeoutMs,
    connectionTimeoutMillis: options.statementTimeoutMs,
    fallback_application_name: 'regmirror-offline',
  });
  client.on('error', () => undefined);
  try {
    await client.connect();
    const { rows } = await client.query<{ id: string; advertise: string }>(
      `SELECT id, advertise FROM cluster_nodes WHERE last_seen > now() - make_interval(secs => $1) ORDER BY advertise`,
      [ALIVE_SECONDS],
    );
    return rows;
  } catch (error) {
    // No such table: no cluster ever ran on this database.
    if ((error as { code?: string }).code === '42P01') return [];
    throw new MetadataError('cluster members', error);
  } finally {
    await client.end().catch(() => undefined);
  }
}

export class Cluster {
  readonly nodeId = randomUUID();
  private session: pg.Client | undefined;
  private sessionOpening: Promise<pg.Client> | undefined;
  private heartbeat: NodeJS.Timeout | undefined;
  private circuitWatch: NodeJS.Timeout | undefined;
  private closed = false;
  /** Requests to the other nodes (fill streams, forwarded uploads), with this node's certificate under mutual TLS. */
  private readonly peers: Dispatcher;
  /** The requests watching for a lease to be given up (watchLease), by `<class>:<key>`. */
  private readonly waiting = new Map<string, Set<() => void>>();
  /** Leases being given back: close() waits for them before it ends the connections. */
  private readonly releasing = new Set<Promise<void>>();

  private constructor(
    private readonly options: ClusterOptions,
    private readonly pool: pg.Pool,
  ) {
    this.peers = new Agent(options.peerCertificate === undefined ? {} : { connect: { cert: options.peerCertificate.cert, key: options.peerCertificate.key } });
  }

  /** Creates the tables (once, under a lock), registers this node and starts its heartbeat. */
  static async open(options: ClusterOptions): Promise<Cluster> {
    const pool = new pg.Pool({
      ...parseIntoClientConfig(options.url),
      password: options.password,
      // Heartbeats, announcements and the looks of waiting requests: short statements.
      max: 4,
      statement_timeout: options.statementTimeoutMs,
      connectionTimeoutMillis: options.statementTimeoutMs,
      keepAlive: true,
      fallback_application_name: 'regmirror-cluster',
    });
    pool.on('error', (error) => options.log.warn({ err: error }, 'cluster: an idle PostgreSQL connection failed'));
    const cluster = new Cluster(options, pool);
    try {
      const client = await pool.connect();
      try {
        await client.query('BEGIN');
        await client.query(`SELECT pg_advisory_xact_lock(${CLUSTER_SCHEMA_LOCK})`);
        await client.query(SCHEMA);
        await client.query('COMMIT');
      } catch (error) {
        await client.query('ROLLBACK').catch(() => undefined);
        throw error;
      } finally {
        client.release();
      }
      await pool.query('INSERT INTO cluster_nodes (id, advertise) VALUES ($1, $2)', [cluster.nodeId, options.advertise]);
      await cluster.openSession();
    } catch (error) {
      await pool.end().catch(() => undefined);
      throw error;
    }
    cluster.heartbeat = setInterval(() => void cluster.beat(), HEARTBEAT_MS);
    cluster.heartbeat.unref();
    return cluster;
  }

  /** What this node's upload session ids start with: its id, so that the other nodes know where a session lives. */
  get uploadSessionPrefix(): string {
    return sessionPrefixOf(this.nodeId);
  }

  /** The upload sessions of the cluster: this node's (local), and the others' reached through their endpoint. */
  uploadsAcross(local: UploadSessions, forwardIdleMs: number): ClusterUploads {
    return new ClusterUploads(local, { nodeId: this.nodeId, secret: this.options.secret, owners: this, forwardIdleMs, peers: this.peers });
  }

  /**
   * The address a node alive now advertises; undefined for a node not seen for three heartbeats (its address may be
   * another machine's by now: the secret is never sent there) or no node at all.
   */
  async advertiseOf(nodeId: string): Promise<string | undefined> {
    try {
      const { rows } = await this.pool.query<{ advertise: string }>(
        `SELECT advertise FROM cluster_nodes WHERE id = $1 AND last_seen > now() - make_interval(secs => $2)`,
        [nodeId, ALIVE_SECONDS],
      );
      return rows[0]?.advertise;
    } catch (error) {
      throw new MetadataError('cluster node address', error);
    }
  }

  /** The nodes sharing the database, for /_regmirror/status. */
  async status(): Promise<{ self: string; advertise: string; nodes: NodeStatus[] }> {
    const { rows } = await this.pool.query<{ id: string; advertise: string; started_at: Date; last_seen: Date; alive: boolean }>(
      `SELECT id, advertise, started_at, last_seen, last_seen > now() - make_interval(secs => $1) AS alive FROM cluster_nodes ORDER BY started_at, id`,
      [ALIVE_SECONDS],
    );
    return {
      self: this.nodeId,
      advertise: this.options.advertise,
      nodes: rows.map((row) => ({
        id: row.id,
        advertise: row.advertise,
        startedAt: row.started_at.toISOString(),
        lastSeen: row.last_seen.toISOString(),
        alive: row.alive,
        self: row.id === this.nodeId,
      })),
    };
  }

  /**
   * Takes the digest's fill lease for this node, and announces it; throws FillHeldElsewhere when another node holds
   * it. Any other error (the database is unreachable) is thrown as it is: no fill without a lease.
   */
  async lease(digest: Digest): Promise<FillLease> {
    try {
      return await this.takeLease(digest);
    } catch (error) {
      throw isFillHeldElsewhere(error) || error instanceof MetadataError ? error : new MetadataError('cluster lease', error);
    }
  }

  isHeldElsewhere(error: unknown): boolean {
    return isFillHeldElsewhere(error);
  }

  private async takeLease(digest: Digest): Promise<FillLease> {
    const key = leaseKey(digest);
    const session = await this.openSession();
    if (!(await tryLock(session, LEASE_CLASS, key))) throw new FillHeldElsewhere(digest);
    try {
      // Committed by another node between this node's look at the store and now: no second fill (follow() then
      // finds it stored, and the request reads it from the store).
      if (await this.options.isStored(digest)) throw new FillHeldElsewhere(digest);
      await this.pool.query(
        `INSERT INTO cluster_fills (digest, node_id, advertise) VALUES ($1, $2, $3)
         ON CONFLICT (digest) DO UPDATE SET node_id = EXCLUDED.node_id, advertise = EXCLUDED.advertise, started_at = now()`,
        [digest, this.nodeId, this.options.advertise],
      );
    } catch (error) {
      await this.unlock(session, LEASE_CLASS, key, digest);
      throw error;
    }
    let released = false;
    return {
      release: () => {
        if (released) return;
        released = true;
        const release = this.pool
          .query('DELETE FROM cluster_fills WHERE digest = $1 AND node_id = $2', [digest, this.nodeId])
          .then(
            () => undefined,
            (error: unknown) => this.options.log.warn({ err: error, digest }, 'cluster: could not remove a fill announcement'),
          )
          .then(() => this.unlock(session, LEASE_CLASS, key, digest));
        this.releasing.add(release);
        void release.finally(() => this.releasing.delete(release));
      },
    };
  }

  /**
   * The leases of those digests no other node holds now, taken for a removal (eviction, GC): a digest another node is
   * filling or committing is left out, so that its new object is not the one the removal deletes.
   */
  async holdFree(digests: readonly Digest[]): Promise<HeldDigests> {
    const session = await this.openSession();
    const held: Digest[] = [];
    for (const digest of digests) {
      if (await tryLock(session, LEASE_CLASS, leaseKey(digest))) held.push(digest);
    }
    return { held: new Set(held), release: () => this.unlockAll(session, held) };
  }

  /**
   * The digest's lease for a commit (a pushed blob or manifest), waiting while another node holds it (its removal or
   * its own commit of the digest) up to the fill deadline. A fill of this node already holds it: taken again at once.
   */
  async holdForCommit(digest: Digest): Promise<() => Promise<void>> {
    const deadline = Date.now() + this.options.waitMs;
    const watch = this.watchLease(LEASE_CLASS, leaseKey(digest));
    try {
      for (;;) {
        const session = await this.openSession();
        if (await tryLock(session, LEASE_CLASS, leaseKey(digest))) return () => this.unlockAll(session, [digest]);
        if (Date.now() >= deadline) throw new RegistryError('UNAVAILABLE', { message: `waited ${this.options.waitMs} ms for another node's work on this digest; retry` });
        await watch.next();
      }
    } finally {
      watch.stop();
    }
  }

  private async unlockAll(session: pg.Client, digests: readonly Digest[]): Promise<void> {
    for (const digest of digests) await this.unlock(session, LEASE_CLASS, leaseKey(digest), digest);
  }

  /**
   * The fill another node runs, from its internal endpoint, from byte 0 as it arrives there: not verified here (the
   * caller verifies). undefined when the blob is committed, no other node announces a fill, or it cannot be reached.
   */
  async peerFill(digest: Digest): Promise<FollowedFill | undefined> {
    try {
      if (await this.options.isStored(digest)) return undefined;
      // The filler takes its lease, then announces the fill: a node that found the lease taken may look between.
      const filler = (await this.announcedFiller(digest)) ?? (await sleep(ANNOUNCEMENT_GRACE_MS).then(() => this.announcedFiller(digest)));
      if (filler === undefined || filler === this.options.advertise) return undefined;
      return await this.fromPeer(filler, digest);
    } catch (error) {
      throw error instanceof MetadataError ? error : new MetadataError('cluster follow', error);
    }
  }

  /**
   * Waits until the blob is committed or the lease is free (given up or lost): then the caller looks again (reads
   * the store, or takes the lease). Throws when the wait is over.
   */
  async waitForFill(digest: Digest): Promise<void> {
    const deadline = Date.now() + this.options.waitMs;
    const watch = this.watchLease(LEASE_CLASS, leaseKey(digest));
    try {
      for (;;) {
        if (await this.options.isStored(digest)) return;
        if (!(await this.heldAnywhere(LEASE_CLASS, leaseKey(digest)))) return;
        if (Date.now() >= deadline) throw new RegistryError('UNAVAILABLE', { message: `waited ${this.options.waitMs} ms for another node's fill of this blob; retry` });
        await watch.next();
      }
    } catch (error) {
      throw error instanceof RegistryError || error instanceof MetadataError ? error : new MetadataError('cluster wait', error);
    } finally {
      watch.stop();
    }
  }

  /**
   * Runs work as the only node asking an upstream this question (a tag's fetch or revalidation, a manifest by
   * digest). When another node asks it now: waits until that node is done (or the fill deadline passes) and answers
   * undefined: look again (its answer is in the database now; otherwise ask without the lease).
   */
  async askAlone<T>(question: string, work: () => Promise<T>): Promise<{ value: T } | undefined> {
    const key = questionKey(question);
    let session: pg.Client;
    let taken: boolean;
    // Watched from before the try: a lease given up between the try and the wait wakes the wait.
    const watch = this.watchLease(QUESTION_CLASS, key);
    try {
      try {
        session = await this.openSession();
        taken = await tryLock(session, QUESTION_CLASS, key);
      } catch (error) {
        throw new MetadataError('cluster question lease', error);
      }
      if (taken) {
        try {
          return { value: await work() };
        } finally {
          await this.unlock(session, QUESTION_CLASS, key, question);
        }
      }
      const deadline = Date.now() + this.options.waitMs;
      try {
        while (Date.now() < deadline && (await this.heldAnywhere(QUESTION_CLASS, key))) await watch.next();
      } catch (error) {
        throw new MetadataError('cluster question wait', error);
      }
    } finally {
      watch.stop();
    }
    return undefined;
  }

  /** A "not found" another node had from an upstream for key, still valid; undefined too when the database fails. */
  async recallNotFound(key: string): Promise<SharedNotFoundAnswer | undefined> {
    try {
      const { rows } = await this.pool.query<{ answer: SharedNotFoundAnswer }>('SELECT answer FROM cluster_not_found WHERE key = $1 AND expires_at > $2', [key, Date.now()]);
      return rows[0]?.answer;
    } catch (error) {
      if (!this.closed) this.options.log.warn({ err: error }, 'cluster: could not read the shared "not found" answers');
      return undefined;
    }
  }

  /** Tells the other nodes an upstream answered "not found" for key, until answer.expiresAt. */
  async rememberNotFound(key: string, answer: SharedNotFoundAnswer): Promise<void> {
    try {
      await this.pool.query(
        `INSERT INTO cluster_not_found (key, answer, expires_at) VALUES ($1, $2, $3)
         ON CONFLICT (key) DO UPDATE SET answer = excluded.answer, expires_at = excluded.expires_at`,
        [key, JSON.stringify(answer), answer.expiresAt],
      );
    } catch (error) {
      if (!this.closed) this.options.log.warn({ err: error }, 'cluster: could not share a "not found" answer');
    }
  }

  /**
   * Tells the other nodes an upstream's circuit opened here (a 429, a spent rate-limit budget, repeated failures):
   * kept until the later of the two windows when one is already shared.
   */
  async shareOpening(opening: SharedOpening): Promise<void> {
    try {
      await this.pool.query(
        `INSERT INTO cluster_circuits (registry, reason, open_until, cause, node_id) VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (registry) DO UPDATE SET reason = excluded.reason, open_until = excluded.open_until, cause = excluded.cause, node_id = excluded.node_id
         WHERE cluster_circuits.open_until < excluded.open_until`,
        [opening.registry, opening.reason, opening.openUntil, opening.cause.slice(0, 500), this.nodeId],
      );
    } catch (error) {
      if (!this.closed) this.options.log.warn({ err: error, upstream: opening.registry }, 'cluster: could not share an opened circuit');
    }
  }

  /** Reads, every CIRCUIT_WATCH_MS, the circuits other nodes opened that are open still, and hands each to adopt. */
  watchCircuits(adopt: (opening: SharedOpening) => void): void {
    const look = async (): Promise<void> => {
      try {
        const { rows } = await this.pool.query<{ registry: string; reason: SharedOpening['reason']; open_until: string; cause: string }>(
          'SELECT registry, reason, open_until, cause FROM cluster_circuits WHERE node_id <> $1 AND open_until > $2',
          [this.nodeId, Date.now()],
        );
        for (const row of rows) adopt({ registry: row.registry, reason: row.reason, openUntil: Number(row.open_until), cause: row.cause });
      } catch (error) {
        if (!this.closed) this.options.log.warn({ err: error }, 'cluster: could not read the circuits other nodes opened');
      }
    };
    this.circuitWatch = setInterval(() => void look(), CIRCUIT_WATCH_MS);
    this.circuitWatch.unref();
  }

  /** Stops the heartbeat, leaves the table, and closes the connections (which frees every lease this node holds). */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.heartbeat);
    clearInterval(this.circuitWatch);
    await Promise.all(this.releasing);
    await this.pool.query('DELETE FROM cluster_nodes WHERE id = $1', [this.nodeId]).catch(() => undefined);
    await this.pool.end().catch(() => undefined);
    const session = this.session;
    this.session = undefined;
    await session?.end().catch(() => undefined);
    await this.peers.close().catch(() => undefined);
  }

  /** The connection whose session holds the leases: opened again when it was lost (its leases were lost with it). */
  private openSession(): Promise<pg.Client> {
    if (this.session !== undefined) return Promise.resolve(this.session);
    this.sessionOpening ??= (async () => {
      const client = new pg.Client({
        ...parseIntoClientConfig(this.options.url),
        password: this.options.password,
        statement_timeout: this.options.statementTimeoutMs,
        connectionTimeoutMillis: this.options.statementTimeoutMs,
        keepAlive: true,
        fallback_application_name: 'regmirror-leases',
      });
      const lost = (error?: Error): void => {
        if (this.session !== client) return;
        this.session = undefined;
        if (!this.closed) this.options.log.warn({ err: error }, 'cluster: the lease connection was lost; fills in progress are no longer exclusive');
      };
      client.on('error', lost);
      client.on('end', () => lost());
      try {
        await client.connect();
        // A node whose machine vanished (no FIN, no RST) must not hold its leases until the kernel's default
        // keepalive (two hours): the server probes this connection and ends it, freeing them, within about 30 s.
        await client.query(`SET tcp_keepalives_idle = ${SESSION_KEEPALIVE.idleS}; SET tcp_keepalives_interval = ${SESSION_KEEPALIVE.intervalS}; SET tcp_keepalives_count = ${SESSION_KEEPALIVE.count}`);
        client.on('notification', (message) => {
          if (message.channel === NOTIFY_CHANNEL && message.payload !== undefined) this.wake(message.payload);
        });
        await client.query(`LISTEN ${NOTIFY_CHANNEL}`);
      } catch (error) {
        client.removeAllListeners();
        client.on('error', () => undefined);
        await client.end().catch(() => undefined);
        throw error;
      }
      this.session = client;
      return client;
    })().finally(() => {
      this.sessionOpening = undefined;
    });
    return this.sessionOpening;
  }

  /**
   * Watches for the lease (classId, key) to be said given up, from now on: next() waits for that (said since the last
   * next(), or while it waits) or for WAIT_STEP_MS, whichever comes first. Made before a look at the lease, so that a
   * notification sent between the look and the wait is not lost. stop() when done.
   */
  private watchLease(classId: number, key: number): { next(): Promise<void>; stop(): void } {
    const lease = `${classId}:${key}`;
    let said = false;
    let woken: (() => void) | undefined;
    const wake = (): void => {
      said = true;
      woken?.();
    };
    let waiting = this.waiting.get(lease);
    if (waiting === undefined) this.waiting.set(lease, (waiting = new Set()));
    waiting.add(wake);
    const registered = waiting;
    return {
      next: () =>
        new Promise<void>((resolve) => {
          const done = (): void => {
            clearTimeout(timer);
            woken = undefined;
            said = false;
            resolve();
          };
          const timer = setTimeout(done, said ? 0 : WAIT_STEP_MS);
          woken = done;
        }),
      stop: () => {
        registered.delete(wake);
        if (registered.size === 0 && this.waiting.get(lease) === registered) this.waiting.delete(lease);
      },
    };
  }

  private wake(lease: string): void {
    for (const wake of [...(this.waiting.get(lease) ?? [])]) wake();
  }

  private async unlock(session: pg.Client, classId: number, key: number, what: string): Promise<void> {
    // A session lost meanwhile took its locks with it.
    if (this.session !== session) return;
    try {
      await session.query('SELECT pg_advisory_unlock($1, $2), pg_notify($3, $4)', [classId, key, NOTIFY_CHANNEL, `${classId}:${key}`]);
    } catch (error) {
      // Ending the connection is what gives the lease up then (the server frees a session's locks with it).
      this.options.log.warn({ err: error, lease: what }, 'cluster: could not release a lease; ending the lease connection to free it');
      if (this.session === session) this.session = undefined;
      await session.end().catch(() => undefined);
    }
  }

  private async beat(): Promise<void> {
    try {
      const updated = await this.pool.query('UPDATE cluster_nodes SET last_seen = now(), advertise = $2 WHERE id = $1', [this.nodeId, this.options.advertise]);
      // Removed meanwhile (forgotten after a long outage): join again.
      if (updated.rowCount === 0) await this.pool.query('INSERT INTO cluster_nodes (id, advertise) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING', [this.nodeId, this.options.advertise]);
      await this.pool.query('DELETE FROM cluster_nodes WHERE last_seen < now() - make_interval(secs => $1)', [FORGET_NODES_MS / 1000]);
      await this.pool.query('DELETE FROM cluster_not_found WHERE expires_at <= $1', [Date.now()]);
    } catch (error) {
      if (!this.closed) this.options.log.warn({ err: error }, 'cluster: heartbeat failed');
    }
  }

  /** The address of the node announcing a fill of digest, if it is alive (a dead node's row may name another machine by now). */
  private async announcedFiller(digest: Digest): Promise<string | undefined> {
    const { rows } = await this.pool.query<{ advertise: string }>(
      `SELECT f.advertise FROM cluster_fills f JOIN cluster_nodes n ON n.id = f.node_id
       WHERE f.digest = $1 AND n.last_seen > now() - make_interval(secs => $2)`,
      [digest, ALIVE_SECONDS],
    );
    return rows[0]?.advertise;
  }

  /** Whether any session holds the lease (classId, key). */
  private async heldAnywhere(classId: number, key: number): Promise<boolean> {
    const { rows } = await this.pool.query<{ held: boolean }>(
      `SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND classid = $1 AND objid = $2 AND objsubid = 2 AND granted) AS held`,
      [classId, key],
    );
    return rows[0]?.held === true;
  }

  /** The fill's bytes from the node running it; undefined when it cannot be reached or runs no such fill now. */
  private async fromPeer(advertise: string, digest: Digest): Promise<FollowedFill | undefined> {
    try {
      const response = await request(`${advertise}${CLUSTER_FILLS_PATH}${digest}`, {
        dispatcher: this.peers,
        headers: { authorization: clusterAuthorization(this.options.secret) },
        headersTimeout: PEER_HEADERS_MS,
        bodyTimeout: PEER_BODY_IDLE_MS,
      });
      if (response.statusCode !== 200) {
        await response.body.dump();
        if (response.statusCode === 401 || response.statusCode === 403) this.options.log.warn({ peer: advertise, status: response.statusCode }, 'cluster: a node refused the shared secret');
        return undefined;
      }
      const header = response.headers['content-length'];
      const size = typeof header === 'string' && /^\d+$/.test(header) ? Number(header) : undefined;
      return { size, body: response.body };
    } catch (error) {
      this.options.log.info({ peer: advertise, digest, err: (error as Error).message }, 'cluster: the filling node cannot be reached; waiting for its commit');
      return undefined;
    }
  }
}

/** Takes the lease (classId, key) on session if no other session holds it; whether it did. */
async function tryLock(session: pg.Client, classId: number, key: number): Promise<boolean> {
  const { rows } = await session.query<{ taken: boolean }>('SELECT pg_try_advisory_lock($1, $2) AS taken', [classId, key]);
  return rows[0]?.taken === true;
}
