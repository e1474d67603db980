// Tests for what `regmirror prefetch` shows: the terminal frame, the per-blob and per-image lines, the writer.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { Digest } from '../oci/digest.js';
import {
  blobLine,
  formatDuration,
  imageLine,
  overallLine,
  renderFrame,
  shortDigest,
  TerminalFrame,
  type BlobProgress,
  type ProgressState,
} from './prefetch-progress.js';

const MiB = 1024 * 1024;
const digest = (n: number): Digest => `sha256:${String(n % 10).repeat(64)}`;

function blob(n: number, fields: Partial<BlobProgress>): BlobProgress {
  return { digest: digest(n), role: 'layer', size: MiB, received: 0, phase: 'waiting', startedAt: undefined, endedAt: undefined, ...fields };
}

const START = 1_000_000;

describe('renderFrame', () => {
  const state: ProgressState = {
    startedAt: START,
    resolving: 0,
    blobs: [
      blob(1, { role: 'config', size: 1500, received: 1500, phase: 'done', startedAt: START, endedAt: START + 100 }),
      blob(2, { size: 4 * MiB, received: MiB, phase: 'active', startedAt: START }),
      blob(3, { size: 3 * MiB, phase: 'waiting' }),
    ],
  };

  it('draws a line per blob and a total with bytes, rate and ETA', () => {
    const lines = renderFrame(state, START + 2000, { columns: 100, rows: 30 });
    assert.deepEqual(lines, [
      'sha256:111111111111 config done  1.5 KiB',
      `sha256:222222222222 layer  [${'#'.repeat(10)}${'.'.repeat(30)}] 1.0 MiB / 4.0 MiB`,
      'sha256:333333333333 layer  waiting',
      // 1 MiB + 1500 bytes in 2 s; 7 MiB - 1 MiB left at that rate: about 12 s.
      `total [${'#'.repeat(5)}${'.'.repeat(34)}] 1.0 MiB / 7.0 MiB  512.7 KiB/s  ETA 12 s  1/3 blobs`,
    ]);
  });

  it('says which images are still being resolved, and has no ETA before a byte arrived', () => {
    const lines = renderFrame({ startedAt: START, resolving: 2, blobs: [] }, START, { columns: 120, rows: 30 });
    assert.equal(lines.length, 1);
    assert.match(lines[0] ?? '', /0 bytes \/ 0 bytes {2}0 bytes\/s {2}ETA -- {2}0\/0 blobs, resolving 2 images$/);
  });

  it('never draws a line as wide as the terminal (it would wrap and break the redraw)', () => {
    for (const columns of [20, 40, 80]) {
      for (const line of renderFrame({ ...state, resolving: 3 }, START + 2000, { columns, rows: 30 })) assert.ok(line.length < columns, `${line.length} < ${columns}: ${line}`);
    }
  });

  it('folds finished blobs into one line, then waiting ones, to fit the terminal', () => {
    const many: ProgressState = {
      startedAt: START,
      resolving: 0,
      blobs: [
        ...[1, 2, 3, 4].map((n) => blob(n, { phase: 'done', received: MiB })),
        blob(5, { phase: 'active', received: 10 }),
        ...[6, 7, 8, 9].map((n) => blob(n, {})),
      ],
    };
    const roomy = renderFrame(many, START + 1000, { columns: 100, rows: 11 });
    assert.equal(roomy.length, 10, 'everything fits: nine blobs and the total');
    const folded = renderFrame(many, START + 1000, { columns: 100, rows: 9 });
    assert.equal(folded.length, 7);
    assert.equal(folded[0], '… 4 blobs done');
    assert.match(folded[1] ?? '', /^sha256:555555555555 layer {2}\[/);
    assert.deepEqual(folded.slice(2, 6), [6, 7, 8, 9].map((n) => `sha256:${String(n).repeat(12)} layer  waiting`));
    const tight = renderFrame(many, START + 1000, { columns: 100, rows: 6 });
    assert.equal(tight.length, 5);
    assert.deepEqual(tight.slice(0, 4).map((line) => line.slice(0, 20)), ['… 4 blobs done', 'sha256:555555555555 ', 'sha256:666666666666 ', '… 3 more']);
    assert.match(tight[4] ?? '', /^total /);
  });
});

describe('lines for output that is not a terminal', () => {
  it('a finished blob: role, short digest, size, time', () => {
    assert.equal(blobLine(blob(4, { phase: 'done', received: 3 * MiB, startedAt: START, endedAt: START + 1234 })), 'layer  sha256:444444444444 3.0 MiB in 1.2 s');
    assert.equal(blobLine(blob(5, { role: 'config', phase: 'done', received: 700, startedAt: START, endedAt: START + 5 })), 'config sha256:555555555555 700 bytes in 0.0 s');
    assert.equal(blobLine(blob(6, { phase: 'failed', received: 100, startedAt: START, endedAt: START + 50 })), 'layer  sha256:666666666666 failed after 100 bytes in 0.1 s');
  });

  it('an image pulled or failed', () => {
    const pulled = { reference: 'docker.io/team/app:v1', digest: digest(7), manifests: 1, blobs: 4, bytes: 2 * MiB, elapsedMs: 1500, errors: [] };
    assert.equal(imageLine(pulled), 'pulled docker.io/team/app:v1 (sha256:777777777777, 1 manifest, 4 blobs, 2.0 MiB) in 1.5 s');
    const failed = { ...pulled, reference: 'team/app:nope', digest: undefined, manifests: 0, blobs: 0, bytes: 0, errors: ['manifest nope: HTTP 404'] };
    assert.equal(imageLine(failed), 'FAILED team/app:nope (0 manifests, 0 blobs, 0 bytes) in 1.5 s');
  });

  it('the summary: images pulled and failed, blobs fetched once each, rate', () => {
    const outcome = { reference: 'a:1', digest: undefined, manifests: 1, blobs: 1, bytes: 0, elapsedMs: 1, errors: [] };
    const blobs = [blob(1, { phase: 'done', received: 2 * MiB }), blob(2, { phase: 'failed', received: MiB })];
    assert.equal(overallLine([outcome, outcome], blobs, 2000), 'prefetch: 2 of 2 images pulled; 1 blob, 2.0 MiB in 2.0 s (1.0 MiB/s)');
    assert.equal(overallLine([outcome, { ...outcome, errors: ['x'] }], blobs, 0), 'prefetch: 1 of 2 images pulled, 1 failed; 1 blob, 2.0 MiB in 0.0 s (--)');
  });
});

describe('formatting', () => {
  it('short digests and durations', () => {
    assert.equal(shortDigest(`sha256:${'0123456789abcdef'.repeat(4)}`), 'sha256:0123456789ab');
    const cases: [number, string][] = [
      [0, '0.0 s'],
      [420, '0.4 s'],
      [9_949, '9.9 s'],
      [12_400, '12 s'],
      [185_000, '3 min 05 s'],
      [7_260_000, '2 h 01 min'],
      [-1, '--'],
      [Infinity, '--'],
    ];
    for (const [ms, text] of cases) assert.equal(formatDuration(ms), text, `${ms} ms`);
  });
});

describe('TerminalFrame', () => {
  it('redraws in place, and prints lines above the frame', () => {
    const written: string[] = [];
    let frame = ['a', 'b'];
    const terminal = { columns: 80, rows: 24, write: (text: string) => written.push(text) };
    const display = new TerminalFrame(terminal, () => frame);
    display.start();
    frame = ['a2', 'b2', 'c2'];
    display.above(() => written.push('pulled x\n'));
    display.stop();
    display.stop();
    assert.deepEqual(written, [
      '\x1b[2Ka\n\x1b[2Kb\n\x1b[J',
      // Up two lines and clear, the line above, then the frame again below it.
      '\x1b[2F\x1b[J',
      'pulled x\n',
      '\x1b[2Ka2\n\x1b[2Kb2\n\x1b[2Kc2\n\x1b[J',
      '\x1b[3F\x1b[2Ka2\n\x1b[2Kb2\n\x1b[2Kc2\n\x1b[J',
    ]);
  });
});
