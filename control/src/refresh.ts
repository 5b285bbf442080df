// Reloading from the database on demand, as NetmapSync (nodes) and PolicySync (the policy) do: a
// writer commits, then asks for a reload; the reload must start after the commit, yet a burst of
// writers should not each start one.

/**
 * Runs `load` so that every call resolves once a load that started after the call has finished.
 * At most one load runs at a time; callers arriving while one runs share one queued load.
 */
export class CoalescingRefresh {
  private current: Promise<void> | null = null;
  private queued: Promise<void> | null = null;
  /** When the oldest call not yet served by a started load was made (performance.now()). */
  private askedAt: number | null = null;

  /** `load` is told when the oldest call it serves was made (the fan-out latency starts there). */
  constructor(private readonly load: (askedAt: number) => Promise<void>) {}

  run(): Promise<void> {
    this.askedAt ??= performance.now();
    if (this.current === null) {
      // One event-loop turn first: requests already under way (registrations committing) get in,
      // so one load serves a burst of them instead of one each; loads cost O(nodes).
      this.current = new Promise<void>((resolve) => setImmediate(resolve))
        .then(() => {
          const askedAt = this.askedAt ?? performance.now();
          this.askedAt = null;
          return this.load(askedAt);
        })
        .finally(() => {
          this.current = null;
        });
      return this.current;
    }
    // A load is under way and may have read before the caller's commit: queue one more, shared by
    // every caller that arrives meanwhile.
    this.queued ??= this.current
      .catch(() => {})
      .then(() => {
        this.queued = null;
        return this.run();
      });
    return this.queued;
  }
}
