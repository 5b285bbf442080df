import { backoffDelayMs } from '@weft/protocol';

// Exponential back-off with jitter, for reconnecting to control and to the helper.
// Jitter spreads the reconnects of many nodes after a control restart; the cap keeps recovery
// quick once the far side is back; reset() is called on success so the next failure starts small.

export interface BackoffOptions {
  baseMs?: number;
  capMs?: number;
  /** Source of randomness in [0, 1); injectable so tests are deterministic. */
  random?: () => number;
}

export class Backoff {
  private attempt = 0;
  private readonly baseMs: number;
  private readonly capMs: number;
  private readonly random: () => number;

  constructor(opts: BackoffOptions = {}) {
    this.baseMs = opts.baseMs ?? 500;
    this.capMs = opts.capMs ?? 15_000;
    this.random = opts.random ?? Math.random;
  }

  /**
   * The delay before the next attempt: half fixed, half random, of min(cap, base·2ⁿ); `steady`: the
   * connection had worked for a while before it broke (see backoffDelayMs).
   */
  next(steady = false): number {
    return backoffDelayMs(this.attempt++, { baseMs: this.baseMs, capMs: this.capMs }, this.random, steady);
  }

  reset(): void {
    this.attempt = 0;
  }
}

/** Resolves after `ms`, or at once when `signal` aborts (never rejects). */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const done = () => {
      clearTimeout(timer);
      signal?.removeEventListener('abort', done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal?.addEventListener('abort', done, { once: true });
  });
}
