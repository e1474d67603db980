// The benchmark's one schedule: A B A B … — every run measures each contender once, in turn, so a slow
// phase of a shared machine falls on all of them alike.

/** For each of `runs` runs, each contender in turn: what `measure` returns is that contender's sample. */
export async function alternate<T extends string>(
  runs: number,
  contenders: readonly T[],
  measure: (contender: T, run: number) => Promise<number>,
): Promise<Record<T, number[]>> {
  const samples = Object.fromEntries(contenders.map((contender) => [contender, [] as number[]])) as Record<T, number[]>;
  for (let run = 1; run <= runs; run++) {
    for (const contender of contenders) samples[contender].push(await measure(contender, run));
  }
  return samples;
}
