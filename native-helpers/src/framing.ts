// Newline-delimited framing with a hard size limit. At most `maxBytes` of one unfinished line is ever
// held, so a client that never sends a newline cannot make the privileged process grow.

export interface Frames {
  /** Complete lines, without their newline. */
  lines: Buffer[];
  /** A line grew past the limit; the stream is unusable after this. */
  tooLarge: boolean;
}

export class LineSplitter {
  private parts: Buffer[] = [];
  private size = 0;
  private failed = false;

  constructor(private readonly maxBytes: number) {}

  push(chunk: Buffer): Frames {
    const lines: Buffer[] = [];
    if (this.failed) return { lines, tooLarge: true };
    let start = 0;
    for (let nl = chunk.indexOf(0x0a, start); nl >= 0; nl = chunk.indexOf(0x0a, start)) {
      if (this.size + (nl - start) > this.maxBytes) return this.fail(lines);
      this.parts.push(chunk.subarray(start, nl));
      lines.push(Buffer.concat(this.parts));
      this.parts = [];
      this.size = 0;
      start = nl + 1;
    }
    const rest = chunk.length - start;
    if (this.size + rest > this.maxBytes) return this.fail(lines);
    if (rest > 0) {
      // Copy so the socket's (possibly much larger) chunk is not kept alive by a small tail.
      this.parts.push(Buffer.from(chunk.subarray(start)));
      this.size += rest;
    }
    return { lines, tooLarge: false };
  }

  /** The unterminated last line at end of stream (as `printf '{…}' | socat` sends), if any. */
  finish(): Buffer | null {
    if (this.failed || this.size === 0) return null;
    const line = Buffer.concat(this.parts);
    this.parts = [];
    this.size = 0;
    return line;
  }

  private fail(lines: Buffer[]): Frames {
    this.failed = true;
    this.parts = [];
    this.size = 0;
    return { lines, tooLarge: true };
  }
}
