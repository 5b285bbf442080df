import { DERP_FRAME_HEADER_BYTES, type DerpFrameType } from '@weft/protocol';

// DERP framing: [type u8][length u32 BE][payload]. The reader takes a byte stream in arbitrary
// chunks (TCP reads, or WebSocket messages that need not align with frames) and yields whole
// frames, each a view of one buffer so a forwarded packet can be readdressed in place.

export interface DerpFrame {
  type: number;
  /** The whole frame, header included. */
  frame: Buffer;
  /** A view of the payload. */
  payload: Buffer;
}

/** One frame: header and payload in one new buffer. */
export function encodeDerpFrame(type: DerpFrameType, ...parts: Uint8Array[]): Buffer {
  let length = 0;
  for (const p of parts) length += p.length;
  const out = Buffer.allocUnsafe(DERP_FRAME_HEADER_BYTES + length);
  writeDerpHeader(out, type, length);
  let at = DERP_FRAME_HEADER_BYTES;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

export function writeDerpHeader(out: Uint8Array, type: DerpFrameType, length: number): void {
  out[0] = type;
  out[1] = length >>> 24;
  out[2] = (length >>> 16) & 0xff;
  out[3] = (length >>> 8) & 0xff;
  out[4] = length & 0xff;
}

export class DerpFrameError extends Error {}

/**
 * Splits a stream into frames. It holds at most one partial frame, and refuses (throws
 * DerpFrameError) a header announcing more than `maxPayload()` bytes before buffering any of it;
 * the limit is asked for each frame, so it may change between frames (it does at login).
 */
export class DerpFrameReader {
  private buf: Buffer = Buffer.alloc(0);
  private at = 0;

  constructor(private readonly maxPayload: () => number) {}

  /** Adds a chunk; take the frames with `next()` until it returns null. */
  push(chunk: Buffer): void {
    this.buf = this.at === this.buf.length ? chunk : Buffer.concat([this.buf.subarray(this.at), chunk]);
    this.at = 0;
  }

  /** The bytes after the last frame taken (a partial frame). */
  rest(): Buffer {
    return this.buf.subarray(this.at);
  }

  /** The next whole frame, or null when more bytes are needed. */
  next(): DerpFrame | null {
    const { buf, at } = this;
    if (buf.length - at < DERP_FRAME_HEADER_BYTES) return null;
    const length = buf.readUInt32BE(at + 1);
    const max = this.maxPayload();
    if (length > max) throw new DerpFrameError(`frame of ${length} bytes is over the limit of ${max}`);
    const end = at + DERP_FRAME_HEADER_BYTES + length;
    if (end > buf.length) return null;
    this.at = end;
    return {
      type: buf[at] as number,
      frame: buf.subarray(at, end),
      payload: buf.subarray(at + DERP_FRAME_HEADER_BYTES, end),
    };
  }
}
