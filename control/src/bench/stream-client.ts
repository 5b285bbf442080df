import { createHash, randomBytes } from 'node:crypto';
import { connect, type Socket } from 'node:net';

// A load node's WebSocket stream, read in place: the HTTP upgrade and RFC 6455 frames over a plain
// socket whose reads all land in one buffer of this process. A message's bytes are kept only when
// the caller asks for them on seeing its head. At 6,000 allow-all nodes the load reads 10 GB of
// whole maps it only counts; through `ws` every fragment was copied out of the socket's reads, the
// fragments joined into the message, and the garbage collector took half the load process's CPU.
// A message still arrives when its last byte is read, as it did through `ws`.

/** As `ws` numbers them (what the bench prints when a node is not back). */
export const CONNECTING = 0;
export const OPEN = 1;
export const CLOSING = 2;
export const CLOSED = 3;

const GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';
/** Every socket's reads land here: each is handled before the next read, and what is kept is copied. */
const READS = Buffer.allocUnsafe(64 * 1024);
/** An upgrade answer longer than this is not one (control's are a few hundred bytes). */
const MAX_ANSWER = 16 * 1024;

export interface StreamHandlers {
  /** The TCP connection is up (the kernel's handshake: the server may not have accepted it yet). */
  connected(): void;
  /** The upgrade was answered with 101. */
  upgrade(): void;
  /** A message's first `headBytes` bytes (fewer if shorter): whether to keep the whole message. */
  keep(head: Buffer): boolean;
  /** A whole message arrived (its last byte read): its head, its length, its bytes if kept. */
  message(head: Buffer, length: number, body: Buffer | null): void;
  /** The upgrade was answered with another status. */
  refused(status: number): void;
  error(err: NodeJS.ErrnoException): void;
  /** The socket is closed (after an error, a refusal, a close frame or terminate). */
  close(): void;
}

/**
 * RFC 6455 frames from the server, fed as they are read: a text or binary message (fragmented or
 * not) is reported once whole; pings are handed back for their pong; a close frame ends it.
 */
export class FrameReader {
  /** A frame header being read (it may span reads): at most 14 bytes. */
  private readonly header = Buffer.alloc(14);
  private headerHave = 0;
  /** A header was read and its payload (possibly empty) is not yet ended. */
  private inPayload = false;
  /** Payload bytes of the current frame still to come. */
  private left = 0;
  private fin = false;
  /** The current frame's opcode when it is a control frame (ping, pong, close), else 0. */
  private controlFrame = 0;
  /** The control frame's payload (at most 125 bytes). */
  private control: Buffer[] = [];
  /** The message being read: its opcode (0: none), its head so far, its length so far, its parts if kept. */
  private opcode = 0;
  private head = Buffer.alloc(0);
  private length = 0;
  private parts: Buffer[] | null = null;
  private decided = false;

  constructor(
    private readonly headBytes: number,
    private readonly handlers: Pick<StreamHandlers, 'keep' | 'message'> & {
      ping(payload: Buffer): void;
      closed(): void;
    },
  ) {}

  feed(data: Buffer): void {
    let at = 0;
    while (at < data.length) {
      if (!this.inPayload) {
        at = this.readHeader(data, at);
        continue;
      }
      const take = Math.min(this.left, data.length - at);
      this.payload(data.subarray(at, at + take));
      at += take;
      this.left -= take;
      if (this.left === 0) this.endFrame();
    }
  }

  /** The header's size so far as known: 2, then with its extended length (a server never masks). */
  private headerSize(): number {
    if (this.headerHave < 2) return 2;
    const len7 = (this.header[1] as number) & 0x7f;
    return 2 + (len7 === 126 ? 2 : len7 === 127 ? 8 : 0);
  }

  private readHeader(data: Buffer, at: number): number {
    while (at < data.length && this.headerHave < this.headerSize())
      this.header[this.headerHave++] = data[at++] as number;
    if (this.headerHave < this.headerSize()) return at;
    const b0 = this.header[0] as number;
    const b1 = this.header[1] as number;
    if ((b1 & 0x80) !== 0) throw new Error('a server frame is never masked');
    const len7 = b1 & 0x7f;
    this.left =
      len7 === 126
        ? this.header.readUInt16BE(2)
        : len7 === 127
          ? Number(this.header.readBigUInt64BE(2))
          : len7;
    this.headerHave = 0;
    this.fin = (b0 & 0x80) !== 0;
    const opcode = b0 & 0x0f;
    // A control frame may come between a message's fragments: it is not the message's.
    this.controlFrame = opcode >= 8 ? opcode : 0;
    if (opcode >= 8) this.control = [];
    else if (opcode !== 0) {
      if (this.opcode !== 0) throw new Error('a message began inside another');
      this.opcode = opcode;
    } else if (this.opcode === 0) throw new Error('a continuation without a message');
    this.inPayload = true;
    if (this.left === 0) this.endFrame();
    return at;
  }

  private payload(bytes: Buffer): void {
    if (this.controlFrame !== 0) {
      this.control.push(Buffer.from(bytes));
      return;
    }
    this.length += bytes.length;
    if (!this.decided) {
      const into = bytes.subarray(0, this.headBytes - this.head.length);
      this.head = Buffer.concat([this.head, into]);
      bytes = bytes.subarray(into.length);
      if (this.head.length < this.headBytes) return;
      this.decide();
    }
    if (this.parts !== null && bytes.length > 0) this.parts.push(Buffer.from(bytes));
  }

  private decide(): void {
    this.decided = true;
    this.parts = this.handlers.keep(this.head) ? [this.head] : null;
  }

  private endFrame(): void {
    this.inPayload = false;
    const control = this.controlFrame;
    if (control !== 0) {
      this.controlFrame = 0;
      const payload = Buffer.concat(this.control);
      this.control = [];
      if (control === 0x9) this.handlers.ping(payload);
      else if (control === 0x8) this.handlers.closed();
      return;
    }
    if (!this.fin) return;
    if (!this.decided) this.decide();
    const body = this.parts === null ? null : Buffer.concat(this.parts);
    this.handlers.message(this.head, this.length, body);
    this.opcode = 0;
    this.head = Buffer.alloc(0);
    this.length = 0;
    this.parts = null;
    this.decided = false;
  }
}

/** A client frame: FIN, `opcode`, masked as RFC 6455 asks of a client. */
function clientFrame(opcode: number, payload: Buffer): Buffer {
  const len = payload.length;
  const ext = len < 126 ? 0 : len < 65536 ? 2 : 8;
  const frame = Buffer.allocUnsafe(2 + ext + 4 + len);
  frame[0] = 0x80 | opcode;
  frame[1] = 0x80 | (ext === 0 ? len : ext === 2 ? 126 : 127);
  if (ext === 2) frame.writeUInt16BE(len, 2);
  if (ext === 8) frame.writeBigUInt64BE(BigInt(len), 2);
  const mask = randomBytes(4);
  mask.copy(frame, 2 + ext);
  const at = 2 + ext + 4;
  for (let i = 0; i < len; i++) frame[at + i] = (payload[i] as number) ^ (mask[i & 3] as number);
  return frame;
}

/** One node's stream: opened at once; `handlers` hear of it. */
export class StreamClient {
  readyState = CONNECTING;
  private readonly socket: Socket;
  /** The upgrade's answer until its end is read. */
  private answer: Buffer | null = Buffer.alloc(0);
  private readonly reader: FrameReader;

  constructor(
    url: string,
    path: string,
    headers: Record<string, string>,
    localAddress: string,
    headBytes: number,
    private readonly handlers: StreamHandlers,
  ) {
    const u = new URL(url);
    const key = randomBytes(16).toString('base64');
    const accept = createHash('sha1')
      .update(key + GUID)
      .digest('base64');
    this.reader = new FrameReader(headBytes, {
      keep: (head) => handlers.keep(head),
      message: (head, length, body) => handlers.message(head, length, body),
      ping: (payload) => this.write(0xa, payload),
      closed: () => {
        // The server ends the stream: answer its close, and the socket ends.
        this.write(0x8, Buffer.alloc(0));
        this.readyState = CLOSING;
        this.socket.end();
      },
    });
    this.socket = connect({
      host: u.hostname,
      port: Number(u.port),
      localAddress,
      noDelay: true,
      onread: {
        buffer: READS,
        callback: (n: number, buf: Uint8Array) => {
          this.read(Buffer.from(buf.buffer, buf.byteOffset, n), accept);
          return true;
        },
      },
    });
    const lines = [
      `GET ${path} HTTP/1.1`,
      `Host: ${u.host}`,
      'Upgrade: websocket',
      'Connection: Upgrade',
      `Sec-WebSocket-Key: ${key}`,
      'Sec-WebSocket-Version: 13',
      ...Object.entries(headers).map(([k, v]) => `${k}: ${v}`),
    ];
    this.socket.write(`${lines.join('\r\n')}\r\n\r\n`);
    this.socket.once('connect', () => handlers.connected());
    this.socket.on('error', (err) => handlers.error(err));
    this.socket.on('close', () => {
      this.readyState = CLOSED;
      handlers.close();
    });
  }

  /** Sends a text message. */
  send(text: string): void {
    this.write(0x1, Buffer.from(text));
  }

  terminate(): void {
    this.readyState = CLOSING;
    this.socket.destroy();
  }

  private write(opcode: number, payload: Buffer): void {
    if (this.readyState === OPEN) this.socket.write(clientFrame(opcode, payload));
  }

  private read(data: Buffer, accept: string): void {
    if (this.readyState === CLOSED || this.socket.destroyed) return;
    if (this.answer === null) {
      try {
        this.reader.feed(data);
      } catch (err) {
        this.fail(err as Error);
      }
      return;
    }
    // The answer is small: kept (copied) until its end, what follows it is the first frames.
    this.answer = Buffer.concat([this.answer, data]);
    const end = this.answer.indexOf('\r\n\r\n');
    if (end === -1) {
      if (this.answer.length > MAX_ANSWER) this.fail(new Error('no end to the upgrade answer'));
      return;
    }
    const text = this.answer.subarray(0, end).toString('latin1');
    const rest = this.answer.subarray(end + 4);
    this.answer = null;
    const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(text)?.[1] ?? 0);
    if (status !== 101) {
      this.handlers.refused(status);
      this.terminate();
      return;
    }
    if (!new RegExp(`^sec-websocket-accept: *${accept.replace(/[+/]/g, '\\$&')} *$`, 'im').test(text)) {
      this.fail(new Error('the upgrade answer does not accept this key'));
      return;
    }
    this.readyState = OPEN;
    this.handlers.upgrade();
    if (rest.length > 0) this.read(rest, accept);
  }

  private fail(err: Error): void {
    this.handlers.error(err);
    this.terminate();
  }
}
