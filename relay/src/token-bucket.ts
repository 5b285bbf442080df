/**
 * A token bucket: `rate` tokens per second, holding at most `burst`. `take` always succeeds and
 * may drive the balance negative, so a caller that has already received work (a frame off the
 * socket) can account for it and then wait `waitMs()` before accepting more.
 */
export class TokenBucket {
  private tokens: number;
  private last: number;

  constructor(
    private readonly rate: number,
    private readonly burst: number,
    private readonly now: () => number = Date.now,
  ) {
    this.tokens = burst;
    this.last = now();
  }

  private refill(): void {
    const t = this.now();
    this.tokens = Math.min(this.burst, this.tokens + ((t - this.last) * this.rate) / 1000);
    this.last = t;
  }

  /** Spends `n` tokens; returns false when the bucket is now in deficit. */
  take(n: number): boolean {
    this.refill();
    this.tokens -= n;
    return this.tokens >= 0;
  }

  /** Spends `n` tokens only if they are all there. */
  tryTake(n: number): boolean {
    this.refill();
    if (this.tokens < n) return false;
    this.tokens -= n;
    return true;
  }

  /** Milliseconds until the balance is back to zero. */
  waitMs(): number {
    this.refill();
    return this.tokens >= 0 ? 0 : Math.ceil((-this.tokens * 1000) / this.rate);
  }
}
