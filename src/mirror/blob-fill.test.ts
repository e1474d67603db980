// Tests for BlobFill: one source streamed into a real spool file and followed by several readers,
// the last byte held back until the digest is verified, and every failure cutting readers still reading.

import { BufferBudget, SMALL_BUFFER_BYTES, unlimitedBudget } from '../memory/buffer-budget.js';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { access, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { PassThrough, Writable, type Readable } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { digestOf, type Digest } from '../oci/digest.js';
import { FsObjectStore } from '../store/fs-store.js';
import type { SpooledWriter } from '../store/spooled-writer.js';
import { BlobFill, digestCheck, FillError, MAX_UNWRITTEN_BYTES, MEMORY_WINDOW_BYTES, type FillState } from './blob-fill.js';
import { SLAB_BYTES, SlabPool } from './slab-window.js';

let directory: string;
let spoolCount = 0;

before(async () => {
  directory = await mkdtemp(path.join(tmpdir(), 'regmirror-fill-'));
});

after(async () => {
  await rm(directory, { recursive: true, force: true });
});

/** Everything a test needs to drive one fill and watch its hooks. */
interface Harness {
  fill: BlobFill;
  source: PassThrough;
  spool: SpooledWriter;
  commits: { digest: Digest; size: number; bytes: Buffer }[];
  settled: { state: FillState; error: Error | undefined }[];
  bytesCounted: () => number;
  /** Lets a commit held by `holdCommit` proceed. */
  releaseCommit: () => void;
}

interface HarnessOptions {
  digest: Digest;
  size: number | undefined;
  timeoutMs?: number;
  holdCommit?: boolean;
  commitError?: Error;
  budget?: BufferBudget;
  slabs?: SlabPool;
  discardSpool?: boolean;
}

async function startFill(options: HarnessOptions): Promise<Harness> {
  const store = new FsObjectStore(path.join(directory, `store-${++spoolCount}`));
  await store.init();
  const spool = await store.createWriter();
  const source = new PassThrough();
  const commits: Harness['commits'] = [];
  const settled: Harness['settled'] = [];
  let counted = 0;
  let releaseCommit = (): void => undefined;
  const commitGate = options.holdCommit
    ? new Promise<void>((resolve) => {
        releaseCommit = resolve;
      })
    : Promise.resolve();
  const fill = new BlobFill(
    digestCheck(options.digest),
    spool,
    { body: source, size: options.size },
    {
      commit: async (file, size) => {
        commits.push({ digest: options.digest, size, bytes: await file.readAt(0, size) });
        await commitGate;
        if (options.commitError) throw options.commitError;
      },
      onBytes: (count) => {
        counted += count;
      },
      onSettled: (state, error) => {
        settled.push({ state, error });
      },
      ...(options.discardSpool === true ? { discardSpool: true } : {}),
    },
    { timeoutMs: options.timeoutMs ?? 30_000, budget: options.budget ?? unlimitedBudget(), slabs: options.slabs },
  );
  return { fill, source, spool, commits, settled, bytesCounted: () => counted, releaseCommit: () => releaseCommit() };
}

/** Watches a reader: what it received, whether it ended or failed; `result` settles with the bytes or the error. */
function watch(reader: Readable): { received: () => number; ended: () => boolean; result: Promise<Buffer> } {
  const chunks: Buffer[] = [];
  let received = 0;
  let ended = false;
  const result = new Promise<Buffer>((resolve, reject) => {
    reader.on('data', (chunk: Buffer) => {
      chunks.push(chunk);
      received += chunk.length;
    });
    reader.on('end', () => {
      ended = true;
      resolve(Buffer.concat(chunks));
    });
    reader.on('error', reject);
    reader.on('close', () => {
      if (!ended) reject(new Error('reader closed before its end'));
    });
  });
  // Marked handled here: a test may check several readers in turn, after more than one has failed.
  result.catch(() => undefined);
  return { received: () => received, ended: () => ended, result };
}

async function until(condition: () => boolean, what: string, timeoutMs = 5_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(2);
  }
}

/** Writes bytes into the source in chunks, as a socket would deliver them. */
function feed(source: PassThrough, bytes: Buffer, chunkSize = 64 * 1024): void {
  for (let offset = 0; offset < bytes.length; offset += chunkSize) source.write(bytes.subarray(offset, offset + chunkSize));
}

/** Writes bytes in chunks, each once the one before was taken: the pace of a socket. Ends early if the source is destroyed. */
async function feedPaced(source: PassThrough, bytes: Buffer, chunkSize = 64 * 1024): Promise<void> {
  const closed = new Promise<void>((resolve) => source.once('close', resolve));
  for (let offset = 0; offset < bytes.length && !source.destroyed; offset += chunkSize) {
    if (!source.write(bytes.subarray(offset, offset + chunkSize))) await Promise.race([once(source, 'drain'), closed]);
  }
}

/**
 * A destination as a response is one: it takes each write and calls back once the bytes are gone. Held, it keeps
 * the writes it was given as they are (views, not copies) and reads them only when let go, as a slow socket would.
 */
class Destination extends Writable {
  readonly received: Buffer[] = [];
  private pending: Array<{ chunk: Buffer; callback: () => void }> = [];
  private holding = false;

  constructor() {
    super({ highWaterMark: 64 * 1024 });
  }

  hold(): void {
    this.holding = true;
  }

  /** Reads what it held, calls back, and takes every later write at once. */
  letGo(): void {
    this.holding = false;
    const pending = this.pending;
    this.pending = [];
    for (const { chunk, callback } of pending) {
      this.received.push(Buffer.from(chunk));
      callback();
    }
  }

  /** The writes held so far, as given. */
  get held(): readonly Buffer[] {
    return this.pending.map((entry) => entry.chunk);
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: () => void): void {
    if (this.holding) {
      this.pending.push({ chunk, callback });
      return;
    }
    this.received.push(Buffer.from(chunk));
    callback();
  }
}

async function exists(file: string): Promise<boolean> {
  try {
    await access(file);
    return true;
  } catch {
    return false;
  }
}

describe('BlobFill', () => {
  it('gives every reader the full bytes, including one that joins after half has landed', async () => {
    const content = randomBytes(2.5 * 1024 * 1024);
    const harness = await startFill({ digest: digestOf(content), size: content.length });
    const early = [watch(harness.fill.createReader()), watch(harness.fill.createReader())];
    const half = Math.floor(content.length / 2);
    feed(harness.source, content.subarray(0, half));
    await until(() => harness.spool.size >= half, 'half the content in the spool');
    const late = watch(harness.fill.createReader());
    feed(harness.source, content.subarray(half));
    harness.source.end();
    assert.equal(await harness.fill.done, 'committed');
    for (const reader of [...early, late]) assert.ok((await reader.result).equals(content));
    assert.equal(harness.commits.length, 1);
    assert.equal(harness.commits[0]?.digest, digestOf(content));
    assert.equal(harness.commits[0]?.size, content.length);
    assert.ok(harness.commits[0]?.bytes.equals(content));
    assert.deepEqual(harness.settled, [{ state: 'committed', error: undefined }]);
    assert.equal(harness.bytesCounted(), content.length);
    assert.equal(harness.fill.status, 'committed');
    assert.equal(harness.fill.size, content.length);
    assert.equal(harness.fill.error, undefined);
  });

  it('hands readers that keep up the same chunks in memory, not a copy each', async () => {
    const content = randomBytes(1024 * 1024);
    const harness = await startFill({ digest: digestOf(content), size: content.length });
    // 'data' hands over each chunk as pushed (an async iterator would join what is buffered into a copy).
    const memoryOf = async (reader: Readable): Promise<{ bytes: Buffer; memory: Set<ArrayBufferLike> }> => {
      const chunks: Buffer[] = [];
      reader.on('data', (chunk: Buffer) => chunks.push(chunk));
      await once(reader, 'end');
      return { bytes: Buffer.concat(chunks), memory: new Set(chunks.map((chunk) => chunk.buffer)) };
    };
    const readers = [memoryOf(harness.fill.createReader()), memoryOf(harness.fill.createReader())];
    feed(harness.source, content);
    harness.source.end();
    const [first, second] = await Promise.all(readers);
    assert.ok(first !== undefined && second !== undefined);
    assert.ok(first.bytes.equals(content) && second.bytes.equals(content));
    assert.deepEqual(second.memory, first.memory, 'both readers were given views of the same buffers');
  });

  it('gives a reader that joins further behind than the memory window the early bytes from the spool', async () => {
    const content = randomBytes(MEMORY_WINDOW_BYTES * 3);
    const harness = await startFill({ digest: digestOf(content), size: content.length });
    const early = watch(harness.fill.createReader());
    const twoThirds = MEMORY_WINDOW_BYTES * 2;
    feed(harness.source, content.subarray(0, twoThirds));
    await until(() => harness.spool.size >= twoThirds, 'two thirds in the spool');
    // Counted where the reader reads the spool (not the harness's commit hook, which reads it whole).
    let spoolBytes = 0;
    const readAt = harness.spool.readAt.bind(harness.spool);
    harness.spool.readAt = async (position, length) => {
      const bytes = await readAt(position, length);
      if (length < content.length) spoolBytes += bytes.length;
      return bytes;
    };
    const lateResult = watch(harness.fill.createReader());
    feed(harness.source, content.subarray(twoThirds));
    harness.source.end();
    assert.equal(await harness.fill.done, 'committed');
    assert.ok((await early.result).equals(content));
    assert.ok((await lateResult.result).equals(content));
    assert.ok(spoolBytes >= twoThirds - MEMORY_WINDOW_BYTES, `only ${spoolBytes} bytes came from the spool`);
  });

  it('within the send budget, keeps its window for readers; past it, small reader queues and no window: same bytes', async () => {
    const content = randomBytes(MEMORY_WINDOW_BYTES * 2 + 12345);
    for (const limit of [Number.MAX_SAFE_INTEGER, 0]) {
      const budget = new BufferBudget(limit);
      const harness = await startFill({ digest: digestOf(content), size: content.length, budget });
      const stalled = harness.fill.createReader();
      const reading = watch(harness.fill.createReader());
      // Each reader's queue, the window (within the budget), and what the fill may hold unwritten: 2 MiB, or one slab.
      assert.equal(budget.used, limit === 0 ? 2 * SMALL_BUFFER_BYTES + SLAB_BYTES : MEMORY_WINDOW_BYTES + 2 * 1024 * 1024 + MAX_UNWRITTEN_BYTES, `reserved at limit ${limit}`);
      assert.equal(stalled.readableHighWaterMark, limit === 0 ? SMALL_BUFFER_BYTES : 1024 * 1024);
      await feedPaced(harness.source, content);
      harness.source.end();
      assert.equal(await harness.fill.done, 'committed');
      assert.ok((await reading.result).equals(content), `the reader that kept up got every byte (limit ${limit})`);
      // The reader that never read resumes from the spool, whatever its window was.
      assert.ok((await watch(stalled).result).equals(content), `the stalled reader, resumed, got every byte (limit ${limit})`);
      await until(() => budget.used === 0, 'every reservation given back');
    }
  });

  it('refuses a new reader once it has committed with none left (its spool is closed)', async () => {
    const content = randomBytes(1000);
    const harness = await startFill({ digest: digestOf(content), size: content.length });
    harness.source.end(content);
    assert.equal(await harness.fill.done, 'committed');
    assert.throws(() => harness.fill.createReader(), /closed its spool/);
  });

  it('discards a spool it never commits (a relay of another node\'s fill) once its last reader is done', async () => {
    const content = randomBytes(300_000);
    const harness = await startFill({ digest: digestOf(content), size: content.length, discardSpool: true });
    const reader = watch(harness.fill.createReader());
    harness.source.end(content);
    assert.equal(await harness.fill.done, 'committed');
    assert.ok((await reader.result).equals(content), 'the reader has every byte');
    // The spool goes once the reader has let go of it (when its stream ends, right after its last bytes).
    for (let look = 0; look < 100 && (await exists(harness.spool.path)); look++) await new Promise((resolve) => setTimeout(resolve, 20));
    assert.equal(await exists(harness.spool.path), false, 'the spool file is removed');
    assert.throws(() => harness.fill.createReader(), /closed its spool/);
  });

  it('holds back the newest byte while the source is still sending', async () => {
    const content = randomBytes(1000);
    const harness = await startFill({ digest: digestOf(content), size: content.length });
    const reader = watch(harness.fill.createReader());
    harness.source.write(content.subarray(0, 600));
    await until(() => reader.received() === 599, '599 bytes at the reader');
    await sleep(30);
    assert.equal(reader.received(), 599);
    harness.source.end(content.subarray(600));
    assert.ok((await reader.result).equals(content));
    assert.equal(await harness.fill.done, 'committed');
  });

  it('holds back the last bytes until the content is verified, then gives them without waiting for the commit', async () => {
    const content = randomBytes(300 * 1024);
    const harness = await startFill({ digest: digestOf(content), size: content.length, holdCommit: true });
    const whole = watch(harness.fill.createReader());
    const ranged = watch(harness.fill.createReader(100, 199));
    feed(harness.source, content);
    // Every byte has arrived, but not the end of the body: nothing is verified, so each reader's last byte waits.
    await until(() => whole.received() === content.length - 1, 'all but one byte at the reader');
    await until(() => ranged.received() === 99, 'all but one byte of the range');
    await sleep(50);
    assert.equal(whole.received(), content.length - 1);
    assert.equal(whole.ended(), false);
    assert.equal(ranged.received(), 99);
    assert.equal(ranged.ended(), false);
    harness.source.end();
    // Verified: the readers end while the commit (a disk sync, a rename, a record) is still held.
    assert.ok((await whole.result).equals(content));
    assert.ok((await ranged.result).equals(content.subarray(100, 200)));
    await until(() => harness.commits.length === 1, 'the commit hook');
    assert.equal(harness.fill.status, 'filling');
    harness.releaseCommit();
    assert.equal(await harness.fill.done, 'committed');
  });

  it('serves ranges (start, end) and (start, to the end)', async () => {
    const content = randomBytes(100);
    const harness = await startFill({ digest: digestOf(content), size: content.length });
    const middle = watch(harness.fill.createReader(10, 19));
    const first = watch(harness.fill.createReader(0, 0));
    const tail = watch(harness.fill.createReader(90));
    const last = watch(harness.fill.createReader(99, 99));
    harness.source.write(content.subarray(0, 50));
    // A range that lies wholly in what has landed still waits for the verdict on its last byte.
    await until(() => middle.received() === 9, 'nine bytes of the range');
    await sleep(20);
    assert.equal(middle.ended(), false);
    assert.equal(first.received(), 0);
    harness.source.end(content.subarray(50));
    assert.ok((await middle.result).equals(content.subarray(10, 20)));
    assert.ok((await first.result).equals(content.subarray(0, 1)));
    assert.ok((await tail.result).equals(content.subarray(90)));
    assert.ok((await last.result).equals(content.subarray(99)));
    assert.equal(await harness.fill.done, 'committed');
  });

  it('commits content of unannounced size once the digest matches', async () => {
    const content = randomBytes(5000);
    const harness = await startFill({ digest: digestOf(content), size: undefined });
    assert.equal(harness.fill.size, undefined);
    const reader = watch(harness.fill.createReader());
    feed(harness.source, content, 1000);
    harness.source.end();
    assert.ok((await reader.result).equals(content));
    assert.equal(await harness.fill.done, 'committed');
    assert.equal(harness.fill.size, 5000);
  });

  it('commits an empty blob and ends its readers with no bytes', async () => {
    const content = Buffer.alloc(0);
    const harness = await startFill({ digest: digestOf(content), size: 0 });
    const reader = watch(harness.fill.createReader());
    harness.source.end();
    assert.equal((await reader.result).length, 0);
    assert.equal(await harness.fill.done, 'committed');
  });

  /** Runs a fill that fails, and checks what every failure must do. */
  async function assertFailure(harness: Harness, readers: ReturnType<typeof watch>[], message: RegExp): Promise<void> {
    assert.equal(await harness.fill.done, 'failed');
    for (const reader of readers) await assert.rejects(reader.result);
    assert.equal(harness.fill.status, 'failed');
    assert.match(harness.fill.error?.message ?? '', message);
    assert.equal(harness.settled.length, 1);
    assert.equal(harness.settled[0]?.state, 'failed');
    assert.equal(harness.settled[0]?.error, harness.fill.error);
    assert.equal(await exists(harness.spool.path), false, 'the spool file is removed');
    assert.equal(harness.source.destroyed, true, 'the source is destroyed');
    // A reader that arrives after the failure fails at once.
    await assert.rejects(watch(harness.fill.createReader()).result);
  }

  it('fails every reader when the source ends early, and never commits', async () => {
    const content = randomBytes(200_000);
    const harness = await startFill({ digest: digestOf(content), size: content.length });
    const readers = [watch(harness.fill.createReader()), watch(harness.fill.createReader(0, 99)), watch(harness.fill.createReader(150_000))];
    harness.source.write(content.subarray(0, 120_000));
    await until(() => harness.spool.size === 120_000, 'the partial content in the spool');
    readers.push(watch(harness.fill.createReader()));
    harness.source.end();
    await assertFailure(harness, readers, /sent 120000 of 200000 bytes/);
    assert.equal(harness.commits.length, 0);
    for (const reader of readers) assert.ok(reader.received() < content.length);
  });

  it('fails when the source sends more than it announced', async () => {
    const content = randomBytes(1000);
    const harness = await startFill({ digest: digestOf(content), size: 999 });
    const reader = watch(harness.fill.createReader());
    harness.source.end(content);
    await assertFailure(harness, [reader], /more than the 999 bytes/);
    assert.equal(harness.commits.length, 0);
  });

  it('fails every reader when the content has another digest', async () => {
    const content = randomBytes(70_000);
    const expected = digestOf(randomBytes(70_000));
    const harness = await startFill({ digest: expected, size: content.length });
    const readers = [watch(harness.fill.createReader()), watch(harness.fill.createReader(0, 69_999))];
    harness.source.end(content);
    await assertFailure(harness, readers, new RegExp(`digest ${digestOf(content)}, not ${expected}`));
    assert.equal(harness.commits.length, 0);
    for (const reader of readers) assert.ok(reader.received() < 70_000, 'no reader got every byte');
  });

  it('fails every reader when the source errors', async () => {
    const content = randomBytes(10_000);
    const harness = await startFill({ digest: digestOf(content), size: content.length });
    const reader = watch(harness.fill.createReader());
    harness.source.write(content.subarray(0, 5000));
    await until(() => reader.received() === 4999, 'the first bytes at the reader');
    harness.source.destroy(new Error('connection reset'));
    await assertFailure(harness, [reader], /connection reset/);
    assert.equal(harness.commits.length, 0);
  });

  it('fails when the fill outlives its timeout', async () => {
    const content = randomBytes(1000);
    const harness = await startFill({ digest: digestOf(content), size: content.length, timeoutMs: 50 });
    const reader = watch(harness.fill.createReader());
    harness.source.write(content.subarray(0, 10));
    await assertFailure(harness, [reader], /did not finish within 50 ms/);
    assert.ok(harness.fill.error instanceof FillError);
    assert.equal(harness.commits.length, 0);
  });

  it('fails when the commit hook throws: nothing is kept, a reader still reading is cut, one that had every verified byte keeps it', async () => {
    const content = randomBytes(300 * 1024);
    const harness = await startFill({ digest: digestOf(content), size: content.length, holdCommit: true, commitError: new Error('disk full') });
    const finished = watch(harness.fill.createReader());
    const stalled = harness.fill.createReader();
    feed(harness.source, content);
    harness.source.end();
    assert.ok((await finished.result).equals(content));
    harness.releaseCommit();
    assert.equal(await harness.fill.done, 'failed');
    const resumed = watch(stalled);
    await assert.rejects(resumed.result);
    assert.ok(resumed.received() < content.length);
    assert.match(harness.fill.error?.message ?? '', /disk full/);
    assert.deepEqual(harness.settled, [{ state: 'failed', error: harness.fill.error }]);
    assert.equal(await exists(harness.spool.path), false, 'the spool file is removed');
    await assert.rejects(watch(harness.fill.createReader()).result);
  });

  it('fails every reader when writing the spool fails, and stops reading the source', async () => {
    const content = randomBytes(8 * 1024 * 1024);
    const harness = await startFill({ digest: digestOf(content), size: content.length });
    const append = harness.spool.appendAll.bind(harness.spool);
    let writes = 0;
    harness.spool.appendAll = async (chunks) => {
      if (++writes > 1) throw new Error('ENOSPC: no space left on device');
      await append(chunks);
    };
    const reader = watch(harness.fill.createReader());
    const feeding = feedPaced(harness.source, content);
    await assertFailure(harness, [reader], /ENOSPC/);
    await feeding;
    assert.ok(harness.bytesCounted() < content.length, 'the fill stopped reading');
    assert.ok(reader.received() < content.length);
  });

  it('stops reading the source while the disk is behind, then catches up', async () => {
    const content = randomBytes(8 * 1024 * 1024);
    const harness = await startFill({ digest: digestOf(content), size: content.length });
    const append = harness.spool.appendAll.bind(harness.spool);
    let openGate = (): void => undefined;
    const gate = new Promise<void>((resolve) => {
      openGate = resolve;
    });
    harness.spool.appendAll = async (chunks) => {
      await gate;
      await append(chunks);
    };
    const reader = watch(harness.fill.createReader());
    const feeding = feedPaced(harness.source, content).then(() => harness.source.end());
    await until(() => harness.bytesCounted() >= MAX_UNWRITTEN_BYTES, 'the fill to take its fill of bytes ahead of the disk');
    await sleep(50);
    // At most MAX_UNWRITTEN_BYTES wait for the disk, plus the chunk that crossed the line and the one being written.
    assert.ok(harness.bytesCounted() <= MAX_UNWRITTEN_BYTES + 2 * 64 * 1024, `the fill took ${harness.bytesCounted()} bytes ahead of the disk`);
    // Readers are not held by the disk: they have what arrived, from memory, but the newest byte.
    assert.equal(reader.received(), harness.bytesCounted() - 1);
    openGate();
    await feeding;
    assert.equal(await harness.fill.done, 'committed');
    assert.ok((await reader.result).equals(content));
  });

  it('fails when aborted, committing nothing', async () => {
    const content = randomBytes(1000);
    const harness = await startFill({ digest: digestOf(content), size: content.length });
    const reader = watch(harness.fill.createReader());
    harness.source.write(content.subarray(0, 500));
    harness.fill.abort(new Error('shutting down'));
    await assertFailure(harness, [reader], /shutting down/);
    assert.equal(harness.commits.length, 0);
  });

  it('piped whole to a destination, writes to it directly: every byte, both ends, and every slab back in the pool', async () => {
    const slabs = new SlabPool(64);
    const content = randomBytes(SLAB_BYTES * 6 + 777);
    const harness = await startFill({ digest: digestOf(content), size: content.length, slabs });
    const destination = new Destination();
    const reader = harness.fill.createReader();
    const ended = once(reader, 'end');
    reader.pipe(destination);
    // Listened to after the pipe: nothing may come through the stream itself.
    let streamed = 0;
    reader.on('data', (chunk: Buffer) => (streamed += chunk.length));
    await feedPaced(harness.source, content);
    harness.source.end();
    await once(destination, 'finish');
    await ended;
    assert.equal(streamed, 0);
    assert.ok(Buffer.concat(destination.received).equals(content));
    assert.equal(await harness.fill.done, 'committed');
    // The six full slabs (the last, smaller one is not pooled), once nothing holds them.
    await until(() => slabs.size === 6, 'every full slab back in the pool');
  });

  it('does not slow the fill for a destination that stops taking bytes, nor reuse the slab it still holds', async () => {
    // Few slabs in the pool: the fill reuses them while the destination holds its first write.
    const slabs = new SlabPool(4);
    const content = randomBytes(MEMORY_WINDOW_BYTES * 3);
    const harness = await startFill({ digest: digestOf(content), size: content.length, slabs });
    const destination = new Destination();
    destination.hold();
    const reader = harness.fill.createReader();
    reader.pipe(destination);
    await feedPaced(harness.source, content);
    harness.source.end();
    assert.equal(await harness.fill.done, 'committed', 'the fill ended while the destination took nothing');
    assert.equal(destination.held.length, 1, 'one write waits, the reader waits for it to drain');
    assert.equal(destination.held[0]?.buffer.byteLength, SLAB_BYTES, 'a view of a slab, not a copy');
    destination.letGo();
    await once(destination, 'finish');
    assert.ok(Buffer.concat(destination.received).equals(content), 'the held view still had its bytes');
  });

  it('past the send budget, writes copies as small as its queue, holding no slab', async () => {
    const content = randomBytes(SLAB_BYTES * 2);
    const harness = await startFill({ digest: digestOf(content), size: content.length, budget: new BufferBudget(0) });
    const destination = new Destination();
    destination.hold();
    harness.fill.createReader().pipe(destination);
    await feedPaced(harness.source, content);
    harness.source.end();
    assert.equal(await harness.fill.done, 'committed');
    await until(() => destination.held.length === 1, 'the first write');
    assert.ok((destination.held[0]?.buffer.byteLength ?? Infinity) <= SMALL_BUFFER_BYTES, 'its own copy');
    destination.letGo();
    await once(destination, 'finish');
    assert.ok(Buffer.concat(destination.received).equals(content));
  });

  it('piped to a destination, fails with the fill: the reader is destroyed, the destination is not ended', async () => {
    const content = randomBytes(300_000);
    const harness = await startFill({ digest: digestOf(randomBytes(10)), size: content.length });
    const destination = new Destination();
    const reader = harness.fill.createReader();
    reader.pipe(destination);
    const failed = once(reader, 'error');
    harness.source.end(content);
    const [error] = (await failed) as [Error];
    assert.ok(error instanceof FillError);
    assert.equal(await harness.fill.done, 'failed');
    assert.equal(destination.writableEnded, false, 'the HTTP layer cuts the connection; nothing ends the body');
    assert.ok(Buffer.concat(destination.received).length < content.length);
  });

  it('carries on when readers are destroyed early', async () => {
    const content = randomBytes(3 * 1024 * 1024);
    const harness = await startFill({ digest: digestOf(content), size: content.length });
    const quitter = harness.fill.createReader();
    const quitterClosed = new Promise<void>((resolve) => quitter.once('close', resolve));
    quitter.once('data', () => quitter.destroy());
    const idle = harness.fill.createReader(); // never read, destroyed while waiting for bytes
    const stayer = watch(harness.fill.createReader());
    feed(harness.source, content.subarray(0, 1024 * 1024));
    await quitterClosed;
    idle.destroy();
    feed(harness.source, content.subarray(1024 * 1024));
    harness.source.end();
    assert.equal(await harness.fill.done, 'committed');
    assert.ok((await stayer.result).equals(content));
    assert.equal(harness.commits.length, 1);
  });

  it('carries on when every reader leaves', async () => {
    const content = randomBytes(100_000);
    const harness = await startFill({ digest: digestOf(content), size: content.length });
    const reader = harness.fill.createReader();
    const closed = new Promise<void>((resolve) => reader.once('close', resolve));
    harness.source.write(content.subarray(0, 50_000));
    reader.once('data', () => reader.destroy());
    await closed;
    harness.source.end(content.subarray(50_000));
    assert.equal(await harness.fill.done, 'committed');
    assert.equal(harness.commits.length, 1);
    assert.ok(harness.commits[0]?.bytes.equals(content));
  });
});
