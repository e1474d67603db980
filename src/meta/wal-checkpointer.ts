// Checkpoints the SQLite write-ahead log on a worker thread, over its own connection. A checkpoint copies the log
// into the database file and syncs it: 40-80 ms at 50k blobs, which SQLite would otherwise run inside whichever
// commit took the log past its limit, on the event loop that serves every request.

import { stat } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { Worker } from 'node:worker_threads';

/** A log of this many bytes of pages (SQLite's own default: 1000 pages of 4 KiB) is restarted however busy the writers. */
export const CHECKPOINT_BYTES = 4 * 1024 * 1024;
/** What the log's file is cut down to when it starts again after a burst (journal_size_limit). */
export const LOG_FILE_LIMIT_BYTES = 4 * CHECKPOINT_BYTES;
/** How often the log is looked at. */
const CHECK_INTERVAL_MS = 1_000;
/** How long the worker waits for a writer to finish before a RESTART gives up (the next check tries again). */
const WRITER_WAIT_MS = 2_000;

/**
 * The worker: one connection to the database, a checkpoint per message. First PASSIVE, as SQLite's own automatic
 * checkpoint: it copies what it can without making a writer wait, and once all is copied the next commit writes
 * the log from its start again, in the file's existing space (so commits still fit in it when the disk is full).
 * A passive checkpoint never finishes while commits keep coming, and a log never wholly copied is never restarted
 * (it grew to 4 GB while 100k blobs were recorded): past CHECKPOINT_BYTES of pages left behind, RESTART, which waits
 * for the writer of the moment and holds new ones back while it copies (the server's statements wait for it as for
 * any busy database). Never TRUNCATE: an emptied file has to grow again, and on a full disk it cannot.
 */
const WORKER_SOURCE = `
const { parentPort, workerData } = require('node:worker_threads');
const Database = require(workerData.driver);
const db = new Database(workerData.file, { fileMustExist: true });
db.pragma('busy_timeout = ${WRITER_WAIT_MS}');
parentPort.on('message', () => {
  try {
    const [passive] = db.pragma('wal_checkpoint(PASSIVE)');
    if (passive.checkpointed < passive.log && passive.log * db.pragma('page_size', { simple: true }) >= ${CHECKPOINT_BYTES}) db.pragma('wal_checkpoint(RESTART)');
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

  /** `onUnavailable`: the worker could not run; the connection should checkpoint by itself again. */
  constructor(
    private readonly file: string,
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
      await this.checkpoint();
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

  private checkpoint(): Promise<void> {
    const worker = (this.worker ??= this.startWorker());
    return new Promise((resolve, reject) => {
      this.pending = { resolve, reject };
      worker.postMessage('checkpoint');
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
