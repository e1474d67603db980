// Tests for the slab window: chunks copied in across slab boundaries, views by position, and a slab's memory going
// back to the pool only when its last holder lets go (never once it escaped), so nothing reads bytes written over.

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { describe, it } from 'node:test';
import { Slab, SLAB_BYTES, SlabPool, SlabWindow } from './slab-window.js';

/** Appends content in chunks of chunkSize, as an upstream body arrives. */
function appendAll(window: SlabWindow, content: Buffer, chunkSize: number): Uint8Array[] {
  const views: Uint8Array[] = [];
  for (let offset = 0; offset < content.length; offset += chunkSize) views.push(...window.append(content.subarray(offset, offset + chunkSize)));
  return views;
}

/** Every byte from..to read back through view(), slab by slab. */
function readBack(window: SlabWindow, from: number, to: number): Buffer {
  const parts: Uint8Array[] = [];
  for (let position = from; position < to; ) {
    const found = window.view(position, to);
    assert.ok(found !== undefined, `position ${position} is held`);
    assert.ok(found.bytes.length > 0);
    parts.push(found.bytes);
    position += found.bytes.length;
  }
  return Buffer.concat(parts);
}

describe('SlabWindow', () => {
  it('copies chunks across slab boundaries and gives every byte back by position, one slab at a time', () => {
    const window = new SlabWindow(undefined, new SlabPool(4));
    const content = randomBytes(SLAB_BYTES * 2 + 12345);
    // An odd chunk size: chunks straddle slabs.
    const views = appendAll(window, content, 65_521);
    assert.ok(Buffer.concat(views).equals(content), 'the views returned are the copy, in order');
    assert.ok(readBack(window, 0, content.length).equals(content));
    assert.ok(readBack(window, 1000, SLAB_BYTES + 5).equals(content.subarray(1000, SLAB_BYTES + 5)));
    const atBoundary = window.view(SLAB_BYTES - 10, SLAB_BYTES + 10);
    assert.equal(atBoundary?.bytes.length, 10, 'a view stops at the end of its slab');
    assert.equal(window.view(content.length, content.length + 1), undefined, 'nothing past what was appended');
    // Not a view into the chunks: the window owns its copy.
    assert.notEqual(views[0]?.buffer, content.buffer);
  });

  it('never shows bytes past what was appended, even in a reused slab', () => {
    const pool = new SlabPool(4);
    const first = new SlabWindow(undefined, pool);
    first.append(Buffer.alloc(SLAB_BYTES, 0xaa));
    first.clear();
    assert.equal(pool.size, 1);
    const second = new SlabWindow(undefined, pool);
    second.append(Buffer.from('abc'));
    assert.equal(pool.size, 0, 'the slab was taken again');
    assert.deepEqual([...(second.view(0, SLAB_BYTES)?.bytes ?? [])], [...Buffer.from('abc')]);
  });

  it('forgets only slabs wholly before the position, keeping at least `keep` bytes after them', () => {
    const pool = new SlabPool(8);
    const window = new SlabWindow(undefined, pool);
    appendAll(window, randomBytes(SLAB_BYTES * 4), 65_536);
    window.forgetBefore(SLAB_BYTES * 2 - 1, 0);
    assert.equal(window.start, SLAB_BYTES, 'the second slab holds a byte not yet before the position');
    window.forgetBefore(SLAB_BYTES * 4, SLAB_BYTES * 2);
    assert.equal(window.start, SLAB_BYTES * 2, 'two slabs kept');
    assert.equal(window.view(SLAB_BYTES, SLAB_BYTES + 1), undefined, 'a forgotten position is not held');
    assert.equal(pool.size, 2, 'the forgotten slabs are free again');
  });

  it('gives a slab back to the pool only when its last holder lets go, and never one that escaped', () => {
    const pool = new SlabPool(8);
    const window = new SlabWindow(undefined, pool);
    appendAll(window, randomBytes(SLAB_BYTES * 3), 65_536);
    const held = window.view(0, 10)?.slab;
    const escaped = window.view(SLAB_BYTES, SLAB_BYTES + 10)?.slab;
    assert.ok(held !== undefined && escaped !== undefined);
    held.hold();
    escaped.escape();
    window.clear();
    assert.equal(pool.size, 1, 'only the slab nobody holds');
    held.release();
    assert.equal(pool.size, 2, 'the held slab, once let go');
  });

  it('makes the last slab of a small blob its size, and keeps such slabs out of the pool', () => {
    const pool = new SlabPool(8);
    const window = new SlabWindow(SLAB_BYTES + 100, pool);
    appendAll(window, randomBytes(SLAB_BYTES + 100), 4096);
    assert.equal(window.heldBytes, SLAB_BYTES + 100);
    window.clear();
    assert.equal(pool.size, 1, 'only the full-size slab');
  });
});

describe('SlabPool', () => {
  it('keeps at most its number of free slabs, and only full-size ones', () => {
    const pool = new SlabPool(2);
    for (let count = 0; count < 4; count++) new Slab(0, Buffer.allocUnsafeSlow(SLAB_BYTES), pool).release();
    new Slab(0, Buffer.allocUnsafeSlow(100), pool).release();
    assert.equal(pool.size, 2);
    assert.equal(pool.take().length, SLAB_BYTES);
    assert.equal(pool.size, 1);
  });
});
