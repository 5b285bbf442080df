import {
  createServer as createHttpServer,
  type IncomingMessage,
  type Server,
  type ServerResponse,
} from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo, Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import {
  DERP_FAST_START_HEADER,
  DERP_KEY_BYTES,
  DERP_MAX_PACKET_BYTES,
  DERP_PATH,
  DERP_PROTOCOL_VERSION,
  DERP_WS_SUBPROTOCOL,
  decodeRelayData,
  encodeRelayData,
  type KeyPair,
  parseRelayControl,
  RELAY_MAX_FRAME_BYTES,
  RELAY_PATH,
  RELAY_SUBPROTOCOL,
  RelayClientMessage,
  RelayCloseCode,
  RelayFrameType,
  type RelayServerMessage,
  readdressRelayData,
  verifyRelayAuthProof,
} from '@weft/protocol';
import { type WebSocket, WebSocketServer } from 'ws';
import {
  Connection,
  DEFAULT_RELAY_LIMITS,
  QueueBudget,
  type RelayLimits,
  WebSocketTransport,
} from './connection.js';
import { DerpSession, DerpSocketTransport, DerpWebSocketTransport } from './derp/session.js';
import { ForwardingTable, type Peer, type Wire } from './forwarding.js';
import { Membership } from './membership.js';
import type { Observation, ObservationStore } from './observations.js';
import { sourceKey } from './source-key.js';

export interface RelayServerOptions {
  /** The relay's key: nodes prove their own key against it, and it is the reflector's key. */
  keyPair: KeyPair;
  /** Told to each node after auth, so it can add the reflector as a WireGuard peer. */
  reflectorPort: number;
  observations: ObservationStore;
  /** Whose node keys are served; absent: every key (Membership.open()). */
  membership?: Membership;
  tls?: { cert: string | Buffer; key: string | Buffer };
  limits?: Partial<RelayLimits>;
  log?: (line: string) => void;
}

export interface RelayStats {
  connections: number;
  /** Open connections by protocol (DERP counts plain and over WebSocket). */
  connectionsByWire: Record<Wire, number>;
  authenticated: number;
  /** Bytes queued in user space across all connections: what the bounds keep finite. */
  queuedBytes: number;
  forwardedPackets: number;
  forwardedBytes: number;
  /** The same by the wire each packet arrived on. */
  forwarded: Record<Wire, { packets: number; bytes: number }>;
  /** Packets for a node key with no connection here. */
  droppedNoPeer: number;
  /** Packets dropped because the destination's queue was full. */
  droppedQueueFull: number;
  /** Packets dropped because all queues together were at `maxTotalQueueBytes`. */
  droppedOverBudget: number;
  /** Upgrades refused because their source already had `maxConnectionsPerSource`. */
  refusedPerSource: number;
  slowReadersDropped: number;
  /** Logged-in DERP clients (official Tailscale clients), and how many said this is their home. */
  derpClients: number;
  derpHome: number;
}

/** A Weft relay client in the forwarding table. */
class WeftPeer implements Peer {
  readonly wire = 'weft';
  constructor(readonly conn: Connection<WebSocketTransport>) {}

  deliver(source: Uint8Array, packet: Uint8Array, frame: Buffer, from: Wire): boolean {
    if (from === 'derp') {
      const message = encodeRelayData(RelayFrameType.recv, source, packet);
      return this.conn.send(message, message.length);
    }
    readdressRelayData(frame, RelayFrameType.recv, source);
    return this.conn.send(frame, frame.length);
  }

  end(why: 'replaced' | 'notMember', reason: string): void {
    if (why === 'replaced') this.conn.state = 'replaced';
    this.conn.keyBytes = null;
    this.conn.transport.close(
      why === 'replaced' ? RelayCloseCode.replaced : RelayCloseCode.notMember,
      reason,
    );
  }
}

/** DERP over WebSocket carries a byte stream; one message holds at most a few frames. */
const DERP_WS_MAX_MESSAGE_BYTES = 4 * (5 + DERP_KEY_BYTES + DERP_MAX_PACKET_BYTES);

/**
 * The relay: authenticates each connection to a node key, then forwards packets by destination
 * key, tagging each with its proven source key. It speaks Weft's relay protocol (WebSocket at
 * /relay) and DERP (/derp, for the official Tailscale clients) into one forwarding table. One
 * process, one event loop; every per-node resource (queue, inbound rate, pending handshakes) is
 * bounded the same way for both protocols, so no node can starve others.
 */
export class RelayServer {
  private readonly http: Server;
  private readonly wss: WebSocketServer;
  private readonly derpWss: WebSocketServer;
  private readonly limits: RelayLimits;
  private readonly connections = new Map<Connection, WeftPeer | DerpSession>();
  private readonly table: ForwardingTable;
  private pending = 0;
  private readonly perSource = new Map<string, number>();
  private readonly budget: QueueBudget;
  private readonly keyBytes: { privateKey: Uint8Array; publicKey: Uint8Array };
  private readonly sweepTimer: NodeJS.Timeout;
  private readonly unsubscribe: () => void;
  private readonly counts = { slowReadersDropped: 0, refusedPerSource: 0 };

  constructor(private readonly opts: RelayServerOptions) {
    this.limits = { ...DEFAULT_RELAY_LIMITS, ...opts.limits };
    this.budget = new QueueBudget(this.limits.maxTotalQueueBytes);
    this.table = new ForwardingTable(opts.membership ?? Membership.open());
    this.keyBytes = {
      privateKey: new Uint8Array(Buffer.from(opts.keyPair.privateKey, 'base64')),
      publicKey: new Uint8Array(Buffer.from(opts.keyPair.publicKey, 'base64')),
    };
    const handler = (req: IncomingMessage, res: ServerResponse) => this.onRequest(req, res);
    this.http = opts.tls
      ? createHttpsServer({ cert: opts.tls.cert, key: opts.tls.key }, handler)
      : createHttpServer(handler);
    this.http.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) =>
      this.onUpgrade(req, socket, head),
    );
    this.wss = upgradeOnlyWss(RELAY_MAX_FRAME_BYTES, RELAY_SUBPROTOCOL);
    this.derpWss = upgradeOnlyWss(DERP_WS_MAX_MESSAGE_BYTES, DERP_WS_SUBPROTOCOL);
    this.sweepTimer = setInterval(() => this.sweep(), this.limits.sweepIntervalMs);
    this.sweepTimer.unref();
    this.unsubscribe = opts.observations.onChange((nodeKey, observation) => {
      const conn = this.weftConnection(nodeKey);
      if (conn) this.sendEndpoint(conn, observation);
    });
  }

  listen(host: string, port: number): Promise<AddressInfo> {
    return new Promise((resolve, reject) => {
      this.http.once('error', reject);
      this.http.listen(port, host, () => {
        this.http.off('error', reject);
        resolve(this.http.address() as AddressInfo);
      });
    });
  }

  stats(): RelayStats {
    let queuedBytes = 0;
    let derpClients = 0;
    let derpHome = 0;
    const connectionsByWire = { weft: 0, derp: 0 };
    for (const [c, peer] of this.connections) {
      queuedBytes += c.queuedBytes;
      connectionsByWire[peer.wire]++;
      if (peer instanceof DerpSession && c.state === 'authenticated') {
        derpClients++;
        if (peer.preferred) derpHome++;
      }
    }
    const { forwarded } = this.table.stats;
    return {
      connections: this.connections.size,
      connectionsByWire,
      derpClients,
      derpHome,
      authenticated: this.table.size,
      queuedBytes,
      ...this.table.stats,
      forwardedPackets: forwarded.weft.packets + forwarded.derp.packets,
      forwardedBytes: forwarded.weft.bytes + forwarded.derp.bytes,
      ...this.counts,
      droppedOverBudget: this.budget.dropped,
    };
  }

  /**
   * Says goodbye to every node (Weft: 1001; DERP: Restarting, so Tailscale clients come back
   * soon), gives them a second, then cuts what is left.
   */
  async close(): Promise<void> {
    clearInterval(this.sweepTimer);
    this.unsubscribe();
    this.table.close();
    const closed = [...this.connections.keys()].map((c) => c.closed);
    for (const [conn, peer] of this.connections) {
      if (peer instanceof DerpSession) peer.restarting();
      conn.transport.close(1001, 'relay shutting down');
    }
    let grace: NodeJS.Timeout | undefined;
    await Promise.race([Promise.all(closed), new Promise((r) => (grace = setTimeout(r, 1000)))]);
    clearTimeout(grace);
    for (const c of this.connections.keys()) c.transport.terminate();
    const httpClosed = new Promise((r) => this.http.close(r));
    this.http.closeAllConnections();
    await httpClosed;
  }

  private onRequest(req: IncomingMessage, res: ServerResponse): void {
    const path = (req.url ?? '').split('?')[0];
    if (path === '/derp/probe' || path === '/derp/latency-check') {
      // Clients without UDP time these instead of STUN; browsers too (hence the CORS header).
      const ok = req.method === 'GET' || req.method === 'HEAD';
      res.writeHead(ok ? 200 : 405, { 'access-control-allow-origin': '*', 'content-type': 'text/plain' });
      res.end(ok ? '' : 'bogus probe method\n');
      return;
    }
    const [status, body] =
      path === '/healthz'
        ? [200, 'ok\n']
        : path === RELAY_PATH
          ? [426, 'WebSocket upgrade required\n']
          : path === DERP_PATH
            ? [426, 'DERP requires connection upgrade\n']
            : [404, 'not found\n'];
    res.writeHead(status, { 'content-type': 'text/plain' }).end(body);
  }

  private onUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void {
    socket.on('error', () => socket.destroy());
    const remote = req.socket.remoteAddress ?? '?';
    const source = sourceKey(remote);
    const fromSource = this.perSource.get(source) ?? 0;
    const offered = (req.headers['sec-websocket-protocol'] ?? '').split(',').map((p) => p.trim());
    const path = (req.url ?? '').split('?')[0];
    const upgrade = (req.headers.upgrade ?? '').toLowerCase();
    // Tailscale's clients ask `Upgrade: DERP`; browsers `Upgrade: websocket` with subprotocol
    // `derp`; very old clients said websocket but spoke raw DERP, so no subprotocol means raw.
    const kind =
      path === RELAY_PATH
        ? 'weft'
        : path !== DERP_PATH
          ? null
          : upgrade === 'websocket' && offered.includes(DERP_WS_SUBPROTOCOL)
            ? 'derpWs'
            : upgrade === 'derp' || upgrade === 'websocket'
              ? 'derp'
              : null;
    const refusal =
      kind === null
        ? path === DERP_PATH
          ? '426 Upgrade Required'
          : '404 Not Found'
        : kind === 'weft' && !offered.includes(RELAY_SUBPROTOCOL)
          ? '400 Bad Request'
          : this.pending >= this.limits.maxPendingConnections
            ? '503 Service Unavailable'
            : fromSource >= this.limits.maxConnectionsPerSource
              ? '429 Too Many Requests'
              : null;
    if (refusal !== null || kind === null) {
      if (refusal?.startsWith('429')) this.counts.refusedPerSource++;
      socket.end(`HTTP/1.1 ${refusal}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n`);
      return;
    }
    // Counted from the upgrade until the socket closes, however the upgrade ends.
    this.perSource.set(source, fromSource + 1);
    socket.once('close', () => {
      const n = (this.perSource.get(source) ?? 1) - 1;
      if (n > 0) this.perSource.set(source, n);
      else this.perSource.delete(source);
    });
    if (kind === 'weft') {
      this.wss.handleUpgrade(req, socket, head, (ws) => this.acceptWeft(ws, socket, remote));
    } else if (kind === 'derpWs') {
      this.derpWss.handleUpgrade(req, socket, head, (ws) => this.acceptDerpWs(ws, socket, remote));
    } else {
      this.acceptDerp(req, socket as Socket, head, remote);
    }
  }

  private track(conn: Connection, peer: WeftPeer | DerpSession): void {
    this.connections.set(conn, peer);
    this.budget.connections++;
    this.pending++;
  }

  private acceptWeft(ws: WebSocket, socket: Duplex, remote: string): void {
    const conn = new Connection(new WebSocketTransport(ws), socket, remote, this.limits, this.budget);
    const peer = new WeftPeer(conn);
    this.track(conn, peer);
    ws.on('message', (data, isBinary) => this.onMessage(peer, data as Buffer, isBinary));
    ws.on('pong', () => conn.ponged());
    // ws reports protocol violations (oversized or malformed frames) here and closes the
    // connection itself (1009 / 1002); only this connection is affected.
    ws.on('error', (err) => this.log(conn, `closed: ${err.message}`));
    ws.on('close', () => this.onClose(conn, peer));
    this.sendControl(conn, {
      type: 'challenge',
      relayKey: this.opts.keyPair.publicKey,
      challenge: conn.challenge,
    });
  }

  private acceptDerp(req: IncomingMessage, socket: Socket, head: Buffer, remote: string): void {
    if (req.headers[DERP_FAST_START_HEADER] !== '1') {
      socket.write(
        'HTTP/1.1 101 Switching Protocols\r\nUpgrade: DERP\r\nConnection: Upgrade\r\n' +
          `Derp-Version: ${DERP_PROTOCOL_VERSION}\r\n` +
          `Derp-Public-Key: ${Buffer.from(this.keyBytes.publicKey).toString('hex')}\r\n\r\n`,
      );
    }
    socket.setNoDelay(true);
    let session: DerpSession | undefined;
    const transport = new DerpSocketTransport(socket, () => session?.ping());
    const conn = new Connection(transport, socket, remote, this.limits, this.budget);
    session = this.derpSession(conn);
    const s = session;
    socket.on('data', (chunk: Buffer) => s.onData(chunk));
    socket.on('end', () => socket.end());
    socket.once('close', () => this.onClose(conn, s));
    if (head.length > 0) s.onData(head);
  }

  private acceptDerpWs(ws: WebSocket, socket: Duplex, remote: string): void {
    const conn = new Connection(new DerpWebSocketTransport(ws), socket, remote, this.limits, this.budget);
    const session = this.derpSession(conn);
    ws.on('message', (data, isBinary) => {
      if (isBinary) session.onData(data as Buffer);
      else ws.close(1003, 'DERP over WebSocket is binary');
    });
    ws.on('pong', () => conn.ponged());
    ws.on('error', (err) => this.log(conn, `closed: ${err.message}`));
    ws.on('close', () => this.onClose(conn, session));
  }

  private derpSession(conn: Connection): DerpSession {
    const session = new DerpSession(conn, {
      ...this.keyBytes,
      table: this.table,
      limits: this.limits,
      log: (line) => this.opts.log?.(`relay: ${line}`),
      onLogin: () => this.pending--,
    });
    this.track(conn, session);
    return session;
  }

  private onMessage(peer: WeftPeer, data: Buffer, isBinary: boolean): void {
    const conn = peer.conn;
    // Frames that were already read when the connection was refused or replaced are ignored.
    if (!conn.transport.open) return;
    conn.charge(data.length);
    if (isBinary) this.onData(peer, data);
    else this.onControl(peer, data);
  }

  private onData(peer: WeftPeer, data: Buffer): void {
    const frame = decodeRelayData(data);
    if (peer.conn.keyBytes === null) {
      this.refuse(peer.conn, RelayCloseCode.authFailed, 'not authenticated');
    } else if (frame === null || frame.type !== RelayFrameType.send) {
      this.refuse(peer.conn, RelayCloseCode.protocolError, 'malformed data frame');
    } else {
      this.table.forward(peer, frame.key, frame.packet, data);
    }
  }

  private onControl(peer: WeftPeer, data: Buffer): void {
    const conn = peer.conn;
    const msg = parseRelayControl(RelayClientMessage, data.toString('utf8'));
    if (msg === null) {
      this.refuse(conn, RelayCloseCode.protocolError, 'malformed control message');
    } else if (msg.type === 'auth') {
      if (conn.state === 'pending') this.onAuth(peer, msg.nodeKey, msg.proof);
      else this.refuse(conn, RelayCloseCode.protocolError, 'already authenticated');
    } else if (conn.nodeKey === null) {
      this.refuse(conn, RelayCloseCode.authFailed, 'not authenticated');
    } else {
      this.sendEndpoint(conn, this.opts.observations.get(conn.nodeKey));
    }
  }

  private onAuth(peer: WeftPeer, nodeKey: string, proof: string): void {
    const conn = peer.conn;
    const ok = verifyRelayAuthProof({
      relayPrivateKey: this.opts.keyPair.privateKey,
      relayKey: this.opts.keyPair.publicKey,
      nodeKey,
      challenge: conn.challenge,
      proof,
    });
    if (!ok) {
      this.refuse(conn, RelayCloseCode.authFailed, 'wrong proof for that node key');
      return;
    }
    const refusal = this.table.admit(nodeKey, peer);
    if (refusal !== null) {
      this.refuse(conn, RelayCloseCode.notMember, refusal);
      return;
    }
    conn.authenticate(nodeKey);
    this.pending--;
    this.sendControl(conn, { type: 'authOk', nodeKey, reflectorPort: this.opts.reflectorPort });
    const observation = this.opts.observations.get(nodeKey);
    if (observation) this.sendEndpoint(conn, observation);
  }

  private onClose(conn: Connection, peer: WeftPeer | DerpSession): void {
    if (!this.connections.delete(conn)) return;
    this.budget.connections--;
    if (conn.state === 'pending') this.pending--;
    if (conn.nodeKey !== null) this.table.remove(conn.nodeKey, peer);
    conn.dispose();
  }

  private weftConnection(nodeKey: string): Connection | undefined {
    const peer = this.table.get(nodeKey);
    return peer instanceof WeftPeer ? peer.conn : undefined;
  }

  private sweep(): void {
    for (const conn of this.connections.keys()) {
      // Connections already closing are their transport's to finish.
      if (!conn.transport.open) continue;
      const verdict = conn.sweep();
      if (verdict === 'authTimeout') {
        this.refuse(conn, RelayCloseCode.authTimeout, 'no auth in time');
      } else if (verdict === 'stalled' || verdict === 'unresponsive') {
        // A goodbye would queue behind what the peer is not reading: cut the socket.
        if (verdict === 'stalled') this.counts.slowReadersDropped++;
        this.log(conn, `dropped: ${verdict}`);
        conn.transport.terminate();
      }
    }
  }

  private sendEndpoint(conn: Connection, observation: Observation | undefined): void {
    this.sendControl(conn, {
      type: 'endpoint',
      endpoint: observation?.endpoint ?? null,
      observedAt: observation ? new Date(observation.at).toISOString() : null,
    });
  }

  private sendControl(conn: Connection, msg: RelayServerMessage): void {
    const text = JSON.stringify(msg);
    conn.send(text, Buffer.byteLength(text));
  }

  private refuse(conn: Connection, code: number, reason: string): void {
    this.log(conn, `refused: ${reason}`);
    conn.keyBytes = null;
    conn.transport.close(code, reason);
  }

  private log(conn: Connection, line: string): void {
    this.opts.log?.(`relay: ${conn.nodeKey ?? 'unauthenticated'} from ${conn.remote}: ${line}`);
  }
}

/** WebSockets for upgrades this server routes itself: one subprotocol, bounded messages, no compression. */
function upgradeOnlyWss(maxPayload: number, subprotocol: string): WebSocketServer {
  return new WebSocketServer({
    noServer: true,
    clientTracking: false,
    maxPayload,
    perMessageDeflate: false,
    handleProtocols: () => subprotocol,
  });
}
