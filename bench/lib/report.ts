// What a measure reports: a table row for people (medians, the ratio, the target and whether it is met)
// and the raw samples for bench/results/<date>.json.

export interface Row {
  id: string;
  measure: string;
  peer: string;
  regmirror: string;
  ratio: string;
  target: string;
  /** undefined: informative only, no target. */
  met: boolean | undefined;
  /** Every sample, by who was measured (peer, regmirror, regmirror+nginx, direct, …). */
  samples: Record<string, number[]>;
  /** The medians the row shows, by the same names. */
  medians: Record<string, number>;
  unit: string;
  note?: string;
}

/** How the samples of one server are written in a cell. */
export type Format = (value: number) => string;

export const fmt = {
  gbps: (bytesPerS: number): string => `${(bytesPerS / 1e9).toFixed(2)} GB/s`,
  seconds: (s: number): string => `${s.toFixed(2)} s`,
  ms: (ms: number): string => (ms < 10 ? `${ms.toFixed(2)} ms` : `${ms.toFixed(0)} ms`),
  rps: (rate: number): string => `${Math.round(rate)} req/s`,
  mib: (bytes: number): string => `${(bytes / 1024 / 1024).toFixed(0)} MiB`,
  times: (value: number): string => `${value.toFixed(2)}×`,
  /** A count as the rows name it: 1k, 10k, 100.4k. */
  count: (value: number): string => (value >= 1000 ? `${Number((value / 1000).toFixed(1))}k` : String(value)),
};

export function markdownTable(rows: Row[]): string {
  const lines = ['| measure | peer (distribution 2.8.2) | regmirror | ratio | target | met |', '|---|---|---|---|---|---|'];
  for (const row of rows) {
    const met = row.met === undefined ? '—' : row.met ? 'yes' : '**no**';
    lines.push(`| ${row.measure} | ${row.peer} | ${row.regmirror} | ${row.ratio} | ${row.target} | ${met} |`);
  }
  return lines.join('\n');
}
