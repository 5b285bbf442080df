/**
 * Persists only the newest of a burst of values: at most one write runs at a time, and values
 * that arrive meanwhile collapse into one more write. Keeps the netmap cache current under a
 * flood of deltas without overlapping renames.
 */
export class LatestWriter<T> {
  private pending: { value: T } | null = null;
  private running: Promise<void> | null = null;

  constructor(
    private readonly write: (value: T) => Promise<void>,
    private readonly onError: (err: unknown) => void,
  ) {}

  push(value: T): void {
    this.pending = { value };
    if (!this.running) this.running = this.drain();
  }

  /** Resolves once everything pushed so far is written (or has failed). */
  async flush(): Promise<void> {
    while (this.running) await this.running;
  }

  /** Forgets a value not yet written, e.g. a netmap pushed just before logout. */
  discard(): void {
    this.pending = null;
  }

  private async drain(): Promise<void> {
    while (this.pending) {
      const { value } = this.pending;
      this.pending = null;
      try {
        await this.write(value);
      } catch (err) {
        this.onError(err);
      }
    }
    this.running = null;
  }
}
