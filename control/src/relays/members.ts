import { isExpired, type NodeRecord } from '../tailnet/records.js';

// The node keys every relay of the relay map must serve: every node of the node table whose key
// is valid now, whatever kind of client it is. Relays are told the whole set when they connect
// and again whenever it changes (relays/members-route.ts); nothing else about a node leaves here.

export type MembersListener = (keys: readonly string[]) => void;

export class RelayMembers {
  private keys: readonly string[] = [];
  private joined = '';
  /** The latest load not yet turned into keys: nobody listened when it came. */
  private pending: readonly NodeRecord[] | null = null;
  private readonly listeners = new Set<MembersListener>();

  constructor(private readonly clock: () => Date = () => new Date()) {}

  /** The current member keys, sorted. */
  current(): readonly string[] {
    this.settle();
    return this.keys;
  }

  /**
   * Takes a fresh load of the node table (NetmapSync calls it after each one, expiry included).
   * Sorting every key is O(N log N): with no relay listening (most of a registration burst, or no
   * relays at all) it waits until someone asks, so 10,000 registrations do not sort 10,000 times.
   */
  update(nodes: readonly NodeRecord[]): void {
    this.pending = nodes;
    if (this.listeners.size > 0) this.settle();
  }

  private settle(): void {
    const nodes = this.pending;
    if (nodes === null) return;
    this.pending = null;
    const now = this.clock();
    const keys = nodes
      .filter((n) => !isExpired(n, now))
      .map((n) => n.nodeKey)
      .sort();
    const joined = keys.join(',');
    if (joined === this.joined) return;
    this.keys = keys;
    this.joined = joined;
    for (const listener of this.listeners) listener(keys);
  }

  /** Calls `listener` on every change; returns the unsubscribe. */
  subscribe(listener: MembersListener): () => void {
    this.settle(); // a load nobody heard is not a change for the newcomer, who asks current()
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }
}
