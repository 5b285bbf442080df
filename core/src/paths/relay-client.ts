import { EventEmitter } from 'node:events';
import type { Duplex } from 'node:stream';
import {
  decodeRelayData,
  encodeRelayData,
  parseRelayControl,
  RELAY_MAX_FRAME_BYTES,
  RELAY_SUBPROTOCOL,
  type RelayClientMessage,
  RelayCloseCode,
  RelayFrameType,
  RelayServerMessage,
  relayAuthProof,
} from '@weft/protocol';
import WebSocket from 'ws';
import { Backoff } from '../retry/backoff.js';

// One node's WebSocket to one relay: proves the node key (relayAuthProof), refuses a relay whose
// key is not the pinned one, measures latency with WebSocket pings, and reconnects with back-off
// and jitter until closed. Packets are addressed by node key; the relay only sees WireGuard
// ciphertext. The only relay client: the engine's relay manager, and relay's tests and bench.

export interface RelayConnectionOptions {
  url: string;
  /** The relay's key from the relay map: a relay presenting another one is refused. */
  relayKey: string;
  nodePrivateKey: string;
  nodeKey: string;
  backoff?: { baseMs?: number; capMs?: number };
  /** How often to ping the relay (latency, liveness). */
  pingMs?: number;
  /** Nothing heard for this long: the connection is cut and re-made. */
  idleTimeoutMs?: number;
  /** Bytes that may wait in the socket; a send beyond it is dropped, as UDP would drop it. */
  maxQueueBytes?: number;
  /** Extra trust anchor for wss:// (a relay with a private CA). */
  ca?: string | Buffer;
}

/** The reflector's view of this node's WireGuard socket; null fields: not seen yet. */
export type ReflectedEndpoint = Omit<Extract<RelayServerMessage, { type: 'endpoint' }>, 'type'>;

export interface RelayConnectionEvents {
  /** Authenticated: packets may flow. */
  up: [reflectorPort: number];
  down: [reason: string];
  /** A packet from node key `source` (base64); `packet` is a view valid during the call. */
  packet: [source: string, packet: Uint8Array];
  /** The reflector's answer or news (see requestEndpoint). */
  endpoint: [reflected: ReflectedEndpoint];
  /** A fresh latency measurement. */
  latency: [ms: number];
  /** Every socket closed, up or not yet: what the relay said (refusals carry their reason). */
  closed: [info: { code: number; reason: string }];
}

export class RelayConnection extends EventEmitter<RelayConnectionEvents> {
  private ws: WebSocket | null = null;
  private authed = false;
  private stopped = true;
  private challenged = false;
  private retry: NodeJS.Timeout | undefined;
  private idle: NodeJS.Timeout | undefined;
  private pinger: NodeJS.Timeout | undefined;
  private pingSentAt = 0;
  private corked: Duplex | null = null;
  private readonly uncork = () => {
    this.corked?.uncork();
    this.corked = null;
  };
  private readonly backoff: Backoff;
  /** Last measured round trip, null before the first. */
  latencyMs: number | null = null;
  reflectorPort: number | null = null;
  reflected: string | null = null;
  /** Why the last attempt failed, for health and netcheck. */
  lastError: string | null = null;

  constructor(private readonly opts: RelayConnectionOptions) {
    super();
    this.backoff = new Backoff({ baseMs: opts.backoff?.baseMs ?? 250, capMs: opts.backoff?.capMs ?? 10_000 });
  }

  get connected(): boolean {
    return this.authed;
  }

  get url(): string {
    return this.opts.url;
  }

  start(): void {
    if (!this.stopped) return;
    this.stopped = false;
    this.connect();
  }

  close(): void {
    this.stopped = true;
    clearTimeout(this.retry);
    clearTimeout(this.idle);
    clearInterval(this.pinger);
    const ws = this.ws;
    this.ws = null;
    if (this.authed) {
      this.authed = false;
      this.emit('down', 'closed');
    }
    ws?.terminate();
  }

  /** Sends one packet to node key `destination` (raw 32 bytes); false when dropped. */
  send(destination: Uint8Array, packet: Uint8Array): boolean {
    const ws = this.ws;
    if (!this.authed || ws === null) return false;
    if (ws.bufferedAmount > (this.opts.maxQueueBytes ?? 4 * 1024 * 1024)) return false;
    // Hold the socket's writes until the event loop has read what is waiting on the proxy's
    // sockets: the frames of one burst leave in one writev instead of one system call each.
    if (this.corked === null) {
      const socket = (ws as unknown as { _socket?: Duplex })._socket;
      if (socket) {
        this.corked = socket;
        socket.cork();
        setImmediate(this.uncork);
      }
    }
    ws.send(encodeRelayData(RelayFrameType.send, destination, packet));
    return true;
  }

  /** Asks the relay where it sees our WireGuard socket; the answer comes as an 'endpoint' event. */
  requestEndpoint(): boolean {
    const ws = this.ws;
    if (!this.authed || ws === null) return false;
    this.sendControl(ws, { type: 'endpointRequest' });
    return true;
  }

  private connect(): void {
    const ws = new WebSocket(this.opts.url, RELAY_SUBPROTOCOL, {
      maxPayload: RELAY_MAX_FRAME_BYTES,
      perMessageDeflate: false,
      handshakeTimeout: 10_000,
      followRedirects: false,
      ...(this.opts.ca ? { ca: this.opts.ca } : {}),
    });
    this.ws = ws;
    this.challenged = false;
    this.heard(ws);
    ws.on('message', (data, isBinary) => {
      if (this.ws !== ws) return;
      this.heard(ws);
      if (isBinary) this.onData(ws, data as Buffer);
      else this.onControl(ws, (data as Buffer).toString('utf8'));
    });
    ws.on('ping', () => this.heard(ws));
    ws.on('pong', () => {
      this.heard(ws);
      if (this.pingSentAt === 0) return;
      // Smoothed, so one slow answer (a busy event loop) does not move the home region.
      const sample = Math.max(0.01, performance.now() - this.pingSentAt);
      this.latencyMs = this.latencyMs === null ? sample : 0.7 * this.latencyMs + 0.3 * sample;
      this.pingSentAt = 0;
      this.emit('latency', this.latencyMs);
    });
    ws.on('error', (err) => {
      this.lastError = err.message;
    });
    ws.on('close', (code, reason) => this.onClose(ws, code, reason.toString()));
  }

  private onControl(ws: WebSocket, text: string): void {
    const msg = parseRelayControl(RelayServerMessage, text);
    const expected = !this.challenged ? 'challenge' : this.authed ? 'endpoint' : 'authOk';
    if (msg === null || msg.type !== expected) {
      ws.close(RelayCloseCode.protocolError, 'unexpected control message');
      return;
    }
    if (msg.type === 'challenge') {
      if (msg.relayKey !== this.opts.relayKey) {
        this.lastError = `relay presented key ${msg.relayKey}, not the pinned ${this.opts.relayKey}`;
        ws.close(RelayCloseCode.protocolError, 'unexpected relay key');
        return;
      }
      this.challenged = true;
      const proof = relayAuthProof({
        nodePrivateKey: this.opts.nodePrivateKey,
        nodeKey: this.opts.nodeKey,
        relayKey: msg.relayKey,
        challenge: msg.challenge,
      });
      this.sendControl(ws, { type: 'auth', nodeKey: this.opts.nodeKey, proof });
    } else if (msg.type === 'authOk') {
      this.authed = true;
      this.lastError = null;
      this.backoff.reset();
      this.reflectorPort = msg.reflectorPort;
      this.requestEndpoint();
      this.ping(ws);
      clearInterval(this.pinger);
      this.pinger = setInterval(() => this.ping(ws), this.opts.pingMs ?? 3_000);
      this.emit('up', msg.reflectorPort);
    } else {
      // "Not seen" after a relay restart says nothing about our mapping: keep the last one.
      if (msg.endpoint !== null) this.reflected = msg.endpoint;
      this.emit('endpoint', { endpoint: msg.endpoint, observedAt: msg.observedAt });
    }
  }

  private onData(ws: WebSocket, data: Buffer): void {
    const frame = decodeRelayData(data);
    if (!this.authed || frame === null || frame.type !== RelayFrameType.recv) {
      ws.close(RelayCloseCode.protocolError, 'unexpected data frame');
      return;
    }
    const source = Buffer.from(frame.key.buffer, frame.key.byteOffset, frame.key.length).toString('base64');
    this.emit('packet', source, frame.packet);
  }

  private ping(ws: WebSocket): void {
    if (ws.readyState !== WebSocket.OPEN) return;
    // A ping still unanswered at the next one: the path is gone (e.g. our NAT forgot the TCP
    // mapping, which no packet tells us about). Reconnect rather than wait for TCP to give up.
    if (this.pingSentAt !== 0) {
      this.lastError = `no answer to a ping for ${Math.round(performance.now() - this.pingSentAt)} ms`;
      ws.terminate();
      return;
    }
    this.pingSentAt = performance.now();
    ws.ping();
  }

  private onClose(ws: WebSocket, code: number, reason: string): void {
    if (this.ws !== ws) return;
    this.ws = null;
    clearTimeout(this.idle);
    clearInterval(this.pinger);
    this.pingSentAt = 0;
    const wasUp = this.authed;
    this.authed = false;
    this.latencyMs = null;
    if (code === RelayCloseCode.replaced) this.lastError = 'another connection uses this node key';
    else if (code === RelayCloseCode.notMember)
      this.lastError = `the relay does not serve this node: ${reason}`;
    else if (code !== 1000 && code !== 1005)
      this.lastError ??= `closed with ${code}${reason ? ` ${reason}` : ''}`;
    this.emit('closed', { code, reason });
    if (wasUp) this.emit('down', this.lastError ?? `closed with ${code}`);
    if (this.stopped) return;
    // Replaced means another process holds this key; retry slowly rather than fight over it.
    const delay = code === RelayCloseCode.replaced ? 30_000 : this.backoff.next();
    this.retry = setTimeout(() => {
      if (!this.stopped) this.connect();
    }, delay);
  }

  private heard(ws: WebSocket): void {
    clearTimeout(this.idle);
    this.idle = setTimeout(() => {
      this.lastError = 'relay stopped answering';
      ws.terminate();
    }, this.opts.idleTimeoutMs ?? 20_000);
  }

  private sendControl(ws: WebSocket, msg: RelayClientMessage): void {
    if (ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify(msg));
  }
}
