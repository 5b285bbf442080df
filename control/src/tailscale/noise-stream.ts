import { Duplex } from 'node:stream';
import {
  HEADER_LEN,
  MAX_MESSAGE_LEN,
  MAX_PLAINTEXT_LEN,
  MSG_RECORD,
  TAG_LEN,
  type TransportCipher,
} from './noise.js';

// The plaintext side of an established ts2021 connection, as a Duplex that HTTP/2 can run on:
// records from the socket are checked and decrypted in order; writes are cut into records. A frame
// that is not a record, too large, or fails to decrypt ends the connection (the ciphers are then out
// of step with the client's, so nothing after it could be trusted).

export class NoiseStream extends Duplex {
  private pending: Buffer = Buffer.alloc(0);

  constructor(
    private readonly socket: Duplex,
    private readonly rx: TransportCipher,
    private readonly tx: TransportCipher,
    /** Bytes that arrived after the handshake, before this stream took the socket over. */
    head: Buffer = Buffer.alloc(0),
  ) {
    super();
    socket.on('data', (chunk: Buffer) => this.receive(chunk));
    socket.on('end', () => this.push(null));
    socket.on('error', (err) => this.destroy(err));
    socket.on('close', () => this.destroy());
    if (head.length > 0) this.receive(head);
  }

  private receive(chunk: Buffer): void {
    this.pending = this.pending.length === 0 ? chunk : Buffer.concat([this.pending, chunk]);
    while (this.pending.length >= HEADER_LEN) {
      const length = this.pending.readUInt16BE(1);
      if (this.pending[0] !== MSG_RECORD || HEADER_LEN + length > MAX_MESSAGE_LEN) {
        this.destroy(new Error(`ts2021: unexpected frame (type ${this.pending[0]}, ${length} bytes)`));
        return;
      }
      if (this.pending.length < HEADER_LEN + length) return;
      const ciphertext = this.pending.subarray(HEADER_LEN, HEADER_LEN + length);
      this.pending = this.pending.subarray(HEADER_LEN + length);
      let plaintext: Uint8Array;
      try {
        plaintext = this.rx.open(ciphertext);
      } catch {
        this.destroy(new Error('ts2021: a record failed to decrypt'));
        return;
      }
      if (plaintext.length > 0) this.push(Buffer.from(plaintext));
    }
  }

  override _read(): void {
    // Data is pushed as records arrive; HTTP/2 reads what it gets.
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, done: (err?: Error | null) => void): void {
    this.seal([chunk], done);
  }

  // HTTP/2 hands over a batch of buffers at once (frame headers, and a map's parts): they are
  // sealed together into full records, not a record (and a socket write) for each.
  override _writev(chunks: { chunk: Buffer }[], done: (err?: Error | null) => void): void {
    this.seal(
      chunks.map((c) => c.chunk),
      done,
    );
  }

  private seal(parts: readonly Buffer[], done: (err?: Error | null) => void): void {
    const length = parts.reduce((sum, part) => sum + part.length, 0);
    const records = Math.ceil(length / MAX_PLAINTEXT_LEN);
    const out = Buffer.allocUnsafe(length + records * (HEADER_LEN + TAG_LEN));
    let written = 0;
    let part = 0;
    let offset = 0;
    for (let left = length; left > 0; ) {
      const size = Math.min(MAX_PLAINTEXT_LEN, left);
      const pieces: Buffer[] = [];
      for (let need = size; need > 0; ) {
        const from = parts[part] as Buffer;
        const take = Math.min(need, from.length - offset);
        if (take > 0) pieces.push(from.subarray(offset, offset + take));
        offset += take;
        need -= take;
        if (offset === from.length) {
          part++;
          offset = 0;
        }
      }
      written += this.tx.sealInto(pieces, out, written);
      left -= size;
    }
    this.socket.write(out, done);
  }

  override _final(done: (err?: Error | null) => void): void {
    this.socket.end(done);
  }

  override _destroy(err: Error | null, done: (err?: Error | null) => void): void {
    this.socket.destroy();
    done(err);
  }
}
