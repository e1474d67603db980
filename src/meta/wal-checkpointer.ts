// Checkpoints the SQLite write-ahead log on a worker thread, over its own connection. A checkpoint copies the log
// into the database file and syncs it: 40-80 ms at 50k blobs, which SQLite would otherwise run inside whichever
// commit took the log past its limit, on the event loop that serves every request. The worker is a second V8
// isolate (17 MiB): it starts only when the log holds SQLite's own checkpoint size of pages not yet copied (read
// from the wal-index in the `-shm` file, no SQLite call on the event loop), and stops after a while idle, so a
// process that mostly reads holds none.

import { open, stat } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { endianness } from 'node:os';
import { Worker } from 'node:worker_threads';

/** SQLite's own checkpoint size (1000 pages of 4 KiB): what the connection checkpoints at should the worker fail. */
export const CHECKPOINT_BYTES = 4 * 1024 * 1024;
/** What the log's file is cut back to when it starts again (journal_size_limit); a larger one has not started again. */
export const LOG_FILE_LIMIT_BYTES = 4 * CHECKPOINT_BYTES;
/** How often the log is looked at. */
const CHECK_INTERVAL_MS = 1_000;
/** How long the worker is kept with nothing to checkpoint before it stops (the next checkpoint starts another). */
export const WORKER_IDLE_MS = 30_000;
/** How long the worker waits for a reader or writer of another process before a RESTART gives up (the next check tries again). */
const WRITER_WAIT_MS = 2_000;

/**
 * The worker: one connection to the database, a checkpoint per message. PASSIVE, as SQLite's own automatic
 * checkpoint: it copies what it can without making a writer wait, and once all is copied the next commit writes
 * the log from its start again, in the file's existing space (so commits still fit in it when the disk is full).
 * RESTART when asked: copies all and has the next commit start the log again; it is asked while the server's
 * connection holds its statements back (WalCheckpointer's `exclusive`), for a writer that never pauses starves it
 * (it waits for the writer lock between sleeps). Never TRUNCATE: an emptied file has to grow again, and on a full
 * disk it cannot.
 */
const WORKER_SOURCE = `
const { parentPort, workerData } = require('node:worker_threads');
const Database = require(workerData.driver);
const db = new Database(workerData.file, { fileMustExist: true });
db.pragma('busy_timeout = ${WRITER_WAIT_MS}');
parentPort.on('message', (mode) => {
  try {
    db.pragma(mode === 'restart' ? 'wal_checkpoint(RESTART)' : 'wal_checkpoint(PASSIVE)');
    parentPort.postMessage({ ok: true });
  } catch (error) {
    parentPort.postMessage({ ok: false, message: String(error && error.message || error) });
  }
});
`;

/** What the wal-index says of the log: frames written (`mxFrame`), frames copied into the database (`nBackfill`). */
export interface WalIndexState {
  readonly frames: number;
  readonly copied: number;
  readonly pageBytes: number;
}

/**
 * The wal-index header as SQLite's wal.c lays it out, in the host's byte order: two copies of WalIndexHdr (48
 * bytes each: iVersion u32 at 0, isInit u8 at 12, szPage u16 at 14 with 1 for 65536, mxFrame u32 at 16), then
 * WalCkptInfo, whose nBackfill (u32) is at 96.
 */
const HEADER_BYTES = 48;
const NBACKFILL_OFFSET = 2 * HEADER_BYTES;
const WAL_INDEX_VERSION = 3007000;

/**
 * The log's state from its `-shm` file: one read of 100 bytes. `undefined` while SQLite is writing the header (its
 * two copies differ) or has not initialised it; throws when the file is missing or not a wal-index SQLite wrote.
 */
export async function readWalIndex(file: string): Promise<WalIndexState | undefined> {
  const handle = await open(`${file}-shm`, 'r');
  const bytes = Buffer.alloc(NBACKFILL_OFFSET + 4);
  try {
    const { bytesRead } = await handle.read(bytes, 0, bytes.length, 0);
    if (bytesRead < bytes.length) throw new Error(`the wal-index ${file}-shm is ${bytesRead} bytes, shorter than its header`);
  } finally {
    await handle.close();
  }
  const little = endianness() === 'LE';
  const u32 = (offset: number): number => (little ? bytes.readUInt32LE(offset) : bytes.readUInt32BE(offset));
  const u16 = (offset: number): number => (little ? bytes.readUInt16LE(offset) : bytes.readUInt16BE(offset));
  if (u32(0) !== WAL_INDEX_VERSION) throw new Error(`the wal-index ${file}-shm has version ${u32(0)}, not ${WAL_INDEX_VERSION}`);
  if (bytes[12] !== 1) return undefined;
  if (!bytes.subarray(0, HEADER_BYTES).equals(bytes.subarray(HEADER_BYTES, NBACKFILL_OFFSET))) return undefined;
  const pageSize = u16(14);
  return { frames: u32(16), copied: u32(NBACKFILL_OFFSET), pageBytes: pageSize === 1 ? 65_536 : pageSize };
}

/**
 * What a check does: `checkpoint` when the log was written since the last checkpoint and holds CHECKPOINT_BYTES not
 * yet copied, or any page not yet copied in a file past LOG_FILE_LIMIT_BYTES (commits came while the last checkpoint
 * copied: the RESTART after it cuts the file back); otherwise `stop` a worker idle for its limit, or `none`.
 */
export function nextStep(
  log: WalIndexState & { fileBytes: number; writtenSinceCheckpoint: boolean },
  worker: { running: boolean; idleMs: number; idleLimitMs: number },
): 'checkpoint' | 'stop' | 'none' {
  // Whatever is left, once a second when something was written: a log kept short never needs to grow, which on a
  // full disk is the difference between a write that fits and SQLITE_FULL (the faults suite's disk-full batch found
  // a log left to grow to 4 MiB between checkpoints failing writes there).
  const due = log.frames > log.copied;
  if (due && log.writtenSinceCheckpoint) return 'checkpoint';
  return worker.running && worker.idleMs >= worker.idleLimitMs ? 'stop' : 'none';
}

export class WalCheckpointer {
  private worker: Worker | undefined;
  private timer: NodeJS.Timeout | undefined;
  private checking = false;
  private failed = false;
  /** When the worker last finished a checkpoint. */
  private lastWorkAt = 0;
  /** The log's modification time at the last checkpoint: a log unchanged since needs none (a reader of another
   * process may hold back what a checkpoint can copy; it is not tried again until something new is written). */
  private checkpointedAt = 0;
  private pending: { resolve: () => void; reject: (error: Error) => void } | undefined;

  /**
   * `exclusive` runs work while the server's connection holds its statements back (they wait, the event loop
   * does not); `onUnavailable`: the worker could not run, the connection should checkpoint by itself again.
   */
  constructor(
    private readonly file: string,
    private readonly exclusive: (work: () => Promise<void>) => Promise<void>,
    private readonly onUnavailable: (error: Error) => void,
    private readonly idleLimitMs = WORKER_IDLE_MS,
  ) {}

  /** Whether the worker (a second isolate, with its own connection) is running. */
  get workerRunning(): boolean {
    return this.worker !== undefined;
  }

  start(): void {
    this.timer = setInterval(() => void this.check(), CHECK_INTERVAL_MS).unref();
  }

  /** Checkpoints when the log holds enough not yet copied (see nextStep); stops a worker idle for long. */
  async check(): Promise<void> {
    if (this.checking || this.failed) return;
    this.checking = true;
    try {
      const index = await readWalIndex(this.file);
      if (index === undefined) return;
      const file = index.frames > index.copied ? await stat(`${this.file}-wal`).catch(() => undefined) : undefined;
      const log = { ...index, fileBytes: file?.size ?? 0, writtenSinceCheckpoint: file !== undefined && file.mtimeMs !== this.checkpointedAt };
      const step = nextStep(log, { running: this.workerRunning, idleMs: performance.now() - this.lastWorkAt, idleLimitMs: this.idleLimitMs });
      if (step === 'stop') await this.stopWorker();
      if (step !== 'checkpoint' || file === undefined) return;
      await this.checkpoint('passive');
      // A log that started again is cut back to LOG_FILE_LIMIT_BYTES: one past it has not, for commits came while
      // each passive checkpoint copied (what it copies is the log as it was when it began).
      const after = await stat(`${this.file}-wal`).catch(() => undefined);
      if (after !== undefined && after.size > LOG_FILE_LIMIT_BYTES) await this.exclusive(() => this.checkpoint('restart'));
      this.checkpointedAt = file.mtimeMs;
    } catch (error) {
      this.fail(error instanceof Error ? error : new Error(String(error)));
    } finally {
      this.checking = false;
    }
  }

  async close(): Promise<void> {
    clearInterval(this.timer);
    this.failed = true;
    await this.stopWorker();
  }

  private async checkpoint(mode: 'passive' | 'restart'): Promise<void> {
    const worker = (this.worker ??= this.startWorker());
    try {
      await new Promise<void>((resolve, reject) => {
        this.pending = { resolve, reject };
        worker.postMessage(mode);
      });
    } finally {
      this.lastWorkAt = performance.now();
    }
  }

  /** Stops the worker on purpose: its exit is no failure. */
  private async stopWorker(): Promise<void> {
    const worker = this.worker;
    this.worker = undefined;
    this.pending?.reject(new Error('the checkpoint worker was stopped'));
    this.pending = undefined;
    await worker?.terminate();
  }

  private startWorker(): Worker {
    const driver = createRequire(import.meta.url).resolve('better-sqlite3');
    const worker = new Worker(WORKER_SOURCE, { eval: true, workerData: { file: this.file, driver } });
    worker.unref();
    worker.on('message', (reply: { ok: boolean; message?: string }) => {
      const pending = this.pending;
      this.pending = undefined;
      if (reply.ok) pending?.resolve();
      else pending?.reject(new Error(`checkpoint failed: ${reply.message ?? 'unknown error'}`));
    });
    const gone = (error: Error): void => {
      if (this.worker !== worker) return;
      this.pending?.reject(error);
      this.pending = undefined;
      this.fail(error);
    };
    worker.on('error', gone);
    worker.on('exit', (code) => gone(new Error(`the checkpoint worker exited (code ${code})`)));
    return worker;
  }

  private fail(error: Error): void {
    if (this.failed) return;
    this.failed = true;
    clearInterval(this.timer);
    void this.stopWorker();
    this.onUnavailable(error);
  }
}
