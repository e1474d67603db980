// Keeps new connections from starving behind busy keep-alive ones: several descriptors poll the one
// listening socket (more accepts per event-loop turn), and request work is sliced into ~1 ms turns.
//
// Why (research/starvation/REPORT.md): libuv >= 1.45 (Node 20) accepts ONE connection per readiness
// event of a listening descriptor, i.e. one per event-loop turn; saturated, a turn serves every ready
// connection (500 x ~0.1 ms), so the k-th connection waiting in the kernel's accept queue waits k turns.

import { spawn } from 'node:child_process';
import net from 'node:net';
import type { Server } from 'node:http';

/** Listen backlog: > the 511 default so a burst larger than that is queued, not dropped (SYN retried at 1 s, 3 s…). */
export const LISTEN_BACKLOG = 4096;
/** Descriptors polled for the listening socket: up to this many accepts per turn. */
export const ACCEPT_COPIES = 16;
/** Work one turn may start before the rest waits for the next turn (and its accepts). */
export const TURN_BUDGET_MS = 1;

// The helper sends back the handle it was given, `copies` times (each send is a new descriptor for the
// same socket in the parent, SCM_RIGHTS), and leaves. It never listens, so it never takes a connection.
const HELPER = `process.on('message', (m, h) => {
  let left = m.copies;
  const next = () => { if (left-- === 0) { h.close(); process.disconnect(); return; } process.send({ copy: true }, h, next); };
  next();
});`;

export interface AcceptCopies {
  /** Resolves with the number of descriptors added once the helper is done (0 if it failed or was closed). */
  ready: Promise<number>;
  /** Stops the copies accepting (and a helper still running); call it when the server stops listening (preClose). */
  close(): void;
}

/**
 * Adds `copies` descriptors for `server`'s listening socket, each polled by the event loop; the connections
 * they accept are emitted on the server's 'connection' event, as Node documents for injecting connections.
 * Node 20 has no dup() and no SO_REUSEPORT (listen({ reusePort }) is 22.12+), hence the short-lived child.
 * Returns at once: start-up must not wait for the helper (a SIGTERM or a client arriving meanwhile would
 * find the process half started); copies join as they arrive, and the server works without them.
 */
export function addAcceptCopies(server: Server, options: { copies: number; backlog: number }, onError: (error: Error) => void): AcceptCopies {
  // The listening TCP handle has no public accessor; cluster uses the same field.
  const handle = (server as unknown as { _handle: object | null })._handle;
  if (handle === null) throw new Error('addAcceptCopies: the server is not listening');
  const env = { ...process.env };
  delete env['NODE_OPTIONS']; // no loader, no --inspect port clash in a child that only echoes a handle
  const child = spawn(process.execPath, ['--eval', HELPER], { stdio: ['ignore', 'ignore', 'inherit', 'ipc'], env });
  const copies: net.Server[] = [];
  let closed = false;
  let settle: (count: number) => void = () => {};
  const ready = new Promise<number>((resolve) => {
    settle = resolve;
  });
  const fail = (error: unknown): void => {
    settle(copies.length);
    if (!closed) onError(new Error('could not add accept descriptors for the listening socket', { cause: error }));
  };
  child.once('error', fail);
  child.on('message', (_message, received) => {
    if (received === undefined) return;
    if (closed) {
      (received as unknown as { close(): void }).close();
      return;
    }
    const copy = net.createServer({ noDelay: true }, (socket) => server.emit('connection', socket));
    // listen() on an already listening socket restates its backlog: restate the real one
    copy.listen(received, options.backlog);
    copies.push(copy);
  });
  child.once('disconnect', () => {
    if (copies.length === options.copies || closed) settle(copies.length);
    else fail(new Error(`received ${copies.length} of ${options.copies} descriptors`));
  });
  child.send({ copies: options.copies }, handle as net.Server, (error) => {
    if (error !== null) fail(error);
  });
  return {
    ready,
    close() {
      closed = true;
      if (child.exitCode === null && child.signalCode === null) child.kill();
      for (const copy of copies) copy.close();
      settle(copies.length);
    },
  };
}

export interface TurnBudget {
  /** Runs `start` now, or in a later turn once this turn has spent `budgetMs`; strictly FIFO. */
  admit(start: () => void): void;
  stats(): { deferred: number; maxQueued: number };
}

/**
 * Slices request work into turns of about `budgetMs`: past it, requests wait in a FIFO that setImmediate
 * drains (check phase) so the poll phase, where connections are accepted and read, comes round again soon.
 */
export function createTurnBudget(budgetMs: number, now: () => number = () => performance.now()): TurnBudget {
  const queue: (() => void)[] = [];
  let head = 0;
  let sliceStart = -1;
  let drainScheduled = false;
  let deferred = 0;
  let maxQueued = 0;

  const scheduleDrain = (): void => {
    if (drainScheduled) return;
    drainScheduled = true;
    setImmediate(drain);
  };

  // What is left of this turn's slice, and at least one request so the queue always moves.
  function drain(): void {
    drainScheduled = false;
    const start = sliceStart < 0 ? now() : sliceStart;
    let ran = 0;
    while (head < queue.length && (ran === 0 || now() - start < budgetMs)) {
      const run = queue[head] as () => void;
      head++;
      ran++;
      run();
    }
    if (head === queue.length) {
      queue.length = 0;
      head = 0;
    } else if (head > 1024) {
      queue.splice(0, head);
      head = 0;
    }
    sliceStart = -1;
    if (head < queue.length) scheduleDrain();
  }

  return {
    admit(start) {
      const t = now();
      if (sliceStart < 0) {
        sliceStart = t;
        scheduleDrain(); // ends this turn's slice even if nothing is queued
      }
      if (head === queue.length && t - sliceStart < budgetMs) {
        start();
        return;
      }
      queue.push(start);
      deferred++;
      maxQueued = Math.max(maxQueued, queue.length - head);
    },
    stats: () => ({ deferred, maxQueued }),
  };
}
