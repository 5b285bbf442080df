import type { Status, WatchEvent } from '@weft/protocol';

// Fans status changes out to watchers (the LocalAPI's /watch, later the desktop bridge). One
// computation per burst of changes serves every watcher; a new watcher's first event is the
// whole state with `initial: true`, sent from the same loop so it can never arrive after, or
// miss, an update.

export type WatchListener = (event: WatchEvent) => void;

export class StatusWatch {
  private readonly listeners = new Map<WatchListener, boolean>();
  private last: string | null = null;
  private timer: NodeJS.Timeout | null = null;
  private running = false;
  private again = false;

  constructor(
    private readonly compute: () => Promise<Status>,
    private readonly coalesceMs = 50,
  ) {}

  /** Adds a listener; returns the function that removes it. */
  add(listener: WatchListener): () => void {
    this.listeners.set(listener, false);
    this.kick(0);
    return () => {
      this.listeners.delete(listener);
    };
  }

  changed(): void {
    if (this.listeners.size > 0) this.kick(this.coalesceMs);
  }

  close(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    this.listeners.clear();
  }

  private kick(delayMs: number): void {
    if (this.timer) return;
    this.timer = setTimeout(() => {
      this.timer = null;
      void this.cycle();
    }, delayMs);
  }

  private async cycle(): Promise<void> {
    if (this.running) {
      this.again = true;
      return;
    }
    this.running = true;
    try {
      const status = await this.compute();
      const text = JSON.stringify(status);
      for (const [listener, initialSent] of [...this.listeners]) {
        if (!initialSent) {
          this.listeners.set(listener, true);
          listener({ initial: true, status });
        } else if (text !== this.last) {
          listener({ initial: false, status });
        }
      }
      this.last = text;
    } finally {
      this.running = false;
    }
    if (this.again) {
      this.again = false;
      this.kick(0);
    }
  }
}
