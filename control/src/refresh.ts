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

  constructor(private readonly load: () => Promise<void>) {}

  run(): Promise<void> {
    if (this.current === null) {
      // One event-loop turn first: requests already under way (registrations committing) get in,
      // so one load serves a burst of them instead of one each; loads cost O(nodes).
      this.current = new Promise<void>((resolve) => setImmediate(resolve))
        .then(() => this.load())
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
