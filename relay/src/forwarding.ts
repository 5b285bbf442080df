import type { Connection } from './connection.js';
import type { Membership } from './membership.js';

// The one forwarding table of the relay, for every protocol it speaks. A Weft relay client and a
// DERP client (an official Tailscale client) are both a node key with one connection; a packet
// for a key goes to that key's connection whatever protocol either side speaks.

/** The protocol a packet arrived in: its frame can be readdressed in place for the same one. */
export type Wire = 'weft' | 'derp';

export interface Peer {
  readonly wire: Wire;
  readonly conn: Connection;
  /**
   * Queues `packet` from `source` (32 raw key bytes). `frame` is the sender's whole frame on
   * `from`, which this peer may rewrite and send as it is when `from` is its own wire.
   */
  deliver(source: Uint8Array, packet: Uint8Array, frame: Buffer, from: Wire): boolean;
  /** Ends the connection: a newer one proved the same key, or the key left the tailnet. */
  end(why: 'replaced' | 'notMember', reason: string): void;
  /**
   * Told when a peer this one sent to has disconnected (DERP's PeerGone, so a Tailscale client
   * stops using this path at once); absent for protocols without such a message.
   */
  peerGone?(key: Uint8Array): void;
}

export interface ForwardingStats {
  /** Packets forwarded and their bytes, by the wire they arrived on. */
  forwarded: Record<Wire, { packets: number; bytes: number }>;
  /** Packets for a node key with no connection here. */
  droppedNoPeer: number;
  /** Packets dropped because the destination's queue (or the total budget) was full. */
  droppedQueueFull: number;
}

/** What `forward` did with a packet. */
export type ForwardResult = 'sent' | 'noPeer' | 'dropped';

export class ForwardingTable {
  private readonly byKey = new Map<string, Peer>();
  /** For each peer that wants `peerGone`: the peers it has sent to, and the reverse. */
  private readonly sentTo = new Map<Peer, Set<Peer>>();
  private readonly sentFrom = new Map<Peer, Set<Peer>>();
  readonly stats: ForwardingStats = {
    forwarded: { weft: { packets: 0, bytes: 0 }, derp: { packets: 0, bytes: 0 } },
    droppedNoPeer: 0,
    droppedQueueFull: 0,
  };
  private readonly onRemoved = (keys: string[]) => {
    for (const key of keys) {
      const peer = this.byKey.get(key);
      if (peer === undefined) continue;
      // Out of the table at once, before its connection finishes closing.
      this.remove(key, peer);
      peer.end('notMember', 'node removed from the tailnet');
    }
  };

  constructor(private readonly membership: Membership) {
    membership.on('removed', this.onRemoved);
  }

  get(nodeKey: string): Peer | undefined {
    return this.byKey.get(nodeKey);
  }

  get size(): number {
    return this.byKey.size;
  }

  /** Why `nodeKey` would be refused (not a member), or null: a cheap check before any proof. */
  refusal(nodeKey: string): string | null {
    return this.membership.refusal(nodeKey);
  }

  /**
   * Serves `peer` under its proven key (base64) unless the key is not a member: returns why it
   * is refused, or null. A previous connection of the same key is ended: the newest wins, as the
   * old one is usually a dead socket from before a network change.
   */
  admit(nodeKey: string, peer: Peer): string | null {
    const refusal = this.membership.refusal(nodeKey);
    if (refusal !== null) return refusal;
    const previous = this.byKey.get(nodeKey);
    this.byKey.set(nodeKey, peer);
    if (previous !== undefined) {
      this.forget(nodeKey, previous);
      previous.end('replaced', 'replaced by a newer connection');
    }
    return null;
  }

  /** Stops serving `peer` (its connection closed); tells those who sent to it that it is gone. */
  remove(nodeKey: string, peer: Peer): void {
    if (this.byKey.get(nodeKey) !== peer) return;
    this.byKey.delete(nodeKey);
    this.forget(nodeKey, peer);
  }

  forward(from: Peer, destination: Uint8Array, packet: Uint8Array, frame: Buffer): ForwardResult {
    const source = from.conn.keyBytes;
    if (source === null) return 'dropped';
    const dst = this.byKey.get(
      Buffer.from(destination.buffer, destination.byteOffset, 32).toString('base64'),
    );
    if (dst === undefined) {
      this.stats.droppedNoPeer++;
      return 'noPeer';
    }
    if (from.peerGone !== undefined) this.noteSent(from, dst);
    if (!dst.deliver(source, packet, frame, from.wire)) {
      this.stats.droppedQueueFull++;
      return 'dropped';
    }
    const forwarded = this.stats.forwarded[from.wire];
    forwarded.packets++;
    forwarded.bytes += packet.length;
    return 'sent';
  }

  close(): void {
    this.membership.off('removed', this.onRemoved);
  }

  private noteSent(from: Peer, dst: Peer): void {
    const to = this.sentTo.get(from) ?? new Set<Peer>();
    if (to.has(dst)) return;
    to.add(dst);
    this.sentTo.set(from, to);
    const senders = this.sentFrom.get(dst) ?? new Set<Peer>();
    senders.add(from);
    this.sentFrom.set(dst, senders);
  }

  private forget(nodeKey: string, peer: Peer): void {
    const keyBytes = new Uint8Array(Buffer.from(nodeKey, 'base64'));
    for (const sender of this.sentFrom.get(peer) ?? []) {
      this.sentTo.get(sender)?.delete(peer);
      sender.peerGone?.(keyBytes);
    }
    this.sentFrom.delete(peer);
    for (const dst of this.sentTo.get(peer) ?? []) this.sentFrom.get(dst)?.delete(peer);
    this.sentTo.delete(peer);
  }
}
