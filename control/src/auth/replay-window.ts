import { MACHINE_AUTH_MAX_SKEW_SECONDS } from '@weft/protocol';

// The replay window for machine signatures: a signature is good for MACHINE_AUTH_MAX_SKEW_SECONDS
// either side of its time, so its nonce is remembered until then and a second use is refused.
// Per process: with several replicas, one captured request could be replayed once to each, within
// the window, and only by someone who can read the TLS traffic.

/** Remembered nonces at most; past it the oldest are forgotten (requests are rate-limited before). */
const MAX_NONCES = 200_000;

export class ReplayWindow {
  /** `machineKey nonce` → when it stops mattering (ms). Insertion order is roughly expiry order. */
  private readonly seen = new Map<string, number>();

  /** Records the nonce; false when it was seen already within its window (a replay). */
  admit(machineKey: string, nonce: string, seconds: number, now = Date.now()): boolean {
    this.sweep(now);
    const id = `${machineKey} ${nonce}`;
    if (this.seen.has(id)) return false;
    this.seen.set(id, (seconds + MACHINE_AUTH_MAX_SKEW_SECONDS) * 1000 + 1000);
    if (this.seen.size > MAX_NONCES) {
      const oldest = this.seen.keys().next().value;
      if (oldest !== undefined) this.seen.delete(oldest);
    }
    return true;
  }

  private sweep(now: number): void {
    for (const [id, until] of this.seen) {
      if (until > now) break;
      this.seen.delete(id);
    }
  }
}
