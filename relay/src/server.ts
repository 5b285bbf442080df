import {
  createServer as createHttpServer,
  type IncomingMessage,
  type Server,
  type ServerResponse,
} from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import type { Duplex } from 'node:stream';
import {
  decodeRelayData,
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
import { Connection, DEFAULT_RELAY_LIMITS, QueueBudget, type RelayLimits } from './connection.js';
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
  authenticated: number;
  /** Bytes queued in user space across all connections: what the bounds keep finite. */
  queuedBytes: number;
  forwardedPackets: number;
  forwardedBytes: number;
  /** Packets for a node key with no connection here. */
  droppedNoPeer: number;
  /** Packets dropped because the destination's queue was full. */
  droppedQueueFull: number;
  /** Packets dropped because all queues together were at `maxTotalQueueBytes`. */
  droppedOverBudget: number;
  /** Upgrades refused because their source already had `maxConnectionsPerSource`. */
  refusedPerSource: number;
  slowReadersDropped: number;
}

/**
 * The relay: authenticates each WebSocket to a node key, then forwards packets by destination
 * key, tagging each with its proven source key. One process, one event loop; every per-node
 * resource (queue, inbound rate, pending handshakes) is bounded so no node can starve others.
 */
export class RelayServer {
  private readonly http: Server;
  private readonly wss: WebSocketServer;
  private readonly limits: RelayLimits;
  private readonly connections = new Set<Connection>();
  private readonly byKey = new Map<string, Connection>();
  private pending = 0;
  private readonly perSource = new Map<string, number>();
  private readonly budget: QueueBudget;
  private readonly membership: Membership;
  private readonly sweepTimer: NodeJS.Timeout;
  private readonly unsubscribe: () => void;
  private readonly counts = {
    forwardedPackets: 0,
    forwardedBytes: 0,
    droppedNoPeer: 0,
    droppedQueueFull: 0,
    slowReadersDropped: 0,
    refusedPerSource: 0,
  };

  constructor(private readonly opts: RelayServerOptions) {
    this.limits = { ...DEFAULT_RELAY_LIMITS, ...opts.limits };
    this.budget = new QueueBudget(this.limits.maxTotalQueueBytes);
    this.membership = opts.membership ?? Membership.open();
    const handler = (req: IncomingMessage, res: ServerResponse) => this.onRequest(req, res);
    this.http = opts.tls
      ? createHttpsServer({ cert: opts.tls.cert, key: opts.tls.key }, handler)
      : createHttpServer(handler);
    this.http.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) =>
      this.onUpgrade(req, socket, head),
    );
    this.wss = new WebSocketServer({
      noServer: true,
      clientTracking: false,
      maxPayload: RELAY_MAX_FRAME_BYTES,
      perMessageDeflate: false,
      handleProtocols: () => RELAY_SUBPROTOCOL,
    });
    this.sweepTimer = setInterval(() => this.sweep(), this.limits.sweepIntervalMs);
    this.sweepTimer.unref();
    const unobserve = opts.observations.onChange((nodeKey, observation) => {
      const conn = this.byKey.get(nodeKey);
      if (conn) this.sendEndpoint(conn, observation);
    });
    const onRemoved = (keys: string[]) => this.dropNonMembers(keys);
    this.membership.on('removed', onRemoved);
    this.unsubscribe = () => {
      unobserve();
      this.membership.off('removed', onRemoved);
    };
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
    for (const c of this.connections) queuedBytes += c.queuedBytes;
    return {
      connections: this.connections.size,
      authenticated: this.byKey.size,
      queuedBytes,
      ...this.counts,
      droppedOverBudget: this.budget.dropped,
    };
  }

  /** Says goodbye to every node (1001), gives them a second, then cuts what is left. */
  async close(): Promise<void> {
    clearInterval(this.sweepTimer);
    this.unsubscribe();
    const closed = [...this.connections].map((c) => new Promise((r) => c.ws.once('close', r)));
    for (const c of this.connections) c.ws.close(1001, 'relay shutting down');
    let grace: NodeJS.Timeout | undefined;
    await Promise.race([Promise.all(closed), new Promise((r) => (grace = setTimeout(r, 1000)))]);
    clearTimeout(grace);
    for (const c of this.connections) c.ws.terminate();
    const httpClosed = new Promise((r) => this.http.close(r));
    this.http.closeAllConnections();
    await httpClosed;
  }

  private onRequest(req: IncomingMessage, res: ServerResponse): void {
    const path = (req.url ?? '').split('?')[0];
    const [status, body] =
      path === '/healthz'
        ? [200, 'ok\n']
        : path === RELAY_PATH
          ? [426, 'WebSocket upgrade required\n']
          : [404, 'not found\n'];
    res.writeHead(status, { 'content-type': 'text/plain' }).end(body);
  }

  private onUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void {
    socket.on('error', () => socket.destroy());
    const remote = req.socket.remoteAddress ?? '?';
    const source = sourceKey(remote);
    const fromSource = this.perSource.get(source) ?? 0;
    const offered = (req.headers['sec-websocket-protocol'] ?? '').split(',').map((p) => p.trim());
    const refusal =
      (req.url ?? '').split('?')[0] !== RELAY_PATH
        ? '404 Not Found'
        : !offered.includes(RELAY_SUBPROTOCOL)
          ? '400 Bad Request'
          : this.pending >= this.limits.maxPendingConnections
            ? '503 Service Unavailable'
            : fromSource >= this.limits.maxConnectionsPerSource
              ? '429 Too Many Requests'
              : null;
    if (refusal !== null) {
      if (refusal.startsWith('429')) this.counts.refusedPerSource++;
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
    this.wss.handleUpgrade(req, socket, head, (ws) => this.accept(ws, socket, remote));
  }

  private accept(ws: WebSocket, socket: Duplex, remote: string): void {
    const conn = new Connection(ws, socket, remote, this.limits, this.budget);
    this.connections.add(conn);
    this.budget.connections++;
    this.pending++;
    ws.on('message', (data, isBinary) => this.onMessage(conn, data as Buffer, isBinary));
    // ws reports protocol violations (oversized or malformed frames) here and closes the
    // connection itself (1009 / 1002); only this connection is affected.
    ws.on('error', (err) => this.log(conn, `closed: ${err.message}`));
    ws.on('close', () => this.onClose(conn));
    this.sendControl(conn, {
      type: 'challenge',
      relayKey: this.opts.keyPair.publicKey,
      challenge: conn.challenge,
    });
  }

  private onMessage(conn: Connection, data: Buffer, isBinary: boolean): void {
    // Frames that were already read when the connection was refused or replaced are ignored.
    if (conn.ws.readyState !== conn.ws.OPEN) return;
    conn.charge(data.length);
    if (isBinary) this.onData(conn, data);
    else this.onControl(conn, data);
  }

  private onData(conn: Connection, data: Buffer): void {
    const source = conn.keyBytes;
    const frame = decodeRelayData(data);
    if (source === null) {
      this.refuse(conn, RelayCloseCode.authFailed, 'not authenticated');
    } else if (frame === null || frame.type !== RelayFrameType.send) {
      this.refuse(conn, RelayCloseCode.protocolError, 'malformed data frame');
    } else {
      const key = Buffer.from(frame.key.buffer, frame.key.byteOffset, frame.key.length);
      const dst = this.byKey.get(key.toString('base64'));
      if (dst === undefined) {
        this.counts.droppedNoPeer++;
        return;
      }
      readdressRelayData(data, RelayFrameType.recv, source);
      if (dst.send(data, data.length)) {
        this.counts.forwardedPackets++;
        this.counts.forwardedBytes += frame.packet.length;
      } else {
        this.counts.droppedQueueFull++;
      }
    }
  }

  private onControl(conn: Connection, data: Buffer): void {
    const msg = parseRelayControl(RelayClientMessage, data.toString('utf8'));
    if (msg === null) {
      this.refuse(conn, RelayCloseCode.protocolError, 'malformed control message');
    } else if (msg.type === 'auth') {
      if (conn.state === 'pending') this.onAuth(conn, msg.nodeKey, msg.proof);
      else this.refuse(conn, RelayCloseCode.protocolError, 'already authenticated');
    } else if (conn.nodeKey === null) {
      this.refuse(conn, RelayCloseCode.authFailed, 'not authenticated');
    } else {
      this.sendEndpoint(conn, this.opts.observations.get(conn.nodeKey));
    }
  }

  private onAuth(conn: Connection, nodeKey: string, proof: string): void {
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
    const refusal = this.membership.refusal(nodeKey);
    if (refusal !== null) {
      this.refuse(conn, RelayCloseCode.notMember, refusal);
      return;
    }
    const previous = this.byKey.get(nodeKey);
    if (previous) {
      // The newest connection wins: the old one is usually a dead socket from before a network
      // change. It stops forwarding at once, before its close completes.
      previous.state = 'replaced';
      previous.keyBytes = null;
      previous.ws.close(RelayCloseCode.replaced, 'replaced by a newer connection');
      this.log(previous, 'replaced by a newer connection');
    }
    conn.authenticate(nodeKey);
    this.pending--;
    this.byKey.set(nodeKey, conn);
    this.sendControl(conn, { type: 'authOk', nodeKey, reflectorPort: this.opts.reflectorPort });
    const observation = this.opts.observations.get(nodeKey);
    if (observation) this.sendEndpoint(conn, observation);
  }

  private onClose(conn: Connection): void {
    conn.dispose();
    this.connections.delete(conn);
    this.budget.connections--;
    if (conn.state === 'pending') this.pending--;
    if (conn.nodeKey !== null && this.byKey.get(conn.nodeKey) === conn) this.byKey.delete(conn.nodeKey);
  }

  /** Ends the connections of keys that left the tailnet, at once. */
  private dropNonMembers(keys: string[]): void {
    for (const key of keys) {
      const conn = this.byKey.get(key);
      if (conn === undefined) continue;
      this.byKey.delete(key);
      this.refuse(conn, RelayCloseCode.notMember, 'node removed from the tailnet');
    }
  }

  private sweep(): void {
    for (const conn of this.connections) {
      // Connections already closing are ws's to finish (it cuts them after its close timeout).
      if (conn.ws.readyState !== conn.ws.OPEN) continue;
      const verdict = conn.sweep();
      if (verdict === 'authTimeout') {
        this.refuse(conn, RelayCloseCode.authTimeout, 'no auth in time');
      } else if (verdict === 'stalled' || verdict === 'unresponsive') {
        // A close frame would queue behind what the peer is not reading: cut the socket.
        if (verdict === 'stalled') this.counts.slowReadersDropped++;
        this.log(conn, `dropped: ${verdict}`);
        conn.ws.terminate();
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
    conn.ws.close(code, reason);
  }

  private log(conn: Connection, line: string): void {
    this.opts.log?.(`relay: ${conn.nodeKey ?? 'unauthenticated'} from ${conn.remote}: ${line}`);
  }
}
