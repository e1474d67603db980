// Checkpoints the SQLite write-ahead log on a worker thread, over its own connection. A checkpoint copies the log
// into the database file and syncs it: 40-80 ms at 50k blobs, which SQLite would otherwise run inside whichever
// commit took the log past its limit, on the event loop that serves every request.

import { stat } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { Worker } from 'node:worker_threads';

/** The log's size from which it is checkpointed: SQLite's own default (1000 pages of 4 KiB). */
export const CHECKPOINT_BYTES = 4 * 1024 * 1024;
/** How often the log is looked at. */
const CHECK_INTERVAL_MS = 1_000;

/** How long the worker waits for a writer to finish before a checkpoint gives up (the next check tries again). */
const WRITER_WAIT_MS = 2_000;

/**
 * The worker: one connection to the database, a checkpoint per message. TRUNCATE, not PASSIVE: a passive
 * checkpoint never finishes while commits keep coming (each adds to the log as it copies), and a log never wholly
 * copied is never restarted: it grew to 4 GB while 100k blobs were recorded. TRUNCATE waits for the writer of the
 * moment, holds new ones back while it copies (the server's statements wait for it as for any busy database),
 * and empties the file.
 */
const WORKER_SOURCE = `
const { parentPort, workerData } = require('node:worker_threads');
const Database = require(workerData.driver);
const db = new Database(workerData.file, { fileMustExist: true });
db.pragma('busy_timeout = ${WRITER_WAIT_MS}');
parentPort.on('message', () => {
  try {
    db.pragma('wal_checkpoint(TRUNCATE)');
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

  /** Checkpoints when the log has grown past CHECKPOINT_BYTES and changed since the last checkpoint. */
  async check(): Promise<void> {
    if (this.checking || this.failed) return;
    this.checking = true;
    try {
      const log = await stat(`${this.file}-wal`).catch(() => undefined);
      if (log === undefined || log.size < CHECKPOINT_BYTES || log.mtimeMs === this.checkpointedAt) return;
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
