// What `regmirror prefetch` shows: pure functions from its state to lines (a frame of bars for a terminal, one line
// per finished blob and per image otherwise), and the small writer that redraws a frame in place.

import { formatSize } from '../config/size.js';
import { digestHex, type Digest } from '../oci/digest.js';

export type BlobPhase = 'waiting' | 'active' | 'done' | 'failed';

export interface BlobProgress {
  digest: Digest;
  role: 'config' | 'layer';
  /** As the manifest declares it; undefined when it declares none. */
  size: number | undefined;
  received: number;
  phase: BlobPhase;
  startedAt: number | undefined;
  endedAt: number | undefined;
}

export interface ProgressState {
  startedAt: number;
  /** Every blob asked for, each once, in the order first asked. */
  blobs: readonly BlobProgress[];
  /** Images whose manifests are still being read (their blobs are not all known yet). */
  resolving: number;
}

export interface ImageOutcome {
  /** As the user wrote it. */
  reference: string;
  /** The manifest or index the reference resolved to, once known. */
  digest: Digest | undefined;
  manifests: number;
  blobs: number;
  bytes: number;
  elapsedMs: number;
  /** Why it failed; empty when it was pulled. */
  errors: string[];
}

export interface FrameSize {
  columns: number;
  rows: number;
}

const BAR_MIN = 10;
const BAR_MAX = 40;

/** A terminal frame: a line per blob (finished ones folded into one line when they do not fit) and a total. */
export function renderFrame(state: ProgressState, now: number, size: FrameSize): string[] {
  const room = Math.max(1, size.rows - 2);
  const blobLines = state.blobs.map((blob) => blobBar(blob, size.columns));
  let shown = blobLines;
  if (blobLines.length > room) {
    const done = state.blobs.filter((blob) => blob.phase === 'done').length;
    const open = state.blobs.flatMap((blob, index) => (blob.phase === 'done' ? [] : [blobLines[index] ?? '']));
    const folded = done === 0 ? [] : [`… ${done} ${done === 1 ? 'blob' : 'blobs'} done`];
    const fits = room - folded.length;
    shown = open.length <= fits ? [...folded, ...open] : [...folded, ...open.slice(0, Math.max(0, fits - 1)), `… ${open.length - Math.max(0, fits - 1)} more`];
  }
  return [...shown, totalLine(state, now, size.columns)].map((line) => line.slice(0, Math.max(1, size.columns - 1)));
}

function blobBar(blob: BlobProgress, columns: number): string {
  const head = `${shortDigest(blob.digest)} ${blob.role.padEnd(6)}`;
  switch (blob.phase) {
    case 'waiting':
      return `${head} waiting`;
    case 'failed':
      return `${head} failed`;
    case 'done':
      return `${head} done  ${formatSize(blob.received)}`;
    case 'active': {
      const amount = blob.size === undefined ? formatSize(blob.received) : `${formatSize(blob.received)} / ${formatSize(blob.size)}`;
      return `${head} ${bar(blob.received, blob.size, barWidth(columns, head.length + amount.length + 4))} ${amount}`;
    }
  }
}

function totalLine(state: ProgressState, now: number, columns: number): string {
  const received = state.blobs.reduce((sum, blob) => sum + blob.received, 0);
  const expected = state.blobs.reduce((sum, blob) => sum + Math.max(blob.received, blob.size ?? 0), 0);
  const done = state.blobs.filter((blob) => blob.phase === 'done').length;
  const seconds = Math.max(0, now - state.startedAt) / 1000;
  const rate = seconds > 0 ? received / seconds : 0;
  const eta = rate > 0 ? formatDuration(((expected - received) / rate) * 1000) : '--';
  const resolving = state.resolving === 0 ? '' : `, resolving ${state.resolving} ${state.resolving === 1 ? 'image' : 'images'}`;
  const tail = `${formatSize(received)} / ${formatSize(expected)}  ${formatSize(Math.round(rate))}/s  ETA ${eta}  ${done}/${state.blobs.length} blobs${resolving}`;
  return `total ${bar(received, expected, barWidth(columns, 'total '.length + tail.length + 3))} ${tail}`;
}

function barWidth(columns: number, used: number): number {
  return Math.min(BAR_MAX, Math.max(BAR_MIN, columns - 1 - used));
}

function bar(received: number, size: number | undefined, width: number): string {
  const filled = size === undefined || size === 0 ? 0 : Math.min(width, Math.floor((received / size) * width));
  return `[${'#'.repeat(filled)}${'.'.repeat(width - filled)}]`;
}

/** A finished blob, for output that is not a terminal. */
export function blobLine(blob: BlobProgress): string {
  const took = blob.startedAt === undefined || blob.endedAt === undefined ? '' : ` in ${formatDuration(blob.endedAt - blob.startedAt)}`;
  const what = blob.phase === 'done' ? formatSize(blob.received) : `failed after ${formatSize(blob.received)}`;
  return `${blob.role.padEnd(6)} ${shortDigest(blob.digest)} ${what}${took}`;
}

export function imageLine(outcome: ImageOutcome): string {
  const digest = outcome.digest === undefined ? '' : `${shortDigest(outcome.digest)}, `;
  const counts = `${digest}${plural(outcome.manifests, 'manifest')}, ${plural(outcome.blobs, 'blob')}, ${formatSize(outcome.bytes)}`;
  const verdict = outcome.errors.length === 0 ? 'pulled' : 'FAILED';
  return `${verdict} ${outcome.reference} (${counts}) in ${formatDuration(outcome.elapsedMs)}`;
}

/** The last line: images pulled and failed; blobs and bytes fetched (each blob once) and the rate. */
export function overallLine(outcomes: readonly ImageOutcome[], blobs: readonly BlobProgress[], elapsedMs: number): string {
  const failed = outcomes.filter((outcome) => outcome.errors.length > 0).length;
  const fetched = blobs.filter((blob) => blob.phase === 'done');
  const bytes = fetched.reduce((sum, blob) => sum + blob.received, 0);
  const rate = elapsedMs > 0 ? `${formatSize(Math.round((bytes / elapsedMs) * 1000))}/s` : '--';
  const images = `${outcomes.length - failed} of ${plural(outcomes.length, 'image')} pulled${failed === 0 ? '' : `, ${failed} failed`}`;
  return `prefetch: ${images}; ${plural(fetched.length, 'blob')}, ${formatSize(bytes)} in ${formatDuration(elapsedMs)} (${rate})`;
}

export function shortDigest(digest: Digest): string {
  return `sha256:${digestHex(digest).slice(0, 12)}`;
}

/** `0.4 s`, `12 s`, `3 min 05 s`, `2 h 01 min`. */
export function formatDuration(ms: number): string {
  if (!Number.isFinite(ms) || ms < 0) return '--';
  if (ms < 10_000) return `${(ms / 1000).toFixed(1)} s`;
  const seconds = Math.round(ms / 1000);
  if (seconds < 60) return `${seconds} s`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min ${String(seconds % 60).padStart(2, '0')} s`;
  return `${Math.floor(seconds / 3600)} h ${String(Math.floor((seconds % 3600) / 60)).padStart(2, '0')} min`;
}

function plural(count: number, noun: string): string {
  return `${count} ${noun}${count === 1 ? '' : 's'}`;
}

/** A terminal as the writer needs it (process.stdout when it is a TTY). */
export interface Terminal extends FrameSize {
  write(text: string): unknown;
}

const CLEAR_LINE = '\x1b[2K';
const CLEAR_TO_END = '\x1b[J';

/** How often a frame is redrawn: about ten times a second. */
export const REDRAW_INTERVAL_MS = 100;

/** Redraws a frame in place on a terminal, and prints lines above it without tearing it. */
export class TerminalFrame {
  private drawn = 0;
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly terminal: Terminal,
    private readonly frame: (size: FrameSize) => string[],
  ) {}

  start(): void {
    this.redraw();
    this.timer = setInterval(() => this.redraw(), REDRAW_INTERVAL_MS);
  }

  /** Runs print (which writes whole lines) between erasing the frame and drawing it again. */
  above(print: () => void): void {
    this.erase();
    print();
    this.redraw();
  }

  /** Draws the last frame, which stays on the screen; a second call does nothing. */
  stop(): void {
    if (this.timer === undefined) return;
    clearInterval(this.timer);
    this.timer = undefined;
    this.redraw();
  }

  private erase(): void {
    this.terminal.write(`${this.toFrameStart()}${CLEAR_TO_END}`);
    this.drawn = 0;
  }

  private redraw(): void {
    const lines = this.frame({ columns: this.terminal.columns, rows: this.terminal.rows });
    // One write, each line cleared as it is overwritten: no flicker.
    this.terminal.write(`${this.toFrameStart()}${lines.map((line) => `${CLEAR_LINE}${line}\n`).join('')}${CLEAR_TO_END}`);
    this.drawn = lines.length;
  }

  /** To the start of the frame's first line. */
  private toFrameStart(): string {
    return this.drawn > 0 ? `\x1b[${this.drawn}F` : '';
  }
}
