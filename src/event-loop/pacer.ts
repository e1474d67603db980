// Long synchronous work over the whole cache (reading the content graph, planning eviction, marking for GC)
// shares the event loop: it calls pace() between items, which lets the loop run (requests, timers) once the work
// has held it for a slice. At 100k blobs such work takes seconds; no request waits more than a slice for it.

/** How long work may hold the event loop before it lets others run. */
const SLICE_MS = 10;

export class Pacer {
  private sliceStarted = performance.now();

  constructor(private readonly sliceMs: number = SLICE_MS) {}

  /** Resolves at once while the slice lasts; after it, on the next turn of the event loop. */
  pace(): Promise<void> | undefined {
    if (performance.now() - this.sliceStarted < this.sliceMs) return undefined;
    return new Promise((resolve) => {
      setImmediate(() => {
        this.sliceStarted = performance.now();
        resolve();
      });
    });
  }
}
