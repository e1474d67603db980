// What every measure gets from bench/main.ts: the mode, a scratch directory and how regmirror's node runs (a CPU
// profile, when asked for); the groups that compare against the peer get the upstream with its images too.

import type { Distribution } from '../../test/support/distribution.js';
import type { BenchImages } from './images.js';

/** What a group that needs no upstream gets (metadata, eviction): the upstream is not started for it alone. */
export interface BenchBasics {
  quick: boolean;
  /** Runs per measure; every run measures each server once, alternating. */
  runs: number;
  /** Scratch space for pulled images and wrk scripts; removed at the end. */
  scratch: string;
  /** Arguments for the node of every regmirror started (--cpu-prof …). */
  regmirrorNodeArgs: string[];
  /** Seconds per wrk run. */
  wrkSeconds: number;
  say(text: string): void;
}

export interface BenchContext extends BenchBasics {
  upstream: Distribution;
  images: BenchImages;
  /** The OCI layout the images were built into (tags app and concurrent): what push measures send. */
  layoutDir: string;
}
