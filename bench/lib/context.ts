// What every measure gets from bench/main.ts: the mode, the upstream with its images, a scratch directory
// and how regmirror's node runs (a CPU profile, when asked for).

import type { Distribution } from '../../test/support/distribution.js';
import type { BenchImages } from './images.js';

export interface BenchContext {
  quick: boolean;
  /** Runs per measure; every run measures each server once, alternating. */
  runs: number;
  upstream: Distribution;
  images: BenchImages;
  /** Scratch space for pulled images and wrk scripts; removed at the end. */
  scratch: string;
  /** Arguments for the node of every regmirror started (--cpu-prof …). */
  regmirrorNodeArgs: string[];
  /** Seconds per wrk run. */
  wrkSeconds: number;
  say(text: string): void;
}
