import { createCipheriv, createDecipheriv } from 'node:crypto';
import http2 from 'node:http2';
import net from 'node:net';
import { Duplex } from 'node:stream';
import { chacha20poly1305 } from '@noble/ciphers/chacha.js';
import { x25519 } from '@noble/curves/ed25519.js';
import { blake2s } from '@noble/hashes/blake2.js';
import { hkdf } from '@noble/hashes/hkdf.js';

// A Tailscale client's side of ts2021 for tests, written from the protocol description with @noble
// primitives directly (not with control's noise.ts), so a test using it checks control's handshake
// against an independent implementation: the HTTP upgrade, the IK initiation, the early payload,
// then HTTP/2 over the records.

const te = new TextEncoder();
const cat = (...p: Uint8Array[]) => Uint8Array.from(p.flatMap((x) => [...x]));

function nonce(n: bigint): Uint8Array {
  const out = new Uint8Array(12);
  new DataView(out.buffer).setBigUint64(4, n, false);
  return out;
}

export interface Initiation {
  message: Uint8Array;
  /** Finishes the handshake from control's response frame: [send key, receive key]. */
  finish(response: Uint8Array): [Uint8Array, Uint8Array];
}

/** Builds the client's initiation message for `controlPublic`, announcing `version`. */
export function initiate(machinePrivate: Uint8Array, controlPublic: Uint8Array, version: number): Initiation {
  let h = blake2s(te.encode('Noise_IK_25519_ChaChaPoly_BLAKE2s'));
  let ck = h;
  const mix = (d: Uint8Array) => {
    h = blake2s(cat(h, d));
  };
  const dh = (priv: Uint8Array, pub: Uint8Array) => {
    const out = hkdf(blake2s, x25519.getSharedSecret(priv, pub), ck, undefined, 64);
    ck = out.slice(0, 32);
    return out.slice(32);
  };
  mix(te.encode(`Tailscale Control Protocol v${version}`));
  mix(controlPublic);
  const ephemeral = x25519.utils.randomSecretKey();
  const ephemeralPublic = x25519.getPublicKey(ephemeral);
  mix(ephemeralPublic);
  const sealedMachine = chacha20poly1305(dh(ephemeral, controlPublic), new Uint8Array(12), h).encrypt(
    x25519.getPublicKey(machinePrivate),
  );
  mix(sealedMachine);
  const tag = chacha20poly1305(dh(machinePrivate, controlPublic), new Uint8Array(12), h).encrypt(
    new Uint8Array(0),
  );
  mix(tag);
  const header = new Uint8Array(5);
  new DataView(header.buffer).setUint16(0, version);
  header[2] = 1;
  new DataView(header.buffer).setUint16(3, 96);
  return {
    message: cat(header, ephemeralPublic, sealedMachine, tag),
    finish(response) {
      if (response[0] !== 2) throw new Error(`control answered frame type ${response[0]}`);
      const controlEphemeral = response.slice(3, 35);
      mix(controlEphemeral);
      dh(ephemeral, controlEphemeral);
      const key = dh(machinePrivate, controlEphemeral);
      chacha20poly1305(key, new Uint8Array(12), h).decrypt(response.slice(35, 51));
      mix(response.slice(35, 51));
      const out = hkdf(blake2s, new Uint8Array(0), ck, undefined, 64);
      return [out.slice(0, 32), out.slice(32)];
    },
  };
}

/** Reads from `socket` until `n` bytes (beyond `have`) are there. */
function readBytes(socket: net.Socket, buffered: { data: Buffer }, n: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const check = () => {
      if (buffered.data.length >= n) {
        socket.off('data', onData);
        socket.off('close', onClose);
        const out = buffered.data.subarray(0, n);
        buffered.data = buffered.data.subarray(n);
        resolve(out);
        return true;
      }
      return false;
    };
    const onData = (chunk: Buffer) => {
      buffered.data = Buffer.concat([buffered.data, chunk]);
      check();
    };
    const onClose = () => reject(new Error(`connection closed with ${buffered.data.length}/${n} bytes`));
    if (check()) return;
    socket.on('data', onData);
    socket.on('close', onClose);
  });
}

/**
 * Client-side records: decrypts control's records, strips the early payload, seals writes. The
 * records' AEAD is node:crypto's (one load process reads every node's maps; the pure-JavaScript one
 * made it the bottleneck), the handshake above stays on @noble, independent of control's.
 */
class ClientRecords extends Duplex {
  private pending: Buffer = Buffer.alloc(0);
  private plain: Buffer[] = [];
  private plainBytes = 0;
  private rxN = 0n;
  private txN = 0n;
  early: unknown = undefined;
  constructor(
    private readonly socket: net.Socket,
    private readonly tx: Uint8Array,
    private readonly rx: Uint8Array,
    head: Buffer,
  ) {
    super();
    socket.on('data', (c: Buffer) => this.onData(c));
    socket.on('close', () => this.destroy());
    if (head.length > 0) this.onData(head);
  }
  private onData(chunk: Buffer) {
    this.pending = this.pending.length === 0 ? chunk : Buffer.concat([this.pending, chunk]);
    let at = 0;
    while (this.pending.length - at >= 3) {
      const len = this.pending.readUInt16BE(at + 1);
      if (this.pending.length - at < 3 + len) break;
      const sealed = this.pending.subarray(at + 3, at + 3 + len);
      const d = createDecipheriv('chacha20-poly1305', this.rx, nonce(this.rxN++), { authTagLength: 16 });
      d.setAuthTag(sealed.subarray(len - 16));
      const pt = d.update(sealed.subarray(0, len - 16));
      d.final();
      this.plain.push(pt);
      this.plainBytes += pt.length;
      at += 3 + len;
    }
    this.pending = this.pending.subarray(at);
    let plain = Buffer.concat(this.plain, this.plainBytes);
    if (this.early === undefined) {
      if (plain.length < 9) return;
      if (plain.subarray(0, 5).toString('latin1') === '\xff\xff\xffTS') {
        const n = plain.readUInt32BE(5);
        if (plain.length < 9 + n) return;
        this.early = JSON.parse(plain.subarray(9, 9 + n).toString());
        plain = plain.subarray(9 + n);
      } else this.early = null;
    }
    this.plain = [];
    this.plainBytes = 0;
    if (plain.length > 0) this.push(plain);
  }
  override _read() {}
  override _write(chunk: Buffer, _e: BufferEncoding, done: (err?: Error | null) => void) {
    const frames: Buffer[] = [];
    for (let at = 0; at < chunk.length; at += 4000) {
      const c = createCipheriv('chacha20-poly1305', this.tx, nonce(this.txN++), { authTagLength: 16 });
      const ct = Buffer.concat([c.update(chunk.subarray(at, at + 4000)), c.final(), c.getAuthTag()]);
      const hdr = Buffer.alloc(3);
      hdr[0] = 4;
      hdr.writeUInt16BE(ct.length, 1);
      frames.push(hdr, ct);
    }
    this.socket.write(Buffer.concat(frames), done);
  }
  override _destroy(err: Error | null, done: (err?: Error | null) => void) {
    this.socket.destroy();
    done(err);
  }
}

export interface Ts2021Connection {
  /** The early payload control sent (EarlyNoise JSON), or null. */
  early: unknown;
  /** POSTs JSON over HTTP/2; resolves with the status and the whole body. */
  post(path: string, body: unknown): Promise<{ status: number; body: Buffer }>;
  /** POSTs and hands back the response stream (for streaming map requests). */
  stream(path: string, body: unknown): http2.ClientHttp2Stream;
  /** POSTs `text` exactly as given (a fuzzer's mutated body) and hands back the response stream. */
  postText(path: string, text: string): http2.ClientHttp2Stream;
  /** Whether the HTTP/2 session (and so the connection) has ended. */
  readonly closed: boolean;
  close(): void;
}

/** Connects to control at host:port as a Tailscale client with `machinePrivate`. */
export async function connectTs2021(args: {
  host: string;
  port: number;
  machinePrivate: Uint8Array;
  controlPublic: Uint8Array;
  version?: number;
  /** Source address (a load test spreads its machines over many loopback addresses). */
  localAddress?: string;
}): Promise<Ts2021Connection> {
  const init = initiate(args.machinePrivate, args.controlPublic, args.version ?? 1);
  const socket = net.connect({ port: args.port, host: args.host, localAddress: args.localAddress });
  await new Promise<void>((resolve, reject) => socket.once('connect', resolve).once('error', reject));
  socket.write(
    `POST /ts2021 HTTP/1.1\r\nHost: ${args.host}\r\nUpgrade: tailscale-control-protocol\r\n` +
      `Connection: upgrade\r\nX-Tailscale-Handshake: ${Buffer.from(init.message).toString('base64')}\r\n\r\n`,
  );
  const buffered = { data: Buffer.alloc(0) };
  let head = '';
  while (!head.includes('\r\n\r\n')) head += (await readBytes(socket, buffered, 1)).toString('latin1');
  if (!head.startsWith('HTTP/1.1 101')) {
    socket.destroy();
    throw new Error(`upgrade refused: ${head.split('\r\n')[0]}`);
  }
  const [tx, rx] = init.finish(await readBytes(socket, buffered, 51));
  const records = new ClientRecords(socket, tx, rx, buffered.data);
  const session = http2.connect('http://control', { createConnection: () => records });
  session.on('error', () => {});
  // The early payload comes before control's first HTTP/2 frame: wait for that frame's settings.
  await new Promise<void>((resolve) => session.once('remoteSettings', () => resolve()));
  const postText = (path: string, text: string) => {
    const req = session.request({ ':method': 'POST', ':path': path, 'content-type': 'application/json' });
    req.end(text);
    return req;
  };
  const stream = (path: string, body: unknown) => postText(path, JSON.stringify(body));
  return {
    early: records.early,
    stream,
    postText,
    get closed() {
      return session.closed || session.destroyed;
    },
    post: (path, body) =>
      new Promise((resolve, reject) => {
        const req = stream(path, body);
        let status = 0;
        const chunks: Buffer[] = [];
        req.on('response', (h) => {
          status = Number(h[':status']);
        });
        req.on('data', (c: Buffer) => chunks.push(c));
        req.on('end', () => resolve({ status, body: Buffer.concat(chunks) }));
        req.on('error', reject);
      }),
    close: () => {
      session.destroy();
      socket.destroy();
    },
  };
}

/**
 * A private key's public half, made once per key: x25519 in JavaScript costs about a millisecond,
 * and a load test asks for a node's key on every map change of every node.
 */
const publicKeys = new WeakMap<Uint8Array, Uint8Array>();
export function publicOf(privateKey: Uint8Array): Uint8Array {
  let key = publicKeys.get(privateKey);
  if (key === undefined) {
    key = x25519.getPublicKey(privateKey);
    publicKeys.set(privateKey, key);
  }
  return key;
}
const hex = (key: Uint8Array) => Buffer.from(key).toString('hex');

type Json = Record<string, unknown>;

/**
 * Reads a map stream's frames (4-byte little-endian length, JSON, zstd when asked) and keeps the
 * client's picture of the map as tailscaled would build it: self, peers by id, patches applied.
 */
export class MapReader {
  private buffer: Buffer = Buffer.alloc(0);
  private chunks: Buffer[] = [];
  private buffered = 0;
  /** Bytes the next frame needs before it can be read (its length prefix, then all of it). */
  private needed = 4;
  readonly messages: Json[] = [];
  self: Json | null = null;
  readonly peers = new Map<number, Json>();
  packetFilter: unknown = null;
  keepAlives = 0;
  status = 0;
  ended = false;
  /** Called after each chunk's messages are applied (a load test notes when a change arrived). */
  onChange: (() => void) | null = null;
  private waiters: (() => void)[] = [];
  constructor(
    readonly stream: http2.ClientHttp2Stream,
    private readonly decode: (b: Uint8Array) => Uint8Array,
  ) {
    stream.on('response', (h) => {
      this.status = Number(h[':status']);
    });
    stream.on('data', (chunk: Buffer) => {
      // A whole map of a thousand peers comes in many chunks: they are joined once it is all here
      // (joining on every chunk copies the map over and over).
      this.chunks.push(chunk);
      this.buffered += chunk.length;
      if (this.buffered < this.needed) return;
      this.buffer = Buffer.concat(this.chunks, this.buffered);
      let read = 0;
      while (this.buffer.length >= 4 && this.buffer.length >= 4 + this.buffer.readUInt32LE(0)) {
        const n = this.buffer.readUInt32LE(0);
        const body = Buffer.from(this.decode(this.buffer.subarray(4, 4 + n)));
        this.buffer = this.buffer.subarray(4 + n);
        this.apply(JSON.parse(body.toString()) as Json);
        read++;
      }
      this.chunks = [this.buffer];
      this.buffered = this.buffer.length;
      this.needed = this.buffered < 4 ? 4 : 4 + this.buffer.readUInt32LE(0);
      if (read === 0) return;
      this.onChange?.();
      this.wake();
    });
    stream.on('close', () => {
      this.ended = true;
      this.wake();
    });
  }

  private apply(m: Json): void {
    if (m.KeepAlive === true) {
      this.keepAlives++;
      return;
    }
    this.messages.push(m);
    if (m.Node) this.self = m.Node as Json;
    if (m.PacketFilter) this.packetFilter = m.PacketFilter;
    if (m.Peers) {
      this.peers.clear();
      for (const p of m.Peers as Json[]) this.peers.set(p.ID as number, p);
    }
    for (const p of (m.PeersChanged as Json[] | undefined) ?? []) this.peers.set(p.ID as number, p);
    for (const id of (m.PeersRemoved as number[] | undefined) ?? []) this.peers.delete(id);
    for (const patch of (m.PeersChangedPatch as Json[] | undefined) ?? []) {
      const peer = this.peers.get(patch.NodeID as number);
      if (!peer) throw new Error(`patch for unknown peer ${patch.NodeID}`);
      const { NodeID: _id, DERPRegion, ...rest } = patch;
      Object.assign(peer, rest, DERPRegion === undefined ? {} : { HomeDERP: DERPRegion });
    }
  }

  private wake() {
    for (const w of this.waiters.splice(0)) w();
  }

  peerNamed(name: string): Json | undefined {
    return [...this.peers.values()].find((p) => (p.Name as string).startsWith(`${name}.`));
  }

  /** Waits until `test` holds (checked on every message), failing after `timeoutMs`. */
  async until(what: string, test: (r: MapReader) => boolean, timeoutMs = 4000): Promise<void> {
    const start = Date.now();
    while (!test(this)) {
      const left = timeoutMs - (Date.now() - start);
      if (left <= 0 || this.ended) {
        throw new Error(
          `${this.ended ? 'stream ended' : 'timed out'} waiting for ${what}; got ${JSON.stringify(this.messages)}`,
        );
      }
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
  }
}

/** A Tailscale client's keys and calls, enough to register and follow a map stream in tests. */
export class TsTestClient {
  readonly machine = x25519.utils.randomSecretKey();
  nodePrivate = x25519.utils.randomSecretKey();
  readonly disco = x25519.utils.randomSecretKey();
  private conn: Ts2021Connection | null = null;

  constructor(
    private readonly url: string,
    readonly version = 130,
    /** Source address of its control connection; the system's choice when not given. */
    readonly localAddress?: string,
  ) {}

  get nodeKey(): string {
    return `nodekey:${hex(publicOf(this.nodePrivate))}`;
  }
  get discoKey(): string {
    return `discokey:${hex(publicOf(this.disco))}`;
  }
  /** The node key as Weft stores it (base64). */
  get nodeKeyBase64(): string {
    return Buffer.from(publicOf(this.nodePrivate)).toString('base64');
  }

  async connection(): Promise<Ts2021Connection> {
    if (this.conn) return this.conn;
    const keys = (await (await fetch(`${this.url}/key?v=${this.version}`)).json()) as { publicKey: string };
    const u = new URL(this.url);
    this.conn = await connectTs2021({
      host: u.hostname,
      port: Number(u.port),
      machinePrivate: this.machine,
      controlPublic: new Uint8Array(Buffer.from(keys.publicKey.slice(5), 'hex')),
      // As tailscaled: its capability version is the Noise protocol version (headscale refuses 1).
      version: this.version,
      localAddress: this.localAddress,
    });
    return this.conn;
  }

  async register(
    extra: Record<string, unknown> = {},
    hostname = 'ts-laptop',
  ): Promise<Record<string, unknown>> {
    const c = await this.connection();
    const r = await c.post('/machine/register', {
      Version: this.version,
      NodeKey: this.nodeKey,
      OldNodeKey: `nodekey:${'0'.repeat(64)}`,
      Hostinfo: { Hostname: hostname, OS: 'linux', IPNVersion: '1.102.5-test' },
      ...extra,
    });
    if (r.status !== 200) throw new Error(`register: HTTP ${r.status}: ${r.body}`);
    return JSON.parse(r.body.toString()) as Record<string, unknown>;
  }

  /** Opens a map request; `decode` undoes zstd (the test passes fzstd's decompress). */
  async map(
    extra: Record<string, unknown>,
    decode: (b: Uint8Array) => Uint8Array = (b) => b,
  ): Promise<MapReader> {
    const c = await this.connection();
    return new MapReader(
      c.stream('/machine/map', {
        Version: this.version,
        NodeKey: this.nodeKey,
        DiscoKey: this.discoKey,
        Stream: true,
        Hostinfo: {
          Hostname: 'ts-laptop',
          OS: 'linux',
          IPNVersion: '1.102.5-test',
          NetInfo: { PreferredDERP: 1 },
        },
        ...extra,
      }),
      decode,
    );
  }

  close(): void {
    this.conn?.close();
    this.conn = null;
  }
}
