import type { Status, WatchEvent } from '@weft/protocol';

// Fans status changes out to watchers (the LocalAPI's /watch, and through it the desktop app). One
// computation per burst of changes serves every watcher; a new watcher's first event is the
// whole state with `initial: true`, sent from the same loop so it can never arrive after, or
// miss, an update. Handshakes move without any engine event, so while anyone watches the status
// is also recomputed every `pollMs` (the helper is asked for live figures) and sent if it changed.
// Byte counters alone are no change: they move with every packet (GET /status has live ones).

export type WatchListener = (event: WatchEvent) => void;

export class StatusWatch {
  private readonly listeners = new Map<WatchListener, boolean>();
  private last: string | null = null;
  private timer: NodeJS.Timeout | null = null;
  private running = false;
  private again = false;
  private poll: NodeJS.Timeout | null = null;

  constructor(
    private readonly compute: () => Promise<Status>,
    private readonly coalesceMs = 50,
    private readonly pollMs = 2_000,
  ) {}

  /** Adds a listener; returns the function that removes it. */
  add(listener: WatchListener): () => void {
    this.listeners.set(listener, false);
    this.kick(0);
    if (!this.poll && this.pollMs > 0) {
      this.poll = setInterval(() => this.kick(0), this.pollMs);
      this.poll.unref();
    }
    return () => {
      this.listeners.delete(listener);
      if (this.listeners.size === 0) this.stopPolling();
    };
  }

  changed(): void {
    if (this.listeners.size > 0) this.kick(this.coalesceMs);
  }

  close(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    this.stopPolling();
    this.listeners.clear();
  }

  private stopPolling(): void {
    if (this.poll) clearInterval(this.poll);
    this.poll = null;
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
      const text = changeKey(status);
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

/** The status as compared between cycles: all of it but the byte counters. */
function changeKey(status: Status): string {
  return JSON.stringify({ ...status, peers: status.peers.map(({ rxBytes: _rx, txBytes: _tx, ...p }) => p) });
}
