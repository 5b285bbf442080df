import { randomInt } from 'node:crypto';
import type { RemoteInfo, Socket } from 'node:dgram';
import { formatEndpoint, parseAddr } from '@weft/protocol';
import type { Membership } from './membership.js';
import {
  consumeInitiation,
  createResponse,
  INITIATION_BYTES,
  KEEPALIVE_BYTES,
  MessageType,
  openTransport,
  parseTransportHeader,
  type ResponderIdentity,
  responderIdentity,
  timestampAfter,
} from './noise.js';
import type { ObservationStore } from './observations.js';
import { SourceBudgets } from './source-budgets.js';
import { TokenBucket } from './token-bucket.js';
import { bindUdp } from './udp.js';

// The WireGuard reflector: a UDP socket that speaks just enough WireGuard for every node to have
// it as a peer. A handshake initiation proves the sender's node key (only its holder can seal
// the timestamp to our key), so its source address is the public mapping of that node's own
// WireGuard socket, which is what peers need to punch through NATs. Completing the handshake
// makes the node's persistent keepalives arrive here too, refreshing the mapping.

/**
 * Sources whose handshake budgets are remembered; beyond it the least recently seen is forgotten
 * (and starts again with a full burst), so spoofed sources cannot grow the table.
 */
const MAX_SOURCES = 10_000;

/** WireGuard stops using a session this long after its handshake (REJECT_AFTER_TIME). */
const SESSION_LIFETIME_MS = 180_000;
/** Sessions kept per node: the newest, and the previous one while the node switches over. */
const SESSIONS_PER_NODE = 2;
const REPLAY_WINDOW = 64;

export interface ReflectorOptions {
  /** The relay's X25519 private key (base64): the reflector's WireGuard identity. */
  privateKey: string;
  host: string;
  /** 0 picks a free port. */
  port: number;
  observations: ObservationStore;
  /**
   * Whose initiations are answered (the relay's membership); absent: everyone's. A stranger's
   * initiation is dropped once its key is known, so strangers take no room among `maxNodes`.
   */
  membership?: Membership;
  /**
   * Initiations answered per second across all sources. Each costs five X25519 operations
   * (about 4 ms with @noble on this class of machine), so this caps the reflector's CPU.
   */
  handshakesPerSecond?: number;
  /**
   * Initiations answered per second from one source (an IPv4 address or an IPv6 /64), burst twice
   * that: one flooding source cannot spend the whole budget above. A node handshakes with the
   * reflector about every two minutes, so this leaves room for many nodes behind one NAT.
   */
  handshakesPerSecondPerSource?: number;
  /** Nodes remembered (replay timestamps and sessions); the least recently seen is forgotten. */
  maxNodes?: number;
  log?: (line: string) => void;
  now?: () => number;
}

export interface ReflectorStats {
  handshakes: number;
  keepalives: number;
  dropped: number;
  /** Of those dropped: a proven key that is not a member of the tailnet served. */
  notMember: number;
  nodes: number;
  sessions: number;
}

interface Session {
  nodeKey: string;
  receiveKey: Uint8Array;
  window: ReplayWindow;
  expiresAt: number;
}

interface NodeState {
  /** The newest initiation timestamp accepted: older or equal ones are replays. */
  timestamp: Uint8Array;
  /** Our session indices, oldest first. */
  sessions: number[];
}

export class Reflector {
  private readonly me: ResponderIdentity;
  private readonly sessions = new Map<number, Session>();
  // Least recently seen first (re-inserted on each handshake).
  private readonly nodes = new Map<string, NodeState>();
  private readonly handshakeBudget: TokenBucket;
  private readonly sourceBudgets: SourceBudgets;
  private readonly maxNodes: number;
  private readonly now: () => number;
  private readonly counts = { handshakes: 0, keepalives: 0, dropped: 0, notMember: 0 };

  private constructor(
    private readonly socket: Socket,
    private readonly opts: ReflectorOptions,
  ) {
    this.me = responderIdentity(new Uint8Array(Buffer.from(opts.privateKey, 'base64')));
    this.now = opts.now ?? Date.now;
    const rate = opts.handshakesPerSecond ?? 100;
    this.handshakeBudget = new TokenBucket(rate, rate * 2, this.now);
    this.sourceBudgets = new SourceBudgets(opts.handshakesPerSecondPerSource ?? 10, MAX_SOURCES, this.now);
    this.maxNodes = opts.maxNodes ?? 100_000;
    socket.on('message', (msg, rinfo) => this.onMessage(msg, rinfo));
    // A UDP socket's errors (e.g. ICMP unreachable reflected on send) are per packet: not fatal.
    socket.on('error', (err) => opts.log?.(`reflector: ${err.message}`));
  }

  static async start(opts: ReflectorOptions): Promise<Reflector> {
    return new Reflector(await bindUdp('reflector', opts.host, opts.port), opts);
  }

  get port(): number {
    return this.socket.address().port;
  }

  stats(): ReflectorStats {
    return { ...this.counts, nodes: this.nodes.size, sessions: this.sessions.size };
  }

  close(): Promise<void> {
    return new Promise((resolve) => this.socket.close(() => resolve()));
  }

  private onMessage(msg: Buffer, rinfo: RemoteInfo): void {
    const endpoint = canonicalEndpoint(rinfo.address, rinfo.port);
    const handled =
      endpoint !== null &&
      ((msg.length === INITIATION_BYTES &&
        msg[0] === MessageType.initiation &&
        this.onInitiation(msg, rinfo, endpoint)) ||
        (msg.length === KEEPALIVE_BYTES &&
          msg[0] === MessageType.transport &&
          this.onKeepalive(msg, endpoint)));
    if (!handled) this.counts.dropped++;
  }

  private onInitiation(msg: Buffer, rinfo: RemoteInfo, endpoint: string): boolean {
    // mac1 only takes our public key to forge, so the budgets, not mac1, bound the DH work. The
    // source's own budget comes first, so what it is refused does not drain the shared one.
    const init = consumeInitiation(
      this.me,
      msg,
      () => this.sourceBudgets.take(rinfo.address) && this.handshakeBudget.tryTake(1),
    );
    if (init === null) return false;
    const nodeKey = Buffer.from(init.initiatorStatic).toString('base64');
    if (!this.isMember(nodeKey)) return false;
    const node = this.nodes.get(nodeKey);
    if (node && !timestampAfter(init.timestamp, node.timestamp)) return false;

    const index = this.freeIndex();
    const response = createResponse(init, index);
    if (response === null) return false;

    const state = node ?? { timestamp: init.timestamp, sessions: [] };
    state.timestamp = init.timestamp;
    state.sessions.push(index);
    while (state.sessions.length > SESSIONS_PER_NODE) this.sessions.delete(state.sessions.shift() as number);
    this.nodes.delete(nodeKey);
    this.nodes.set(nodeKey, state);
    this.forgetBeyondLimit();
    this.sessions.set(index, {
      nodeKey,
      receiveKey: response.receiveKey,
      window: new ReplayWindow(),
      expiresAt: this.now() + SESSION_LIFETIME_MS,
    });

    this.socket.send(response.message, rinfo.port, rinfo.address);
    this.counts.handshakes++;
    this.opts.observations.record(nodeKey, endpoint);
    return true;
  }

  /** Whether `nodeKey` is served; a stranger is counted (its packet is dropped). */
  private isMember(nodeKey: string): boolean {
    if (this.opts.membership === undefined || this.opts.membership.isMember(nodeKey)) return true;
    this.counts.notMember++;
    return false;
  }

  private onKeepalive(msg: Buffer, endpoint: string): boolean {
    const header = parseTransportHeader(msg);
    if (header === null || header.counter >= BigInt(Number.MAX_SAFE_INTEGER)) return false;
    const session = this.sessions.get(header.receiverIndex);
    if (session === undefined) return false;
    // A node removed from the tailnet keeps no observation fresh.
    if (!this.isMember(session.nodeKey)) return false;
    if (this.now() > session.expiresAt) {
      this.sessions.delete(header.receiverIndex);
      return false;
    }
    const counter = Number(header.counter);
    if (!session.window.fresh(counter)) return false;
    const payload = openTransport(session.receiveKey, header, msg);
    if (payload === null) return false;
    session.window.mark(counter);
    this.counts.keepalives++;
    this.opts.observations.record(session.nodeKey, endpoint);
    return true;
  }

  private freeIndex(): number {
    for (;;) {
      const index = randomInt(0, 2 ** 32);
      if (!this.sessions.has(index)) return index;
    }
  }

  private forgetBeyondLimit(): void {
    while (this.nodes.size > this.maxNodes) {
      const [key, state] = this.nodes.entries().next().value as [string, NodeState];
      for (const index of state.sessions) this.sessions.delete(index);
      this.nodes.delete(key);
    }
  }
}

/** WireGuard's sliding window of transport counters: each counter is accepted once. */
class ReplayWindow {
  private top = -1;
  // Bit i set: counter (top - i) was seen.
  private seen = 0n;

  fresh(counter: number): boolean {
    if (counter > this.top) return true;
    const back = this.top - counter;
    return back < REPLAY_WINDOW && (this.seen & (1n << BigInt(back))) === 0n;
  }

  mark(counter: number): void {
    if (counter > this.top) {
      const shift = counter - this.top;
      this.seen =
        shift >= REPLAY_WINDOW
          ? 1n
          : ((this.seen << BigInt(shift)) | 1n) & ((1n << BigInt(REPLAY_WINDOW)) - 1n);
      this.top = counter;
    } else {
      this.seen |= 1n << BigInt(this.top - counter);
    }
  }
}

/**
 * The endpoint as peers must dial it: IPv4-mapped IPv6 (from a dual-stack socket) as plain
 * IPv4, IPv6 in brackets. Null for scoped (link-local) sources, which are no use to peers.
 */
export function canonicalEndpoint(address: string, port: number): string | null {
  const addr = parseAddr(address);
  if (addr === null || port === 0) return null;
  if (addr.family === 6 && addr.value >> 32n === 0xffffn) {
    return formatEndpoint({ family: 4, value: addr.value & 0xffffffffn }, port);
  }
  return formatEndpoint(addr, port);
}
