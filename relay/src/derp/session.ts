import { randomBytes } from 'node:crypto';
import type { Socket } from 'node:net';
import {
  DERP_KEY_BYTES,
  DERP_MAGIC,
  DERP_MAX_CLIENT_INFO_BYTES,
  DERP_MAX_PACKET_BYTES,
  DERP_NONCE_BYTES,
  DERP_PROTOCOL_VERSION,
  DerpClientInfo,
  DerpFrameType,
  DerpPeerGoneReason,
  type DerpServerInfo,
} from '@weft/protocol';
import { type Connection, type RelayLimits, type Transport, WebSocketTransport } from '../connection.js';
import type { ForwardingTable, Peer, Wire } from '../forwarding.js';
import { TokenBucket } from '../token-bucket.js';
import { openBox, sealBox } from './box.js';
import {
  type DerpFrame,
  DerpFrameError,
  DerpFrameReader,
  encodeDerpFrame,
  writeDerpHeader,
} from './frames.js';

// One DERP client (an official Tailscale client) on weft-relay: login, then its frames. It is a
// Peer of the same forwarding table as Weft's own clients, under the same bounds (Connection).

export interface DerpContext {
  /** The relay's key pair, raw: DERP's server key. */
  privateKey: Uint8Array;
  publicKey: Uint8Array;
  table: ForwardingTable;
  limits: RelayLimits;
  log: (line: string) => void;
  /** Called once the client has logged in and is served (it is no longer pending). */
  onLogin: () => void;
}

/** PeerGone "not here" answers per second and burst, as Tailscale's server limits them. */
const NOT_HERE_PER_SECOND = 3;

/** A DERP byte stream on a raw (upgraded) socket. */
export class DerpSocketTransport implements Transport {
  constructor(
    private readonly socket: Socket,
    private readonly pinger: () => void,
  ) {}
  get open(): boolean {
    return !this.socket.destroyed && this.socket.writable;
  }
  get bufferedAmount(): number {
    return this.socket.writableLength;
  }
  send(data: Uint8Array | string): void {
    this.socket.write(data);
  }
  pause(): void {
    this.socket.pause();
  }
  resume(): void {
    this.socket.resume();
  }
  ping(): void {
    this.pinger();
  }
  close(_code: number, reason: string): void {
    if (this.open) this.socket.end(encodeDerpFrame(DerpFrameType.health, Buffer.from(reason)));
  }
  terminate(): void {
    this.socket.destroy();
  }
}

/** A DERP byte stream in WebSocket binary messages (subprotocol `derp`): says why before closing. */
export class DerpWebSocketTransport extends WebSocketTransport {
  override close(code: number, reason: string): void {
    if (!this.open) return;
    this.ws.send(encodeDerpFrame(DerpFrameType.health, Buffer.from(reason)));
    super.close(code, reason);
  }
}

export class DerpSession implements Peer {
  readonly wire = 'derp';
  private readonly reader = new DerpFrameReader(() =>
    this.conn.state === 'pending' ? DERP_MAX_CLIENT_INFO_BYTES : DERP_KEY_BYTES + DERP_MAX_PACKET_BYTES,
  );
  private canAckPings = false;
  private pingPayload: Buffer | null = null;
  private readonly notHere: TokenBucket;
  /** The client's NotePreferred: whether this relay is its home. */
  preferred = false;

  constructor(
    readonly conn: Connection,
    private readonly ctx: DerpContext,
  ) {
    this.notHere = new TokenBucket(NOT_HERE_PER_SECOND, NOT_HERE_PER_SECOND);
    this.write(encodeDerpFrame(DerpFrameType.serverKey, DERP_MAGIC, ctx.publicKey));
  }

  /** Bytes from the client, in any chunking. */
  onData(chunk: Buffer): void {
    this.reader.push(chunk);
    try {
      for (let f = this.reader.next(); f !== null; f = this.reader.next()) {
        // Frames already read when the connection was refused, replaced or closed are ignored.
        if (!this.conn.transport.open || this.conn.state === 'replaced') return;
        this.conn.charge(f.frame.length);
        const error = this.onFrame(f);
        if (error !== null) {
          this.fail(error);
          return;
        }
      }
    } catch (err) {
      if (!(err instanceof DerpFrameError)) throw err;
      this.fail(err.message);
    }
  }

  deliver(source: Uint8Array, packet: Uint8Array, frame: Buffer, from: Wire): boolean {
    if (from === 'derp') {
      // A SendPacket (dst ‖ packet) becomes a RecvPacket (src ‖ packet) of the same length.
      frame[0] = DerpFrameType.recvPacket;
      frame.set(source, 5);
      return this.conn.send(frame, frame.length);
    }
    const header = Buffer.allocUnsafe(5 + DERP_KEY_BYTES);
    writeDerpHeader(header, DerpFrameType.recvPacket, DERP_KEY_BYTES + packet.length);
    header.set(source, 5);
    return this.conn.send([header, packet], header.length + packet.length);
  }

  end(why: 'replaced' | 'notMember', reason: string): void {
    if (why === 'replaced') this.conn.state = 'replaced';
    this.fail(reason);
  }

  peerGone(key: Uint8Array): void {
    this.sendPeerGone(key, DerpPeerGoneReason.disconnected);
  }

  /** Tells the client the relay restarts (before it closes): reconnect in 1 s, try for 30 s. */
  restarting(): void {
    const payload = Buffer.alloc(8);
    payload.writeUInt32BE(1_000, 0);
    payload.writeUInt32BE(30_000, 4);
    this.write(encodeDerpFrame(DerpFrameType.restarting, payload));
  }

  /** The liveness check (Connection.sweep): a Ping to clients that answer, else a KeepAlive. */
  ping(): void {
    if (!this.canAckPings) {
      this.write(encodeDerpFrame(DerpFrameType.keepAlive));
      this.conn.ponged();
      return;
    }
    this.pingPayload = randomBytes(8);
    this.write(encodeDerpFrame(DerpFrameType.ping, this.pingPayload));
  }

  /** Handles one frame; returns why the connection must end, or null. */
  private onFrame(f: DerpFrame): string | null {
    if (this.conn.state === 'pending') {
      return f.type === DerpFrameType.clientInfo
        ? this.login(f.payload)
        : 'the first frame must be ClientInfo';
    }
    switch (f.type) {
      case DerpFrameType.sendPacket: {
        if (f.payload.length < DERP_KEY_BYTES) return 'short SendPacket frame';
        const destination = f.payload.subarray(0, DERP_KEY_BYTES);
        const result = this.ctx.table.forward(this, destination, f.payload.subarray(DERP_KEY_BYTES), f.frame);
        if (result === 'noPeer' && this.notHere.tryTake(1)) {
          this.sendPeerGone(destination, DerpPeerGoneReason.notHere);
        }
        return null;
      }
      case DerpFrameType.notePreferred:
        if (f.payload.length !== 1) return 'NotePreferred must be 1 byte';
        this.preferred = f.payload[0] !== 0;
        return null;
      case DerpFrameType.ping:
        if (f.payload.length !== 8) return 'Ping must be 8 bytes';
        this.conn.send(encodeDerpFrame(DerpFrameType.pong, f.payload), 13);
        return null;
      case DerpFrameType.pong:
        if (this.pingPayload?.equals(f.payload)) {
          this.pingPayload = null;
          this.conn.ponged();
        }
        return null;
      case DerpFrameType.forwardPacket:
      case DerpFrameType.watchConns:
      case DerpFrameType.closePeer:
        return 'mesh frames are refused: this relay has no mesh';
      default:
        // KeepAlive, and frame types from newer clients: ignored, as Tailscale's server does.
        return null;
    }
  }

  /** Checks the ClientInfo and serves its key; returns why not, or null. */
  private login(payload: Buffer): string | null {
    if (payload.length < DERP_KEY_BYTES + DERP_NONCE_BYTES) return 'short ClientInfo';
    const clientKey = payload.subarray(0, DERP_KEY_BYTES);
    const nodeKey = Buffer.from(clientKey).toString('base64');
    // A stranger's claim is refused before the Diffie-Hellman, so it costs the relay no X25519.
    const stranger = this.ctx.table.refusal(nodeKey);
    if (stranger !== null) return stranger;
    const opened = openBox(this.ctx.privateKey, clientKey, payload.subarray(DERP_KEY_BYTES));
    if (opened === null) return 'ClientInfo is not sealed by that node key';
    let json: unknown;
    try {
      json = JSON.parse(Buffer.from(opened).toString('utf8'));
    } catch {
      return 'ClientInfo is not JSON';
    }
    const info = DerpClientInfo.safeParse(json);
    if (!info.success) return 'ClientInfo is malformed';
    const refusal = this.ctx.table.admit(nodeKey, this);
    if (refusal !== null) return refusal;
    this.conn.authenticate(nodeKey);
    this.ctx.onLogin();
    this.canAckPings = info.data.CanAckPings === true;
    const serverInfo: DerpServerInfo = {
      version: DERP_PROTOCOL_VERSION,
      TokenBucketBytesPerSecond: this.ctx.limits.bytesPerSecond,
      TokenBucketBytesBurst: this.ctx.limits.burstBytes,
    };
    const sealed = sealBox(this.ctx.privateKey, clientKey, Buffer.from(JSON.stringify(serverInfo)));
    this.write(encodeDerpFrame(DerpFrameType.serverInfo, sealed));
    return null;
  }

  private sendPeerGone(key: Uint8Array, reason: number): void {
    this.conn.send(encodeDerpFrame(DerpFrameType.peerGone, key, new Uint8Array([reason])), 38);
  }

  /** Login and liveness frames: small, and owed to the client even when its queue is full. */
  private write(frame: Buffer): void {
    if (this.conn.transport.open) this.conn.transport.send(frame);
  }

  private fail(reason: string): void {
    this.ctx.log(
      `derp: ${this.conn.nodeKey ?? 'unauthenticated'} from ${this.conn.remote}: refused: ${reason}`,
    );
    this.conn.keyBytes = null;
    this.conn.transport.close(4000, reason);
  }
}
