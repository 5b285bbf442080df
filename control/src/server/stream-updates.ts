import type { ServerLimits } from './limits.js';

// What one node's stream may cost control: its endpoint and route reports are coalesced (the latest
// of each wins, written with one database write and one fan-out per window), and a node that sends
// more messages than any honest engine would is told so and disconnected.

export interface NodeReport {
  endpoints?: string[];
  advertisedRoutes?: string[];
}

export class StreamUpdates {
  private pending: NodeReport = {};
  private timer: NodeJS.Timeout | null = null;
  private windowStart = Date.now();
  private count = 0;

  constructor(
    private readonly limits: Pick<
      ServerLimits,
      'streamCoalesceMs' | 'streamMaxMessages' | 'streamFloodWindowMs'
    >,
    /** Writes one coalesced report (called at most once per window). */
    private readonly flush: (report: NodeReport) => void,
  ) {}

  /** Counts one message; returns why the node must be disconnected, or null. */
  admit(): string | null {
    const now = Date.now();
    if (now - this.windowStart >= this.limits.streamFloodWindowMs) {
      this.windowStart = now;
      this.count = 0;
    }
    this.count++;
    if (this.count <= this.limits.streamMaxMessages) return null;
    const seconds = Math.round(this.limits.streamFloodWindowMs / 1000);
    return `too many messages: at most ${this.limits.streamMaxMessages} per ${seconds} s`;
  }

  /** Remembers the latest report of each kind; written when the window ends. */
  report(update: NodeReport): void {
    this.pending = { ...this.pending, ...update };
    this.timer ??= setTimeout(() => {
      this.timer = null;
      const report = this.pending;
      this.pending = {};
      this.flush(report);
    }, this.limits.streamCoalesceMs);
  }

  /** The stream closed: what was still waiting is written now. */
  close(): void {
    if (this.timer === null) return;
    clearTimeout(this.timer);
    this.timer = null;
    this.flush(this.pending);
    this.pending = {};
  }
}
