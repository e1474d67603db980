// Checkpoints the SQLite write-ahead log on a worker thread, over its own connection. A checkpoint copies the log
// into the database file and syncs it: 40-80 ms at 50k blobs, which SQLite would otherwise run inside whichever
// commit took the log past its limit, on the event loop that serves every request.

import { stat } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { Worker } from 'node:worker_threads';

/** SQLite's own checkpoint size (1000 pages of 4 KiB): what the connection checkpoints at should the worker fail. */
export const CHECKPOINT_BYTES = 4 * 1024 * 1024;
/** What the log's file is cut back to when it starts again (journal_size_limit); a larger one has not started again. */
export const LOG_FILE_LIMIT_BYTES = 4 * CHECKPOINT_BYTES;
/** How often the log is looked at. */
const CHECK_INTERVAL_MS = 1_000;
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

export class WalCheckpointer {
  private worker: Worker | undefined;
  private timer: NodeJS.Timeout | undefined;
  private checking = false;
  private failed = false;
  /** The log's modification time at the last checkpoint: a log unchanged since needs none. */
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
  ) {}

  start(): void {
    this.timer = setInterval(() => void this.check(), CHECK_INTERVAL_MS).unref();
  }

  /** Checkpoints when something was committed since the last checkpoint (the log's file changed). */
  async check(): Promise<void> {
    if (this.checking || this.failed) return;
    this.checking = true;
    try {
      const log = await stat(`${this.file}-wal`).catch(() => undefined);
      if (log === undefined || log.size === 0 || log.mtimeMs === this.checkpointedAt) return;
      await this.checkpoint('passive');
      // A log that started again is cut back to LOG_FILE_LIMIT_BYTES: one past it has not, for commits came while
      // each passive checkpoint copied (what it copies is the log as it was when it began).
      const after = await stat(`${this.file}-wal`).catch(() => undefined);
      if (after !== undefined && after.size > LOG_FILE_LIMIT_BYTES) await this.exclusive(() => this.checkpoint('restart'));
      this.checkpointedAt = log.mtimeMs;
    } catch (error) {
      this.fail(error instanceof Error ? error : new Error(String(error)));
    } finally {
      this.checking = false;
    }
  }

  async close(): Promise<void> {
    clearInterval(this.timer);
    this.failed = true;
    const worker = this.worker;
    this.worker = undefined;
    await worker?.terminate();
  }

  private checkpoint(mode: 'passive' | 'restart'): Promise<void> {
    const worker = (this.worker ??= this.startWorker());
    return new Promise((resolve, reject) => {
      this.pending = { resolve, reject };
      worker.postMessage(mode);
    });
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
      this.pending?.reject(error);
      this.pending = undefined;
      this.fail(error);
    };
    worker.on('error', gone);
    worker.on('exit', (code) => {
      if (!this.failed) gone(new Error(`the checkpoint worker exited (code ${code})`));
    });
    return worker;
  }

  private fail(error: Error): void {
    if (this.failed) return;
    this.failed = true;
    clearInterval(this.timer);
    void this.worker?.terminate();
    this.worker = undefined;
    this.onUnavailable(error);
  }
}
