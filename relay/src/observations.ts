/** Where the reflector last saw a node's WireGuard socket. */
export interface Observation {
  /** ip:port or [ipv6]:port, as the packets arrived (after any NAT on the way). */
  endpoint: string;
  /** Milliseconds since the epoch of the last authenticated packet from there. */
  at: number;
}

export type ObservationListener = (nodeKey: string, observation: Observation) => void;

/**
 * The reflector's observations, by node key. Bounded: entries expire `ttlMs` after their last
 * refresh, and beyond `maxEntries` the least recently refreshed one is evicted, so a flood of
 * handshakes from made-up keys cannot grow it without limit.
 */
export class ObservationStore {
  // Map iteration order is insertion order; re-inserting on refresh keeps it least-recent first.
  private readonly entries = new Map<string, Observation>();
  private readonly listeners = new Set<ObservationListener>();
  private readonly ttlMs: number;
  private readonly maxEntries: number;
  private readonly now: () => number;

  constructor(opts: { ttlMs?: number; maxEntries?: number; now?: () => number } = {}) {
    this.ttlMs = opts.ttlMs ?? 180_000;
    this.maxEntries = opts.maxEntries ?? 100_000;
    this.now = opts.now ?? Date.now;
  }

  /** Records a sighting; listeners hear of it only when the endpoint differs from the last one. */
  record(nodeKey: string, endpoint: string): void {
    const previous = this.get(nodeKey);
    const observation = { endpoint, at: this.now() };
    this.entries.delete(nodeKey);
    this.entries.set(nodeKey, observation);
    if (this.entries.size > this.maxEntries) {
      const oldest = this.entries.keys().next().value as string;
      this.entries.delete(oldest);
    }
    if (previous?.endpoint !== endpoint) for (const l of this.listeners) l(nodeKey, observation);
  }

  get(nodeKey: string): Observation | undefined {
    const o = this.entries.get(nodeKey);
    if (o === undefined) return undefined;
    if (this.now() - o.at > this.ttlMs) {
      this.entries.delete(nodeKey);
      return undefined;
    }
    return o;
  }

  /** Subscribes to endpoint changes; returns the unsubscribe function. */
  onChange(listener: ObservationListener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  get size(): number {
    return this.entries.size;
  }
}
