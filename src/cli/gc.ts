// `regmirror gc`: garbage collection of a data directory while holding it (so never beside a running server;
// a running one collects on gc.interval and on POST /_regmirror/gc). One line per removal, then what was freed.
// Exit 0 when it ran (removals are not problems); 1 when the storage or database failed; 2 on bad usage.

import type { ConfigFlags } from '../config/load.js';
import { GarbageCollector, type Collected, type GcReport } from '../cache/garbage-collector.js';
import { digestsPinnedBy } from '../cache/prefetcher.js';
import { LocalRegistry } from '../registry/local-registry.js';
import { Metrics } from '../telemetry/metrics.js';
import { formatSize } from '../config/size.js';
import { STANDARD_OUTPUT, withDataDirectory, type Output } from './data-directory.js';

export interface GcFlags extends Pick<ConfigFlags, 'config' | 'flavor' | 'data'> {
  dryRun?: boolean;
}

export async function runGc(flags: GcFlags, output: Output = STANDARD_OUTPUT): Promise<number> {
  const dryRun = flags.dryRun === true;
  return withDataDirectory(flags, { command: dryRun ? 'regmirror gc --dry-run' : 'regmirror gc', name: 'gc', output, removes: !dryRun }, async ({ settings, dataDir, store, meta }) => {
    const metrics = new Metrics();
    const quiet = { info: () => undefined, warn: () => undefined, error: () => undefined };
    const local = new LocalRegistry(store, meta, { metrics, log: quiet });
    const collector = new GarbageCollector(local, {
      graceMs: settings.gc.graceMs,
      pinned: () => digestsPinnedBy(settings.prefetch.images),
      // The lock is held: no fill is writing a temporary.
      abandonedTemporaryMs: undefined,
      metrics,
      log: quiet,
      onCollected: (collected) => output.out(describeCollected(collected, dryRun)),
    });
    output.out(describeReport(dataDir, await collector.run({ dryRun })));
    return 0;
  });
}

export function describeCollected(collected: Collected, dryRun: boolean): string {
  return `${dryRun ? 'would remove' : 'removed'} ${collected.kind.replace('_', ' ')} ${collected.subject} (${formatSize(collected.bytes)})`;
}

export function describeReport(dataDir: string, report: GcReport): string {
  const counts = Object.entries(report.removed)
    .filter(([, count]) => count > 0)
    .map(([kind, count]) => `${count} ${kind.replace('_', ' ')}${count === 1 ? '' : 's'}`);
  const what = counts.length === 0 ? 'nothing to remove' : `${counts.join(', ')}, ${formatSize(report.freedBytes)}`;
  return `gc ${dataDir}${report.dryRun ? ' (dry run)' : ''}: ${report.marked} objects kept; ${report.dryRun ? 'would remove' : 'removed'} ${what}; ${report.durationMs} ms`;
}
