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
 * Splits a stream into frames. It holds at most one partial frame (plus the chunk that arrived
 * after it), and refuses (throws DerpFrameError) a header announcing more than `maxPayload()`
 * bytes before buffering any of it; the limit is asked for each frame, so it may change between
 * frames (it does at login). A frame that straddles two chunks is copied, and only it: the rest of
 * the new chunk is read in place.
 */
export class DerpFrameReader {
  private buf: Buffer = Buffer.alloc(0);
  private at = 0;
  private readonly queued: Buffer[] = [];

  constructor(private readonly maxPayload: () => number) {}

  /** Adds a chunk; take the frames with `next()` until it returns null. */
  push(chunk: Buffer): void {
    this.queued.push(chunk);
  }

  /** The bytes after the last frame taken (a partial frame). */
  rest(): Buffer {
    return Buffer.concat([this.buf.subarray(this.at), ...this.queued.splice(0)]);
  }

  /** The next whole frame, or null when more bytes are needed. */
  next(): DerpFrame | null {
    for (;;) {
      const { buf, at } = this;
      const have = buf.length - at;
      let need = DERP_FRAME_HEADER_BYTES;
      if (have >= DERP_FRAME_HEADER_BYTES) {
        const length = buf.readUInt32BE(at + 1);
        const max = this.maxPayload();
        if (length > max) throw new DerpFrameError(`frame of ${length} bytes is over the limit of ${max}`);
        need += length;
        if (have >= need) {
          const end = at + need;
          this.at = end;
          return {
            type: buf[at] as number,
            frame: buf.subarray(at, end),
            payload: buf.subarray(at + DERP_FRAME_HEADER_BYTES, end),
          };
        }
      }
      const chunk = this.queued.shift();
      if (chunk === undefined) return null;
      if (have === 0) {
        this.buf = chunk;
      } else if (have >= DERP_FRAME_HEADER_BYTES && chunk.length > need - have) {
        // Complete just this frame; the rest of the chunk waits its turn, uncopied.
        this.buf = Buffer.concat([buf.subarray(at), chunk.subarray(0, need - have)]);
        this.queued.unshift(chunk.subarray(need - have));
      } else {
        this.buf = Buffer.concat([buf.subarray(at), chunk]);
      }
      this.at = 0;
    }
  }
}
