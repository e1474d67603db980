// Single flight: concurrent callers asking for the same key share one piece of work (one upstream fetch, one
// token request) instead of each doing it. The one utility for it; blob fills, manifests, v1 documents and
// tokens all go through it.

export class SingleFlight<K, V> {
  private readonly flights = new Map<K, Promise<V>>();

  /** The flight under key, while one runs. */
  get(key: K): Promise<V> | undefined {
    return this.flights.get(key);
  }

  /**
   * Joins the flight under key, or starts one with work(). The key stays taken until the flight settles, or, with
   * holdUntil, until what holdUntil(value) returns settles too (a blob fill outlives the promise that started it).
   */
  run(key: K, work: () => Promise<V>, holdUntil?: (value: V) => Promise<unknown>): Promise<V> {
    const running = this.flights.get(key);
    if (running !== undefined) return running;
    const flight = work();
    this.flights.set(key, flight);
    const forget = (): void => {
      if (this.flights.get(key) === flight) this.flights.delete(key);
    };
    flight.then(
      (value) => {
        if (holdUntil === undefined) forget();
        else holdUntil(value).then(forget, forget);
      },
      forget,
    );
    return flight;
  }

  /** Every flight running now. */
  running(): Promise<V>[] {
    return [...this.flights.values()];
  }
}
