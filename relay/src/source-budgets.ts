import { sourceKey } from './source-key.js';
import { TokenBucket } from './token-bucket.js';

/**
 * Per-source rate budgets for unauthenticated UDP input (the reflector's handshakes, STUN):
 * `perSecond` from one source (source-key.ts), burst twice that. Only the `maxSources` most
 * recently seen sources are remembered; a forgotten one starts again with a full burst, so
 * spoofed sources cannot grow the table.
 */
export class SourceBudgets {
  // Least recently used first (re-inserted on each use).
  private readonly buckets = new Map<string, TokenBucket>();

  constructor(
    private readonly perSecond: number,
    private readonly maxSources: number,
    private readonly now: () => number = Date.now,
  ) {}

  /** Spends one unit of `address`'s budget; false when it has none left. */
  take(address: string): boolean {
    const key = sourceKey(address);
    let bucket = this.buckets.get(key);
    if (bucket === undefined) {
      bucket = new TokenBucket(this.perSecond, this.perSecond * 2, this.now);
      if (this.buckets.size >= this.maxSources)
        this.buckets.delete(this.buckets.keys().next().value as string);
    } else {
      this.buckets.delete(key);
    }
    this.buckets.set(key, bucket);
    return bucket.tryTake(1);
  }
}
