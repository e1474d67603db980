// Tests for FileRangeStream: the same bytes whether read as a stream or piped from its two reused buffers,
// a buffer never refilled before the destination has called back for it, and the file closed on every path.

import { BufferBudget, SMALL_BUFFER_BYTES } from '../memory/buffer-budget.js';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { mkdtemp, open, rm, writeFile } from 'node:fs/promises';
import { createServer, get, type Server } from 'node:http';
import { Socket, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { FILE_CHUNK_BYTES, FileRangeStream } from './file-range-stream.js';

let directory: string;
let file: string;
const content = randomBytes(FILE_CHUNK_BYTES * 3 + 12_345);

before(async () => {
  directory = await mkdtemp(path.join(tmpdir(), 'regmirror-file-range-'));
  file = path.join(directory, 'blob');
  await writeFile(file, content);
});

after(async () => {
  await rm(directory, { recursive: true, force: true });
});

async function streamOf(start?: number, end?: number, budget?: BufferBudget): Promise<FileRangeStream> {
  return new FileRangeStream(await open(file, 'r'), start, end, budget);
}

/** A destination that copies each chunk and calls back only after a delay; it notes whose memory each chunk was. */
function slowDestination(delayMs: number): { destination: Writable; received: () => Buffer; memory: () => { size: number; count: number } } {
  const copies: Buffer[] = [];
  const memory = new Set<ArrayBufferLike>();
  const destination = new Writable({
    highWaterMark: 1,
    write(chunk: Buffer, _encoding, callback) {
      copies.push(Buffer.from(chunk));
      memory.add(chunk.buffer);
      setTimeout(callback, delayMs);
    },
  });
  return { destination, received: () => Buffer.concat(copies), memory: () => ({ size: memory.size, count: copies.length }) };
}

async function listen(handler: Parameters<typeof createServer>[1]): Promise<{ server: Server; url: string }> {
  const server = createServer(handler);
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return { server, url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/` };
}

async function fetchBytes(url: string): Promise<Buffer> {
  const response = await fetch(url);
  return Buffer.from(await response.arrayBuffer());
}

describe('FileRangeStream', () => {
  it('reads the whole file and ranges as a plain stream, a fresh buffer per chunk', async () => {
    const chunks: Buffer[] = [];
    const whole = await streamOf();
    whole.on('data', (chunk: Buffer) => chunks.push(chunk));
    await once(whole, 'close');
    assert.ok(Buffer.concat(chunks).equals(content));
    assert.equal(new Set(chunks.map((chunk) => chunk.buffer)).size, chunks.length, 'no two chunks share memory');
    for (const [start, end] of [
      [0, 0],
      [5, FILE_CHUNK_BYTES + 7],
      [content.length - 10, content.length - 1],
    ] as const) {
      const parts: Buffer[] = [];
      for await (const chunk of await streamOf(start, end)) parts.push(chunk as Buffer);
      assert.ok(Buffer.concat(parts).equals(content.subarray(start, end + 1)), `range ${start}-${end}`);
    }
  });

  it('piped elsewhere (not a response or socket), is a plain stream: fresh buffers, the same bytes', async () => {
    for (const [start, end] of [
      [undefined, undefined],
      [FILE_CHUNK_BYTES - 3, FILE_CHUNK_BYTES * 2 + 3],
    ] as const) {
      const source = await streamOf(start, end);
      const { destination, received, memory } = slowDestination(2);
      const closed = once(source, 'close');
      await pipeline(source, destination);
      await closed;
      assert.ok(received().equals(content.subarray(start ?? 0, end === undefined ? undefined : end + 1)), `range ${start}-${end}`);
      assert.equal(memory().size, memory().count, 'every chunk had memory of its own');
    }
  });

  it('piped as an HTTP response to a slow client, sends every byte: no buffer is refilled before the socket took it', async () => {
    const { server, url } = await listen((request, response) => {
      const [start, end] = (request.url ?? '/').slice(1).split('-').map(Number);
      void streamOf(start, end).then((source) => {
        source.pipe(response);
      });
    });
    try {
      for (const [start, end] of [
        [0, content.length - 1],
        [FILE_CHUNK_BYTES - 3, FILE_CHUNK_BYTES * 2 + 3],
      ] as const) {
        const body = await new Promise<Buffer>((resolve, reject) => {
          get(`${url}${start}-${end}`, (response) => {
            const chunks: Buffer[] = [];
            response.on('data', (chunk: Buffer) => {
              chunks.push(chunk);
              // Read slowly: the server's writes wait on a full socket.
              response.pause();
              setTimeout(() => response.resume(), 1);
            });
            response.on('end', () => resolve(Buffer.concat(chunks)));
            response.on('error', reject);
          }).on('error', reject);
        });
        assert.ok(body.equals(content.subarray(start, end + 1)), `range ${start}-${end}`);
      }
    } finally {
      server.close();
    }
  });

  it('piped past the send budget, sends every byte from small buffers, and gives its reservation back', async () => {
    const budget = new BufferBudget(0);
    const sources: FileRangeStream[] = [];
    const { server, url } = await listen((_request, response) => {
      void streamOf(undefined, undefined, budget).then((source) => {
        sources.push(source);
        response.setHeader('content-length', String(content.length));
        source.pipe(response);
      });
    });
    try {
      const chunks: Buffer[] = [];
      await new Promise<void>((resolve, reject) => {
        get(url, (response) => {
          response.on('data', (chunk: Buffer) => {
            chunks.push(chunk);
            if (budget.used > 0) assert.equal(budget.used, 2 * SMALL_BUFFER_BYTES, 'two small buffers while sending');
          });
          response.on('end', resolve);
          response.on('error', reject);
        }).on('error', reject);
      });
      assert.ok(Buffer.concat(chunks).equals(content));
      await Promise.all(sources.map(async (source) => (source.closed ? undefined : once(source, 'close'))));
      assert.equal(budget.used, 0);
    } finally {
      server.close();
    }
  });

  it('piped as an HTTP response, the client gets every byte and the stream ends, then closes', async () => {
    const sources: FileRangeStream[] = [];
    const { server, url } = await listen((_request, response) => {
      void streamOf().then((source) => {
        sources.push(source);
        response.setHeader('content-length', String(content.length));
        source.pipe(response);
      });
    });
    try {
      const bodies = await Promise.all([fetchBytes(url), fetchBytes(url), fetchBytes(url)]);
      for (const body of bodies) assert.ok(body.equals(content));
      await Promise.all(sources.map(async (source) => (source.closed ? undefined : once(source, 'close'))));
      for (const source of sources) assert.equal(source.readableEnded, true);
    } finally {
      server.close();
    }
  });

  it('stops and closes without an error when the client goes away mid-way', async () => {
    // Larger than any socket buffer, so the client leaves before the end (a sparse file: zeros, no disk).
    const large = path.join(directory, 'large');
    const size = 256 * 1024 * 1024;
    const writer = await open(large, 'w');
    await writer.truncate(size);
    await writer.close();
    let source: FileRangeStream | undefined;
    const { server, url } = await listen((_request, response) => {
      void open(large, 'r').then((handle) => {
        const opened = new FileRangeStream(handle);
        source = opened;
        response.setHeader('content-length', String(size));
        opened.pipe(response);
      });
    });
    try {
      await new Promise<void>((resolve, reject) => {
        get(url, (response) => {
          response.once('data', () => {
            response.destroy();
            resolve();
          });
        }).on('error', reject);
      });
      const deadline = Date.now() + 5_000;
      while (source?.closed !== true) {
        if (Date.now() > deadline) throw new Error('the stream did not close after the client left');
        await sleep(5);
      }
      assert.equal(source.errored, null);
      assert.equal(source.readableEnded, false);
    } finally {
      server.close();
    }
  });

  it('is read once: piping a stream already being read is refused', async () => {
    const source = await streamOf();
    source.on('data', () => undefined);
    const socket = new Socket();
    assert.throws(() => source.pipe(socket), /read once/);
    socket.destroy();
    source.destroy();
    await once(source, 'close');
  });
});
