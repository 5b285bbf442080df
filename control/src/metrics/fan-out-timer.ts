// Times a change's fan-out: from the moment a reload was asked for (right after a commit, or when
// another process's commit was noticed) to each delta the reload writes to a stream. The hub
// writes a reload's deltas synchronously, so the reload's start is simply in force while it runs.

export class FanOutTimer {
  /** Told each delta's latency in seconds; null until metrics are wired. */
  observer: ((seconds: number) => void) | null = null;
  private since: number | null = null;

  /** Runs `send` (the hub writing a reload's deltas) with each delta timed from `askedAt`. */
  during<T>(askedAt: number, send: () => T): T {
    this.since = askedAt;
    try {
      return send();
    } finally {
      this.since = null;
    }
  }

  /** A delta was written. Deltas outside a reload (a node coming online) are not timed. */
  delivered(): void {
    if (this.since !== null) this.observer?.((performance.now() - this.since) / 1000);
  }
}
