import type { Duplex } from 'node:stream';
import { newRelayChallenge } from '@weft/protocol';
import type { WebSocket } from 'ws';
import { TokenBucket } from './token-bucket.js';

/**
 * What a connection writes to: a WebSocket (Weft's relay protocol, DERP over WebSocket) or a
 * DERP byte stream (derp/session.ts). The bounds below are the same for every kind.
 */
export interface Transport {
  readonly open: boolean;
  /** Bytes handed to `send` and not yet written to the kernel. */
  readonly bufferedAmount: number;
  send(data: Uint8Array | string): void;
  pause(): void;
  resume(): void;
  /** Asks for a sign of life; the answer comes as `Connection.ponged()`. */
  ping(): void;
  /** Ends the connection with a reason the peer can read (a close frame, a DERP health frame). */
  close(code: number, reason: string): void;
  /** Cuts the connection without a word: a goodbye would queue behind what is not being read. */
  terminate(): void;
}

/** Weft's relay protocol (and DERP over WebSocket): one message per `send`. */
export class WebSocketTransport implements Transport {
  constructor(readonly ws: WebSocket) {}
  get open(): boolean {
    return this.ws.readyState === this.ws.OPEN;
  }
  get bufferedAmount(): number {
    return this.ws.bufferedAmount;
  }
  send(data: Uint8Array | string): void {
    this.ws.send(data);
  }
  pause(): void {
    this.ws.pause();
  }
  resume(): void {
    this.ws.resume();
  }
  ping(): void {
    this.ws.ping();
  }
  close(code: number, reason: string): void {
    this.ws.close(code, reason);
  }
  terminate(): void {
    this.ws.terminate();
  }
}

/** Per-connection bounds; every one protects the relay or the other connections. */
export interface RelayLimits {
  /**
   * Bytes a connection may have queued for sending (beyond what the kernel holds). A frame that
   * would exceed it is dropped, as a congested UDP path would: WireGuard's traffic copes.
   */
  maxQueueBytes: number;
  /** A connection with queued bytes and no write progress for this long is disconnected. */
  stallTimeoutMs: number;
  /** Inbound rate per connection; above it the relay stops reading that socket (TCP pushes back). */
  bytesPerSecond: number;
  burstBytes: number;
  /** Time to send a valid auth message after connecting. */
  authTimeoutMs: number;
  /** The relay pings each connection this often; one that leaves a ping unanswered for another
   * whole interval is disconnected. */
  pingIntervalMs: number;
  /** Unauthenticated connections at once; more upgrades are refused with 503. */
  maxPendingConnections: number;
  /**
   * Connections (authenticated or not) from one source (an IPv4 address or an IPv6 /64, see
   * source-key.ts); more are refused with 429.
   */
  maxConnectionsPerSource: number;
  /**
   * Bytes queued for sending across all connections. Beyond it a connection may only queue up to
   * its fair share (this over the number of connections) and frames beyond that are dropped, so
   * never-reading connections cannot add up to more than twice this, and cannot crowd out nodes
   * whose queues are short.
   */
  maxTotalQueueBytes: number;
  /** How often the checks above run. */
  sweepIntervalMs: number;
}

export const DEFAULT_RELAY_LIMITS: RelayLimits = {
  maxQueueBytes: 4 * 1024 * 1024,
  stallTimeoutMs: 5_000,
  // About 1 Gbit/s per node: above a relayed WireGuard tunnel's needs, far below the machine's.
  bytesPerSecond: 128 * 1024 * 1024,
  burstBytes: 8 * 1024 * 1024,
  authTimeoutMs: 10_000,
  pingIntervalMs: 15_000,
  maxPendingConnections: 1_024,
  // A whole office behind one NAT is many nodes, each with one connection.
  maxConnectionsPerSource: 256,
  maxTotalQueueBytes: 256 * 1024 * 1024,
  sweepIntervalMs: 1_000,
};

/**
 * Each inbound frame is charged its size plus this, because the relay's cost is per frame as
 * much as per byte: a flood of tiny frames is limited too.
 */
const FRAME_CHARGE_BYTES = 512;

export type SweepVerdict = 'ok' | 'authTimeout' | 'stalled' | 'unresponsive';

/**
 * What all connections have queued, against `maxTotalQueueBytes`. Each connection adds what it
 * queues and, whenever it looks again (its next send, every sweep, its end), corrects its share to
 * what is really still queued: exact for connections being written to, an overestimate for at
 * most one sweep interval for one that drained since, so the budget errs on the safe side.
 */
export class QueueBudget {
  total = 0;
  /** Open connections, kept by the server: the fair share is `limit / connections`. */
  connections = 0;
  /** Frames dropped because the budget was spent and the connection was over its share. */
  dropped = 0;

  constructor(readonly limit: number) {}

  allows(queued: number, bytes: number): boolean {
    return this.total + bytes <= this.limit || queued + bytes <= this.limit / Math.max(1, this.connections);
  }
}

/** One node's connection: its identity once proven, its bounded send queue and its inbound rate. */
export class Connection<T extends Transport = Transport> {
  state: 'pending' | 'authenticated' | 'replaced' = 'pending';
  nodeKey: string | null = null;
  keyBytes: Uint8Array | null = null;
  readonly challenge = newRelayChallenge();
  private readonly openedAt: number;
  /** Bytes ever handed to the socket; minus what is still queued, this is what was written. */
  private sent = 0;
  private writtenAtLastSweep = 0;
  private progressAt: number;
  private pingedAt: number;
  private awaitingPong = false;
  private readonly inbound: TokenBucket;
  private resumeTimer: NodeJS.Timeout | undefined;
  private corked = false;
  private resolveClosed: () => void = () => {};
  /** Settles once the server has forgotten this connection. */
  readonly closed = new Promise<void>((resolve) => {
    this.resolveClosed = resolve;
  });
  /** This connection's share of `budget.total`. */
  private accounted = 0;
  private readonly uncork = () => {
    this.corked = false;
    this.socket.uncork();
  };

  constructor(
    readonly transport: T,
    /** The socket under `transport`, for corking. */
    private readonly socket: Duplex,
    readonly remote: string,
    private readonly limits: RelayLimits,
    private readonly budget: QueueBudget,
    private readonly now: () => number = Date.now,
  ) {
    this.openedAt = this.progressAt = this.pingedAt = now();
    this.inbound = new TokenBucket(limits.bytesPerSecond, limits.burstBytes, now);
  }

  /** The answer to the last `transport.ping()`. */
  ponged(): void {
    this.awaitingPong = false;
  }

  authenticate(nodeKey: string): void {
    this.state = 'authenticated';
    this.nodeKey = nodeKey;
    this.keyBytes = new Uint8Array(Buffer.from(nodeKey, 'base64'));
  }

  /** Bytes waiting in user space to be written to this connection. */
  get queuedBytes(): number {
    return this.transport.bufferedAmount;
  }

  /**
   * Queues a message unless a queue bound forbids it; false when it was dropped. An array is
   * sent as consecutive writes, all or none: only for byte-stream transports (DERP).
   */
  send(data: Uint8Array | string | Uint8Array[], bytes: number): boolean {
    if (!this.transport.open) return false;
    const queued = this.account();
    if (queued + bytes > this.limits.maxQueueBytes) return false;
    if (!this.budget.allows(queued, bytes)) {
      this.budget.dropped++;
      return false;
    }
    this.accounted += bytes;
    this.budget.total += bytes;
    this.sent += bytes;
    // Hold the socket's writes until this tick's work is done, so the frames forwarded from one
    // inbound read leave in one writev instead of one system call each.
    if (!this.corked) {
      this.corked = true;
      this.socket.cork();
      process.nextTick(this.uncork);
    }
    if (Array.isArray(data)) for (const part of data) this.transport.send(part);
    else this.transport.send(data);
    return true;
  }

  /** Accounts for an inbound frame; stops reading the socket while the rate is exceeded. */
  charge(bytes: number): void {
    if (this.inbound.take(bytes + FRAME_CHARGE_BYTES) || this.resumeTimer !== undefined) return;
    this.transport.pause();
    this.resumeTimer = setTimeout(() => {
      this.resumeTimer = undefined;
      this.transport.resume();
    }, this.inbound.waitMs());
  }

  /** The periodic check: auth deadline, write progress, liveness. Pings when one is due. */
  sweep(): SweepVerdict {
    const now = this.now();
    if (this.state === 'pending' && now - this.openedAt > this.limits.authTimeoutMs) return 'authTimeout';
    const queued = this.account();
    const written = this.sent - queued;
    if (queued === 0 || written > this.writtenAtLastSweep) this.progressAt = now;
    this.writtenAtLastSweep = written;
    if (now - this.progressAt > this.limits.stallTimeoutMs) return 'stalled';
    const sincePing = now - this.pingedAt;
    // A ping gets a whole interval to be answered: a relay that was itself descheduled for a
    // moment must not mistake the pongs it has not read yet for dead nodes.
    if (this.awaitingPong && sincePing >= 2 * this.limits.pingIntervalMs) return 'unresponsive';
    if (!this.awaitingPong && sincePing >= this.limits.pingIntervalMs) {
      this.awaitingPong = true;
      this.pingedAt = now;
      this.transport.ping();
    }
    return 'ok';
  }

  /** Gives back this connection's share of the budget; `closed` settles. */
  dispose(): void {
    clearTimeout(this.resumeTimer);
    this.budget.total -= this.accounted;
    this.accounted = 0;
    this.resolveClosed();
  }

  /** Brings this connection's share of the budget up to date; returns what it has queued. */
  private account(): number {
    const queued = this.transport.bufferedAmount;
    this.budget.total += queued - this.accounted;
    this.accounted = queued;
    return queued;
  }
}
