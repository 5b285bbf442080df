import { PassThrough } from 'node:stream';
import { chacha20poly1305 } from '@noble/ciphers/chacha.js';
import { x25519 } from '@noble/curves/ed25519.js';
import { describe, expect, it } from 'vitest';
import { initiate } from '../testing/tailscale-client.js';
import {
  errorFrame,
  HEADER_LEN,
  MAX_PLAINTEXT_LEN,
  MSG_ERROR,
  NoiseHandshakeError,
  respondToInitiation,
  TransportCipher,
} from './noise.js';
import { NoiseStream } from './noise-stream.js';

const control = x25519.utils.randomSecretKey();
const controlPublic = x25519.getPublicKey(control);
const machine = x25519.utils.randomSecretKey();

function nonce(n: number): Uint8Array {
  const out = new Uint8Array(12);
  new DataView(out.buffer).setBigUint64(4, BigInt(n), false);
  return out;
}

describe('ts2021 Noise IK responder', () => {
  it('completes a handshake built independently and learns the machine key and version', () => {
    const init = initiate(machine, controlPublic, 62);
    const session = respondToInitiation(control, init.message);
    expect(session.version).toBe(62);
    expect(Buffer.from(session.machineKey)).toEqual(Buffer.from(x25519.getPublicKey(machine)));
    expect(session.response.length).toBe(51);
    const [clientTx, clientRx] = init.finish(session.response);

    // control → client: record frames with big-endian counter nonces from 0.
    for (let i = 0; i < 3; i++) {
      const frame = session.tx.seal(new TextEncoder().encode(`hello ${i}`));
      expect(frame[0]).toBe(4);
      expect(new DataView(frame.buffer).getUint16(1)).toBe(frame.length - 3);
      const opened = chacha20poly1305(clientRx, nonce(i)).decrypt(frame.slice(3));
      expect(new TextDecoder().decode(opened)).toBe(`hello ${i}`);
    }
    // client → control.
    for (let i = 0; i < 2; i++) {
      const sealed = chacha20poly1305(clientTx, nonce(i)).encrypt(new TextEncoder().encode(`up ${i}`));
      expect(new TextDecoder().decode(session.rx.open(sealed))).toBe(`up ${i}`);
    }
  });

  it('refuses a record replayed or out of order', () => {
    const init = initiate(machine, controlPublic, 1);
    const session = respondToInitiation(control, init.message);
    const [clientTx] = init.finish(session.response);
    const first = chacha20poly1305(clientTx, nonce(0)).encrypt(new Uint8Array([1]));
    session.rx.open(first);
    expect(() => session.rx.open(first)).toThrow();
  });

  it('refuses an initiation encrypted to another control key', () => {
    const other = x25519.getPublicKey(x25519.utils.randomSecretKey());
    const init = initiate(machine, other, 1);
    expect(() => respondToInitiation(control, init.message)).toThrow(/fetch \/key again/);
  });

  it('refuses truncated, mistyped and tampered initiations with clear reasons', () => {
    const { message } = initiate(machine, controlPublic, 1);
    expect(() => respondToInitiation(control, message.slice(0, 60))).toThrow(
      new NoiseHandshakeError('wrong handshake initiation size'),
    );
    const mistyped = message.slice();
    mistyped[2] = 4;
    expect(() => respondToInitiation(control, mistyped)).toThrow(/unexpected handshake message type/);
    const badLength = message.slice();
    badLength[4] = 95;
    expect(() => respondToInitiation(control, badLength)).toThrow(/wrong handshake initiation length/);
    const tampered = message.slice();
    tampered[100] = (tampered[100] as number) ^ 1;
    expect(() => respondToInitiation(control, tampered)).toThrow(NoiseHandshakeError);
    // A different announced version changes the prologue: the tag no longer verifies.
    const otherVersion = message.slice();
    otherVersion[1] = 2;
    expect(() => respondToInitiation(control, otherVersion)).toThrow(NoiseHandshakeError);
  });

  it('frames an error message as the client reads it', () => {
    const frame = errorFrame('too old');
    expect(frame[0]).toBe(MSG_ERROR);
    expect(new DataView(frame.buffer).getUint16(1)).toBe(7);
    expect(new TextDecoder().decode(frame.slice(3))).toBe('too old');
  });

  /** A Noise stream over a socket whose writes are collected, sealing and opening with `key`. */
  const sealingStream = (key: Uint8Array) => {
    const socket = new PassThrough();
    const writes: Buffer[] = [];
    socket.on('data', (chunk: Buffer) => writes.push(chunk));
    const stream = new NoiseStream(socket, new TransportCipher(key), new TransportCipher(key));
    return { stream, writes };
  };

  /** The plaintexts of the records in one socket write, opened in order as the peer would. */
  const openRecords = (key: Uint8Array, write: Buffer): Uint8Array[] => {
    const peer = new TransportCipher(key);
    const opened: Uint8Array[] = [];
    let rest = write;
    while (rest.length > 0) {
      const length = rest.readUInt16BE(1);
      opened.push(peer.open(rest.subarray(HEADER_LEN, HEADER_LEN + length)));
      rest = rest.subarray(HEADER_LEN + length);
    }
    return opened;
  };

  it('cuts a large write into records, sealed in order into one socket write', async () => {
    const key = new Uint8Array(32).fill(7);
    const { stream, writes } = sealingStream(key);
    const data = Buffer.alloc(3 * MAX_PLAINTEXT_LEN + 100);
    for (let i = 0; i < data.length; i++) data[i] = (i * 7) % 251;
    await new Promise<void>((resolve, reject) =>
      stream.write(data, (err) => (err ? reject(err) : resolve())),
    );
    expect(writes).toHaveLength(1);
    const opened = openRecords(key, writes[0] as Buffer);
    expect(opened.map((p) => p.length)).toEqual([
      MAX_PLAINTEXT_LEN,
      MAX_PLAINTEXT_LEN,
      MAX_PLAINTEXT_LEN,
      100,
    ]);
    expect(Buffer.concat(opened)).toEqual(data);
    stream.destroy();
  });

  it('seals a batch of small writes (HTTP/2 frames, a map in parts) into full records, one socket write', async () => {
    const key = new Uint8Array(32).fill(8);
    const { stream, writes } = sealingStream(key);
    const pieces = Array.from({ length: 100 }, (_, i) => Buffer.alloc(123, i));
    const written = new Promise<void>((resolve, reject) => {
      stream.cork();
      pieces.forEach((piece, i) => {
        stream.write(piece, i === pieces.length - 1 ? (err) => (err ? reject(err) : resolve()) : undefined);
      });
      stream.uncork();
    });
    await written;
    expect(writes).toHaveLength(1);
    const opened = openRecords(key, writes[0] as Buffer);
    expect(opened.map((p) => p.length)).toEqual([
      MAX_PLAINTEXT_LEN,
      MAX_PLAINTEXT_LEN,
      MAX_PLAINTEXT_LEN,
      12_300 - 3 * MAX_PLAINTEXT_LEN,
    ]);
    expect(Buffer.concat(opened)).toEqual(Buffer.concat(pieces));
    stream.destroy();
  });
});
