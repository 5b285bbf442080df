import { EventEmitter } from 'node:events';
import {
  decodeRelayData,
  encodeRelayData,
  parseRelayControl,
  publicKeyOf,
  RELAY_MAX_FRAME_BYTES,
  RELAY_SUBPROTOCOL,
  type RelayClientMessage,
  RelayCloseCode,
  RelayFrameType,
  RelayServerMessage,
  relayAuthProof,
} from '@weft/protocol';
import { WebSocket } from 'ws';

export interface RelayClientOptions {
  /** ws://host:port/relay or wss://host:port/relay */
  url: string;
  /** The node's private key (base64): the connection is authenticated as its public key. */
  privateKey: string;
  /** When set, a relay presenting another key is refused (its key comes from the relay map). */
  relayKey?: string;
  /** Extra trust anchor for wss:// (a relay with a private CA). */
  ca?: string | Buffer;
  backoff?: { initialMs?: number; maxMs?: number };
  /** Bytes that may wait in the socket's queue; sends beyond it are dropped, like UDP. */
  maxQueueBytes?: number;
  /** Nothing heard from the relay (not even its ping) for this long: reconnect. */
  idleTimeoutMs?: number;
}

export interface ReflectedEndpoint {
  endpoint: string | null;
  observedAt: string | null;
}

export interface RelayClientEvents {
  /** Authenticated: packets may flow. */
  connected: [info: { relayKey: string; reflectorPort: number }];
  disconnected: [info: { code: number; reason: string }];
  /** A packet from `source` (a node key in base64). `packet` is a view, valid during the call. */
  packet: [source: string, packet: Uint8Array];
  endpoint: [reflected: ReflectedEndpoint];
  /** Another connection took this node key over; this client stops instead of fighting it. */
  replaced: [];
}

/**
 * A node's connection to one relay: connects, proves its node key, keeps reconnecting with
 * exponential back-off and jitter, and sends and receives packets addressed by node key.
 */
export class RelayClient extends EventEmitter<RelayClientEvents> {
  readonly nodeKey: string;
  private ws: WebSocket | null = null;
  /** The key the current relay presented in its challenge. */
  private relayKey = '';
  private authenticated = false;
  private stopped = true;
  private attempt = 0;
  private retryTimer: NodeJS.Timeout | undefined;
  private idleTimer: NodeJS.Timeout | undefined;
  private readonly initialBackoffMs: number;
  private readonly maxBackoffMs: number;
  private readonly maxQueueBytes: number;
  private readonly idleTimeoutMs: number;

  constructor(private readonly opts: RelayClientOptions) {
    super();
    this.nodeKey = publicKeyOf(opts.privateKey);
    this.initialBackoffMs = opts.backoff?.initialMs ?? 250;
    this.maxBackoffMs = opts.backoff?.maxMs ?? 15_000;
    this.maxQueueBytes = opts.maxQueueBytes ?? 4 * 1024 * 1024;
    // Three of the relay's default 15 s ping intervals.
    this.idleTimeoutMs = opts.idleTimeoutMs ?? 45_000;
  }

  get connected(): boolean {
    return this.authenticated;
  }

  start(): void {
    if (!this.stopped) return;
    this.stopped = false;
    this.connect();
  }

  async close(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.retryTimer);
    clearTimeout(this.idleTimer);
    const ws = this.ws;
    if (ws === null || ws.readyState === WebSocket.CLOSED) return;
    const closed = new Promise((r) => ws.once('close', r));
    ws.close(1000, 'bye');
    await Promise.race([closed, new Promise((r) => setTimeout(r, 1000))]);
    ws.terminate();
  }

  /** Sends a packet to a node key; false when not connected or the queue is full (dropped). */
  send(destination: string | Uint8Array, packet: Uint8Array): boolean {
    const ws = this.ws;
    if (!this.authenticated || ws === null || ws.bufferedAmount > this.maxQueueBytes) return false;
    const key = typeof destination === 'string' ? Buffer.from(destination, 'base64') : destination;
    ws.send(encodeRelayData(RelayFrameType.send, key, packet));
    return true;
  }

  /** Asks for the reflected endpoint; the answer comes as an 'endpoint' event. */
  requestEndpoint(): boolean {
    if (!this.authenticated) return false;
    this.sendControl({ type: 'endpointRequest' });
    return true;
  }

  private connect(): void {
    const ws = new WebSocket(this.opts.url, RELAY_SUBPROTOCOL, {
      maxPayload: RELAY_MAX_FRAME_BYTES,
      perMessageDeflate: false,
      handshakeTimeout: 10_000,
      ...(this.opts.ca ? { ca: this.opts.ca } : {}),
    });
    this.ws = ws;
    this.relayKey = '';
    this.heard();
    ws.on('message', (data, isBinary) => {
      this.heard();
      if (isBinary) this.onData(ws, data as Buffer);
      else this.onControl(ws, data as Buffer);
    });
    ws.on('ping', () => this.heard());
    // Every failure also ends in 'close', which schedules the retry.
    ws.on('error', () => {});
    ws.on('close', (code, reason) => this.onClose(ws, code, reason.toString()));
  }

  private onControl(ws: WebSocket, data: Buffer): void {
    const msg = parseRelayControl(RelayServerMessage, data.toString('utf8'));
    // The relay must challenge once, then confirm once; anything else is a broken relay.
    const expected = this.relayKey === '' ? 'challenge' : this.authenticated ? 'endpoint' : 'authOk';
    if (msg === null || msg.type !== expected) {
      ws.close(RelayCloseCode.protocolError, 'unexpected control message');
    } else if (msg.type === 'challenge') {
      if (this.opts.relayKey !== undefined && msg.relayKey !== this.opts.relayKey) {
        ws.close(RelayCloseCode.protocolError, 'unexpected relay key');
        return;
      }
      this.relayKey = msg.relayKey;
      const proof = relayAuthProof({
        nodePrivateKey: this.opts.privateKey,
        nodeKey: this.nodeKey,
        relayKey: msg.relayKey,
        challenge: msg.challenge,
      });
      this.sendControl({ type: 'auth', nodeKey: this.nodeKey, proof });
    } else if (msg.type === 'authOk') {
      this.authenticated = true;
      this.attempt = 0;
      this.emit('connected', { relayKey: this.relayKey, reflectorPort: msg.reflectorPort });
    } else {
      this.emit('endpoint', { endpoint: msg.endpoint, observedAt: msg.observedAt });
    }
  }

  private onData(ws: WebSocket, data: Buffer): void {
    const frame = decodeRelayData(data);
    if (!this.authenticated || frame === null || frame.type !== RelayFrameType.recv) {
      ws.close(RelayCloseCode.protocolError, 'unexpected data frame');
      return;
    }
    const source = Buffer.from(frame.key.buffer, frame.key.byteOffset, frame.key.length);
    this.emit('packet', source.toString('base64'), frame.packet);
  }

  private onClose(ws: WebSocket, code: number, reason: string): void {
    if (this.ws !== ws) return;
    this.ws = null;
    this.authenticated = false;
    clearTimeout(this.idleTimer);
    this.emit('disconnected', { code, reason });
    if (code === RelayCloseCode.replaced) {
      this.stopped = true;
      this.emit('replaced');
    }
    if (this.stopped) return;
    const ceiling = Math.min(this.maxBackoffMs, this.initialBackoffMs * 2 ** this.attempt++);
    // Jitter between half and all of the ceiling, so nodes cut off together do not return together.
    this.retryTimer = setTimeout(() => this.connect(), ceiling * (0.5 + Math.random() / 2));
  }

  private heard(): void {
    clearTimeout(this.idleTimer);
    this.idleTimer = setTimeout(() => this.ws?.terminate(), this.idleTimeoutMs);
  }

  private sendControl(msg: RelayClientMessage): void {
    this.ws?.send(JSON.stringify(msg));
  }
}
