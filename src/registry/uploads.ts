// Blob uploads to hosted repositories (OCI Distribution 1.1): sessions that stream what the client sends into a
// temporary of the store while it is hashed, and commit it only once the digest the client names verifies.
// Sessions live in this process: a restart drops them (their temporaries are left for GC), as one does any
// idle for longer than the idle limit. In a cluster a session's id names its node, and the other nodes forward its
// requests there (cluster/cluster-uploads.ts).

import { createHash, randomUUID, type Hash } from 'node:crypto';
import type { Digest } from '../oci/digest.js';
import type { RepositoryRef } from '../meta/metadata-store.js';
import type { ObjectWriter } from '../store/object-store.js';
import type { ChunkRange, UploadStatus } from './content-service.js';
import { RegistryError } from './errors.js';
import type { LocalRegistry } from './local-registry.js';

export interface UploadLimits {
  /** The largest blob an upload may hold. */
  maxBytes: number;
  /** How many upload sessions may be open at once (each holds a temporary). */
  maxSessions: number;
  /** A session no request has touched for this long is cancelled. */
  idleMs: number;
}

/** Bytes gathered from the client before one write to the temporary. */
const WRITE_BATCH_BYTES = 1024 * 1024;

/** A UUID as randomUUID() writes it: what this process hands out as a session's id, after its prefix. */
export const UUID_PATTERN = '[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}';
const UUID = new RegExp(`^${UUID_PATTERN}$`);

/** What hosted repositories ask of upload sessions: this process's (UploadSessions), or a cluster's (ClusterUploads). */
export interface UploadSessionStore {
  start(repository: RepositoryRef): Promise<UploadStatus>;
  whole(repository: RepositoryRef, digest: Digest, body: AsyncIterable<Uint8Array>): Promise<void>;
  status(id: string, repository: RepositoryRef): Promise<UploadStatus>;
  append(id: string, repository: RepositoryRef, body: AsyncIterable<Uint8Array>, range: ChunkRange | undefined): Promise<UploadStatus>;
  complete(id: string, repository: RepositoryRef, digest: Digest, body: AsyncIterable<Uint8Array>, range: ChunkRange | undefined): Promise<void>;
  cancel(id: string, repository: RepositoryRef): Promise<void>;
}

interface Session {
  id: string;
  repository: RepositoryRef;
  /** The temporary the bytes stream into, readable back; committed as the blob once verified. */
  writer: ObjectWriter;
  hash: Hash;
  /** A request is reading into it: a second one at once is refused (chunks must come in order). */
  busy: boolean;
  touchedAt: number;
}

export class UploadSessions implements UploadSessionStore {
  private readonly sessions = new Map<string, Session>();
  private readonly sweeper: NodeJS.Timeout;

  /** idPrefix: put before every session id (a cluster's node names itself there). */
  constructor(
    private readonly local: LocalRegistry,
    private readonly limits: UploadLimits,
    private readonly idPrefix = '',
    private readonly now: () => number = Date.now,
  ) {
    this.sweeper = setInterval(() => void this.cancelIdle(), Math.max(1_000, Math.min(60_000, limits.idleMs / 2)));
    this.sweeper.unref();
  }

  get open(): number {
    return this.sessions.size;
  }

  async start(repository: RepositoryRef): Promise<UploadStatus> {
    if (this.sessions.size >= this.limits.maxSessions) {
      throw new RegistryError('TOOMANYREQUESTS', { message: `too many uploads in progress (limit ${this.limits.maxSessions}); retry later`, headers: { 'retry-after': '10' } });
    }
    const writer = await this.local.createBlobWriter();
    const id = `${this.idPrefix}${randomUUID()}`;
    this.sessions.set(id, { id, repository, writer, hash: createHash('sha256'), busy: false, touchedAt: this.now() });
    return { id, size: 0 };
  }

  async status(id: string, repository: RepositoryRef): Promise<UploadStatus> {
    const session = this.find(id, repository);
    session.touchedAt = this.now();
    // async: an unknown id (find throws) rejects the promise, as in the other methods.
    return Promise.resolve({ id, size: session.writer.size });
  }

  async append(id: string, repository: RepositoryRef, body: AsyncIterable<Uint8Array>, range: ChunkRange | undefined): Promise<UploadStatus> {
    const session = this.claim(id, repository, range);
    try {
      await this.receive(session, body, range);
      return { id, size: session.writer.size };
    } catch (error) {
      // Part of a chunk is in the temporary and the hash: the session cannot go on.
      this.sessions.delete(id);
      throw error;
    } finally {
      this.release(session);
    }
  }

  /** Ends an upload: its last chunk, then the digest check; on success the blob is the repository's. */
  async complete(id: string, repository: RepositoryRef, digest: Digest, body: AsyncIterable<Uint8Array>, range: ChunkRange | undefined): Promise<void> {
    const session = this.claim(id, repository, range);
    let settled = false;
    try {
      try {
        await this.receive(session, body, range);
      } catch (error) {
        this.sessions.delete(id);
        throw error;
      }
      const actual = `sha256:${session.hash.digest('hex')}`;
      // The session is spent either way: its hash is final.
      this.sessions.delete(id);
      settled = true;
      if (actual !== digest) {
        await discard(session.writer);
        throw new RegistryError('DIGEST_INVALID', { detail: { digest, received: actual } });
      }
      await this.commit(session.writer, digest, repository);
    } finally {
      if (!settled) this.release(session);
    }
  }

  /** A whole blob in one request: a session of its own, never listed; its digest known, the store may stream it to its place. */
  async whole(repository: RepositoryRef, digest: Digest, body: AsyncIterable<Uint8Array>): Promise<void> {
    const writer = await this.local.createBlobWriter(digest);
    const session: Session = { id: '', repository, writer, hash: createHash('sha256'), busy: true, touchedAt: this.now() };
    try {
      await this.receive(session, body, undefined);
    } catch (error) {
      await discard(writer);
      throw error;
    }
    const actual = `sha256:${session.hash.digest('hex')}`;
    if (actual !== digest) {
      await discard(writer);
      throw new RegistryError('DIGEST_INVALID', { detail: { digest, received: actual } });
    }
    await this.commit(writer, digest, repository);
  }

  async cancel(id: string, repository: RepositoryRef): Promise<void> {
    const session = this.find(id, repository);
    this.sessions.delete(id);
    if (!session.busy) await discard(session.writer);
    // A request still reading into it discards it when it ends (release finds it gone).
  }

  /** Cancels every session (shutdown): their temporaries are removed. */
  async close(): Promise<void> {
    clearInterval(this.sweeper);
    const sessions = [...this.sessions.values()];
    this.sessions.clear();
    await Promise.allSettled(sessions.filter((session) => !session.busy).map((session) => discard(session.writer)));
  }

  /** Cancels the sessions idle past the limit; how many. */
  async cancelIdle(): Promise<number> {
    const before = this.now() - this.limits.idleMs;
    const idle = [...this.sessions.values()].filter((session) => !session.busy && session.touchedAt < before);
    for (const session of idle) this.sessions.delete(session.id);
    await Promise.allSettled(idle.map((session) => discard(session.writer)));
    return idle.length;
  }

  private async commit(writer: ObjectWriter, digest: Digest, repository: RepositoryRef): Promise<void> {
    try {
      await this.local.commitBlob(writer, digest, writer.size, repository);
      await writer.close();
    } catch (error) {
      await discard(writer).catch(() => undefined);
      throw error;
    }
  }

  /**
   * Reads a body into the session's temporary, hashing it as it comes; a chunk range must start where the upload
   * is. One write of a batch is in flight while the next batch is read (at most two batches held).
   */
  private async receive(session: Session, body: AsyncIterable<Uint8Array>, range: ChunkRange | undefined): Promise<void> {
    const start = session.writer.size;
    let batch: Uint8Array[] = [];
    let batched = 0;
    let writing: Promise<void> = Promise.resolve();
    const flush = async (): Promise<void> => {
      await writing;
      if (batch.length === 0) return;
      const chunks = batch;
      batch = [];
      batched = 0;
      writing = session.writer.appendAll(chunks);
      // Failures surface at the next flush (or the last); never unhandled meanwhile.
      writing.catch(() => undefined);
    };
    let received = 0;
    try {
      for await (const chunk of body) {
        received += chunk.length;
        if (start + received > this.limits.maxBytes) {
          throw new RegistryError('SIZE_INVALID', { status: 413, message: `blob larger than the upload limit (${this.limits.maxBytes} bytes)` });
        }
        if (range !== undefined && received > range.end - range.start + 1) {
          throw new RegistryError('SIZE_INVALID', { message: 'chunk longer than its Content-Range' });
        }
        session.hash.update(chunk);
        batch.push(chunk);
        batched += chunk.length;
        if (batched >= WRITE_BATCH_BYTES) await flush();
      }
      await flush();
      await writing;
    } catch (error) {
      // The write in flight ends before the caller discards the temporary.
      await writing.catch(() => undefined);
      throw error;
    }
    session.touchedAt = this.now();
    if (range !== undefined && received !== range.end - range.start + 1) {
      throw new RegistryError('SIZE_INVALID', { message: 'chunk shorter than its Content-Range', detail: { range: `${range.start}-${range.end}`, received } });
    }
  }

  private find(id: string, repository: RepositoryRef): Session {
    const session = id.startsWith(this.idPrefix) && UUID.test(id.slice(this.idPrefix.length)) ? this.sessions.get(id) : undefined;
    // A session is its repository's: another repository's id is as unknown as a made-up one.
    if (session === undefined || session.repository.registry !== repository.registry || session.repository.name !== repository.name) {
      throw new RegistryError('BLOB_UPLOAD_UNKNOWN', { detail: { id: id.slice(0, 100) } });
    }
    return session;
  }

  /** The session for one request at a time, its chunk (when ranged) starting where the upload is; else 416. */
  private claim(id: string, repository: RepositoryRef, range: ChunkRange | undefined): Session {
    const session = this.find(id, repository);
    const size = session.writer.size;
    if (session.busy || (range !== undefined && range.start !== size)) {
      throw new RegistryError('RANGE_INVALID', {
        message: session.busy ? 'another request is writing to this upload' : `chunk must start at byte ${size}`,
        headers: { range: size === 0 ? '0-0' : `0-${size - 1}`, 'docker-upload-uuid': id },
      });
    }
    session.busy = true;
    session.touchedAt = this.now();
    return session;
  }

  private release(session: Session): void {
    session.busy = false;
    session.touchedAt = this.now();
    // Cancelled while a request was writing: its temporary goes now.
    if (this.sessions.get(session.id) !== session) void discard(session.writer).catch(() => undefined);
  }
}

/** Gives a temporary up and lets go of its handle. */
async function discard(writer: ObjectWriter): Promise<void> {
  await writer.abort();
  await writer.close();
}
