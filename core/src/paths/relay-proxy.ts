import { createSocket, type Socket } from 'node:dgram';
import { EventEmitter } from 'node:events';

// The loopback relay proxy: one UDP socket on 127.0.0.1 per peer. A relayed peer's WireGuard
// endpoint is its socket here; what WireGuard sends to it goes over the relay to the peer's node
// key, and what the relay delivers from key K is sent to the local WireGuard port from K's socket,
// so WireGuard sees one stable endpoint per peer (and roaming to it means "relayed"). No kernel
// change and no privilege: ordinary sockets. The relay only ever carries WireGuard ciphertext.

export interface RelayProxyEvents {
  /** A socket became ready or went away: endpoints changed. */
  change: [];
}

export interface RelayProxyOptions {
  /** Sends a packet to a node key over the relay; false when it was dropped. */
  send: (destination: Uint8Array, packet: Uint8Array) => boolean;
  /** Socket buffer size to ask for (the kernel caps it at net.core.[rw]mem_max). */
  bufferBytes?: number;
}

/**
 * What happens to what the relay delivers from a peer: 'queue' keeps it (bounded) to deliver when
 * released, 'drop' drops it, 'off' delivers it (and, when released from 'queue', what was kept).
 */
export type RelayHold = 'queue' | 'drop' | 'off';

/** The most packets kept per held peer: a trial's opening lasts a few polls, not a bulk transfer. */
export const MAX_QUEUED = 128;
/** And the most bytes: a relay frame can be 64 KiB, so the count alone would allow 8 MiB per peer. */
export const MAX_QUEUED_BYTES = 256 * 1024;

interface PeerSocket {
  socket: Socket;
  key: Uint8Array;
  port: number | null;
}

export class RelayProxy extends EventEmitter<RelayProxyEvents> {
  private readonly sockets = new Map<string, PeerSocket>();
  /** Peers whose relayed packets are held back (a direct candidate of theirs is tried), and how. */
  private readonly held = new Map<string, { how: 'queue' | 'drop'; queue: Uint8Array[]; bytes: number }>();
  private wgPort = 0;
  /** Packets dropped since start (relay down or congested), for status and tests. */
  dropped = 0;
  forwarded = 0;
  delivered = 0;
  /** Packets kept while their peer was held ('queue'), delivered or dropped since. */
  queued = 0;

  constructor(private readonly opts: RelayProxyOptions) {
    super();
  }

  /** The local WireGuard listen port: packets from the relay go there. */
  setWireGuardPort(port: number): void {
    this.wgPort = port;
  }

  /** Keeps exactly one socket per key in `keys`. */
  setPeers(keys: Iterable<string>): void {
    const want = new Set(keys);
    let changed = false;
    for (const [key, ps] of this.sockets) {
      if (want.has(key)) continue;
      this.sockets.delete(key);
      this.held.delete(key);
      ps.socket.close();
      changed = true;
    }
    for (const key of want) if (!this.sockets.has(key)) this.open(key);
    if (changed) this.emit('change');
  }

  /** `127.0.0.1:port` of a peer's socket, once it is bound. */
  endpointFor(key: string): string | undefined {
    const port = this.sockets.get(key)?.port;
    return port ? `127.0.0.1:${port}` : undefined;
  }

  /**
   * Holds back what the relay delivers from `key` while a direct candidate of the peer is tried
   * (see RelayHold): WireGuard roams to wherever the last packet came from, so a relayed packet
   * would move the peer back to the relay before the candidate could carry anything.
   */
  hold(key: string, how: RelayHold): void {
    const was = this.held.get(key);
    if (how === 'off') {
      this.held.delete(key);
      for (const packet of was?.queue ?? []) this.deliver(key, packet);
      return;
    }
    this.dropped += how === 'drop' ? (was?.queue.length ?? 0) : 0;
    this.held.set(
      key,
      how === 'queue' && was ? { how, queue: was.queue, bytes: was.bytes } : { how, queue: [], bytes: 0 },
    );
  }

  /** A packet the relay delivered from node key `source`. */
  deliver(source: string, packet: Uint8Array): void {
    const ps = this.sockets.get(source);
    const held = this.held.get(source);
    if (
      held?.how === 'queue' &&
      held.queue.length < MAX_QUEUED &&
      held.bytes + packet.byteLength <= MAX_QUEUED_BYTES
    ) {
      held.queue.push(packet);
      held.bytes += packet.byteLength;
      this.queued++;
      return;
    }
    if (!ps || ps.port === null || this.wgPort === 0 || held) {
      this.dropped++;
      return;
    }
    this.delivered++;
    ps.socket.send(packet, this.wgPort, '127.0.0.1');
  }

  close(): void {
    for (const ps of this.sockets.values()) ps.socket.close();
    this.sockets.clear();
  }

  private open(key: string): void {
    const socket = createSocket({ type: 'udp4' });
    const ps: PeerSocket = { socket, key: new Uint8Array(Buffer.from(key, 'base64')), port: null };
    this.sockets.set(key, ps);
    socket.on('error', () => {
      // A socket that fails is replaced at the next setPeers; until then the peer has no relay path.
      if (this.sockets.get(key) === ps) {
        this.sockets.delete(key);
        socket.close();
        this.emit('change');
      }
    });
    socket.on('message', (msg, rinfo) => {
      // Only our own WireGuard may send through the relay.
      if (rinfo.port !== this.wgPort || rinfo.address !== '127.0.0.1') return;
      if (this.opts.send(ps.key, msg)) this.forwarded++;
      else this.dropped++;
    });
    socket.bind({ address: '127.0.0.1', port: 0 }, () => {
      if (this.sockets.get(key) !== ps) return;
      const size = this.opts.bufferBytes ?? 4 * 1024 * 1024;
      try {
        socket.setRecvBufferSize(size);
        socket.setSendBufferSize(size);
      } catch {
        // Capped or refused: the defaults still work, only slower under load.
      }
      ps.port = socket.address().port;
      this.emit('change');
    });
  }
}
