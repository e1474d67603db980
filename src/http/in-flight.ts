// Requests being answered now, so a graceful stop can wait for them while it still answers new ones (a load
// balancer's probe of /readyz must get its 503, not a refused connection).

export class InFlightRequests {
  private count = 0;
  private waiters: Array<() => void> = [];

  get active(): number {
    return this.count;
  }

  started(): void {
    this.count += 1;
  }

  /** A request's response is done with (finished, or its connection closed). */
  ended(): void {
    this.count -= 1;
    if (this.count > 0) return;
    const waiters = this.waiters;
    this.waiters = [];
    for (const wake of waiters) wake();
  }

  /** Resolves once no request is in flight, or after ms, whichever comes first. */
  async idleWithin(ms: number): Promise<void> {
    if (this.count === 0) return;
    let timer: NodeJS.Timeout | undefined;
    await new Promise<void>((resolve) => {
      this.waiters.push(resolve);
      timer = setTimeout(resolve, ms);
    });
    clearTimeout(timer);
  }
}
