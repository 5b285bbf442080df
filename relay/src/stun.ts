import type { RemoteInfo, Socket } from 'node:dgram';
import { crc32 } from 'node:zlib';
import { parseAddr } from '@weft/protocol';
import { SourceBudgets } from './source-budgets.js';
import { TokenBucket } from './token-bucket.js';
import { bindUdp } from './udp.js';

// STUN (RFC 5389) Binding on UDP: a Tailscale client's netcheck asks each relay where its UDP
// packets come from and gets the source address and port in XOR-MAPPED-ADDRESS. Anything that is
// not a well-formed Binding request is ignored without an answer; answers are rate-limited per
// source and in total, since a UDP source can be spoofed to aim answers at someone else (an
// answer is 32 or 44 bytes, a request at least 20: little amplification, and a bounded rate).

const HEADER_BYTES = 20;
const MAGIC_COOKIE = 0x2112a442;
const BINDING_REQUEST = 0x0001;
const BINDING_SUCCESS = 0x0101;
const ATTR_XOR_MAPPED_ADDRESS = 0x0020;
const ATTR_FINGERPRINT = 0x8028;
const FINGERPRINT_XOR = 0x5354554e;
/** Larger datagrams are not Binding requests anyone sends. */
const MAX_REQUEST_BYTES = 1_024;
/** Sources whose budgets are remembered (see SourceBudgets). */
const MAX_SOURCES = 10_000;

/**
 * The transaction id of a well-formed Binding request, or null: RFC 5389 header with the magic
 * cookie, a length that matches, attributes that tile the body exactly, and a FINGERPRINT, if
 * present, last and correct. Attributes are not otherwise interpreted.
 */
export function parseBindingRequest(msg: Uint8Array): Uint8Array | null {
  if (msg.length < HEADER_BYTES || msg.length > MAX_REQUEST_BYTES) return null;
  const view = new DataView(msg.buffer, msg.byteOffset, msg.byteLength);
  if (view.getUint16(0) !== BINDING_REQUEST || view.getUint32(4) !== MAGIC_COOKIE) return null;
  const length = view.getUint16(2);
  if (length !== msg.length - HEADER_BYTES || length % 4 !== 0) return null;
  let at = HEADER_BYTES;
  while (at < msg.length) {
    if (msg.length - at < 4) return null;
    const type = view.getUint16(at);
    const valueLength = view.getUint16(at + 2);
    const next = at + 4 + Math.ceil(valueLength / 4) * 4;
    if (next > msg.length) return null;
    if (type === ATTR_FINGERPRINT) {
      if (valueLength !== 4 || next !== msg.length) return null;
      if ((crc32(msg.subarray(0, at)) ^ FINGERPRINT_XOR) >>> 0 !== view.getUint32(at + 4)) return null;
    }
    at = next;
  }
  return msg.slice(8, HEADER_BYTES);
}

/** A Binding success response telling `address`:`port` (IPv4, IPv6 or IPv4-mapped IPv6). */
export function bindingResponse(transactionId: Uint8Array, address: string, port: number): Buffer {
  const addr = parseAddr(address);
  if (addr === null) throw new Error(`not an IP address: ${address}`);
  const mapped = addr.family === 6 && addr.value >> 32n === 0xffffn;
  const v4 = addr.family === 4 || mapped;
  const addrBytes = v4 ? 4 : 16;
  const out = Buffer.alloc(HEADER_BYTES + 4 + 4 + addrBytes);
  out.writeUInt16BE(BINDING_SUCCESS, 0);
  out.writeUInt16BE(4 + 4 + addrBytes, 2);
  out.writeUInt32BE(MAGIC_COOKIE, 4);
  out.set(transactionId, 8);
  out.writeUInt16BE(ATTR_XOR_MAPPED_ADDRESS, 20);
  out.writeUInt16BE(4 + addrBytes, 22);
  out[25] = v4 ? 0x01 : 0x02;
  out.writeUInt16BE(port ^ (MAGIC_COOKIE >>> 16), 26);
  // The address is XORed with the cookie (IPv4), or with the cookie and transaction id (IPv6).
  const value = v4 ? addr.value & 0xffffffffn : addr.value;
  for (let i = 0; i < addrBytes; i++) {
    const byte = Number((value >> BigInt(8 * (addrBytes - 1 - i))) & 0xffn);
    out[28 + i] = byte ^ (out[4 + i] as number);
  }
  return out;
}

export interface StunOptions {
  host: string;
  /** 0 picks a free port. */
  port: number;
  /** Answers per second across all sources (burst twice that). */
  answersPerSecond?: number;
  /** Answers per second to one source, an IPv4 address or an IPv6 /64 (burst twice that). */
  answersPerSecondPerSource?: number;
  now?: () => number;
  log?: (line: string) => void;
}

export interface StunStats {
  answered: number;
  /** Datagrams that were not well-formed Binding requests. */
  ignored: number;
  /** Well-formed requests not answered because a budget was spent. */
  limited: number;
}

export class StunServer {
  private readonly total: TokenBucket;
  private readonly sources: SourceBudgets;
  private readonly counts: StunStats = { answered: 0, ignored: 0, limited: 0 };

  private constructor(
    private readonly socket: Socket,
    opts: StunOptions,
  ) {
    const now = opts.now ?? Date.now;
    const rate = opts.answersPerSecond ?? 5_000;
    this.total = new TokenBucket(rate, rate * 2, now);
    // A netcheck sends a few requests per relay every half minute or so, per node: this leaves
    // room for hundreds of nodes behind one NAT.
    this.sources = new SourceBudgets(opts.answersPerSecondPerSource ?? 50, MAX_SOURCES, now);
    socket.on('message', (msg, rinfo) => this.onMessage(msg, rinfo));
    socket.on('error', (err) => opts.log?.(`stun: ${err.message}`));
  }

  static async start(opts: StunOptions): Promise<StunServer> {
    return new StunServer(await bindUdp('stun', opts.host, opts.port), opts);
  }

  get port(): number {
    return this.socket.address().port;
  }

  stats(): StunStats {
    return { ...this.counts };
  }

  close(): Promise<void> {
    return new Promise((resolve) => this.socket.close(() => resolve()));
  }

  private onMessage(msg: Buffer, rinfo: RemoteInfo): void {
    const transactionId = parseBindingRequest(msg);
    if (transactionId === null || parseAddr(rinfo.address) === null) {
      this.counts.ignored++;
      return;
    }
    // The source's own budget first, so what it is refused does not drain the shared one.
    if (!this.sources.take(rinfo.address) || !this.total.tryTake(1)) {
      this.counts.limited++;
      return;
    }
    this.counts.answered++;
    this.socket.send(bindingResponse(transactionId, rinfo.address, rinfo.port), rinfo.port, rinfo.address);
  }
}
