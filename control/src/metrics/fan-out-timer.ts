// Times a change's fan-out: from the moment a reload was asked for (right after a commit, or when
// another process's commit was noticed) to each delta it causes being written to a stream. The hub
// works out a reload's deltas synchronously, so the reload's start is in force while it runs; the
// hub keeps it with each node's pending delta, which may be written a turn later (merged sends).

export class FanOutTimer {
  /** Told each delta's latency in seconds; null until metrics are wired. */
  observer: ((seconds: number) => void) | null = null;
  private current: number | null = null;

  /** When the reload now being applied was asked for (performance.now()); null outside one. */
  get since(): number | null {
    return this.current;
  }

  /** Runs `apply` (the hub working out a reload's deltas) with its changes timed from `askedAt`. */
  during<T>(askedAt: number, apply: () => T): T {
    this.current = askedAt;
    try {
      return apply();
    } finally {
      this.current = null;
    }
  }

  /** A delta was written; `askedAt` is its oldest change's (undefined: not timed, e.g. coming online). */
  delivered(askedAt: number | undefined): void {
    if (askedAt !== undefined) this.observer?.((performance.now() - askedAt) / 1000);
  }
}
