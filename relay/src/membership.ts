import { EventEmitter } from 'node:events';

// Who the relay serves: the node keys of its tailnet, as control last said (control-feed.ts), or
// anyone for a relay started with --open. Every protocol the relay speaks (Weft's relay, DERP)
// asks `isMember` when a node proves its key, and drops connections on `removed`.

export interface MembershipEvents {
  /** Keys that were members and are no longer: their connections must end now. */
  removed: [keys: string[]];
}

export class Membership extends EventEmitter<MembershipEvents> {
  private keys: Set<string> | null = null;

  private constructor(readonly open: boolean) {
    super();
  }

  /** Serves every node key (a lab, or a relay trusted to a closed network). */
  static open(): Membership {
    return new Membership(true);
  }

  /** Serves no one until the first `replace` from control. */
  static tailnet(): Membership {
    return new Membership(false);
  }

  /** False until control's first list arrives (then it is kept across control outages). */
  get known(): boolean {
    return this.open || this.keys !== null;
  }

  get size(): number {
    return this.keys?.size ?? 0;
  }

  /** `nodeKey` is base64 of the 32-byte key, as everywhere in Weft. */
  isMember(nodeKey: string): boolean {
    return this.open || (this.keys?.has(nodeKey) ?? false);
  }

  /** Why `nodeKey` is refused, for the close reason; null when it is a member. */
  refusal(nodeKey: string): string | null {
    if (this.isMember(nodeKey)) return null;
    return this.keys === null ? 'tailnet members not known yet' : 'node key is not in the tailnet';
  }

  /** Takes control's whole list; announces the keys that left. */
  replace(keys: Iterable<string>): void {
    if (this.open) throw new Error('an open relay has no member list');
    const next = new Set(keys);
    const removed = this.keys === null ? [] : [...this.keys].filter((k) => !next.has(k));
    this.keys = next;
    if (removed.length > 0) this.emit('removed', removed);
  }
}
