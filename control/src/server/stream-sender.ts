import type { StreamServerMessage } from '@weft/protocol';
import type WebSocket from 'ws';
import { type Wire, wireLength, wireOf } from '../netmap/message-text.js';

// Writes the hub's messages to one node's WebSocket without letting a slow node cost control
// memory. While the socket holds more than `streamBufferBytes` unsent, the hub is told it is
// backlogged and stops building deltas for it; once what was queued has been written out, the hub
// sends one whole map instead of every delta it skipped (NetmapHub.resync). A node that stays
// backlogged for `streamStuckMs` is disconnected: it reconnects and starts from a whole map.
// A whole map still being written is not counted against the bound: a node that sees thousands of
// peers has a map larger than the bound, and counting it would answer every change with another map.

/**
 * A frame as a transport takes it: a stream message's JSON (text or UTF-8 bytes), or bytes in parts
 * written in order (a Tailscale map's parts, or a class's whole map: shared by every receiver, not
 * joined per receiver).
 */
export type Frame = Wire;

/** What the sender needs of a `ws` WebSocket (or of another transport, taking frames of type F). */
export interface SendingSocket<F extends Frame = Frame> {
  readonly readyState: number;
  /** Bytes queued and not yet handed to the kernel. */
  readonly bufferedAmount: number;
  /** Sends one frame: a stream message's JSON (text, UTF-8 bytes or their parts), or a transport's encoded frame. */
  send(data: F, done: (err?: Error) => void): void;
  terminate(): void;
}

const OPEN = 1;

/**
 * Writes `data` to `socket` as one text message (bytes too: they are a message's JSON, see
 * message-text.ts); parts as its fragments, so a class's shared whole-map bytes are written, not
 * joined per receiver. `done` is called once the last is written, with an error if it was not.
 */
export function sendFrame(socket: WebSocket, data: Frame, done: (err?: Error) => void): void {
  if (typeof data === 'string' || Buffer.isBuffer(data)) {
    socket.send(data, { binary: false }, done);
    return;
  }
  const last = data.length - 1;
  for (const [i, part] of data.entries()) {
    socket.send(part, { binary: false, fin: i === last }, i === last ? done : undefined);
  }
}

export class StreamSender<F extends Frame = Frame> {
  private stuck: NodeJS.Timeout | null = null;
  /** Bytes of whole maps queued and not yet written out. */
  private fullMapBytes = 0;

  constructor(
    private readonly socket: SendingSocket<F>,
    private readonly limits: { streamBufferBytes: number; streamStuckMs: number },
    /** It was backlogged and has drained: time for a whole map. */
    private readonly drained: () => void,
    /** Called before a stuck socket is terminated (to say why). */
    private readonly onStuck: () => void,
  ) {}

  send(this: StreamSender, message: StreamServerMessage): void {
    this.sendEncoded(wireOf(message), message.type === 'full');
  }

  /** Sends bytes already encoded for this socket (a Tailscale MapResponse frame); `full` if a whole map. */
  sendEncoded(data: F, full: boolean): void {
    if (this.socket.readyState !== OPEN) return;
    const fullBytes = full ? wireLength(data) : 0;
    this.fullMapBytes += fullBytes;
    this.socket.send(data, () => {
      this.fullMapBytes -= fullBytes;
      this.written();
    });
  }

  /** Over the bound: the hub holds its deltas back (and the stuck clock runs). */
  backlogged(): boolean {
    if (!this.overBound()) return false;
    this.stuck ??= setTimeout(() => {
      this.onStuck();
      this.socket.terminate();
    }, this.limits.streamStuckMs);
    return true;
  }

  /** The stream ended. */
  close(): void {
    if (this.stuck) clearTimeout(this.stuck);
    this.stuck = null;
  }

  /** Whether more than the bound is queued besides the whole maps in flight. */
  private overBound(): boolean {
    return this.socket.bufferedAmount - this.fullMapBytes > this.limits.streamBufferBytes;
  }

  private written(): void {
    if (this.stuck === null || this.overBound()) return;
    clearTimeout(this.stuck);
    this.stuck = null;
    this.drained();
  }
}
