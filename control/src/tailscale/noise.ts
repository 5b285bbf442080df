import { createCipheriv, createDecipheriv } from 'node:crypto';
import { chacha20poly1305 } from '@noble/ciphers/chacha.js';
import { blake2s } from '@noble/hashes/blake2.js';
import { hkdf } from '@noble/hashes/hkdf.js';
import { x25519Public, x25519RandomPrivate, x25519Shared } from '../crypto/x25519.js';

// The responder side of Tailscale's control transport ("ts2021"): Noise_IK_25519_ChaChaPoly_BLAKE2s
// with Tailscale's prologue and framing. The client knows control's static key (GET /key) and sends
// its machine key encrypted in the first message, so a completed handshake proves the machine key.
// Frames: the initiation is [version u16][type u8][length u16][96 bytes]; every later frame is
// [type u8][length u16][payload], big-endian, at most 4096 bytes. Transport nonces are big-endian
// counters (Tailscale's choice, where the Noise spec says little-endian).

export const PROTOCOL_NAME = 'Noise_IK_25519_ChaChaPoly_BLAKE2s';
const PROLOGUE_PREFIX = 'Tailscale Control Protocol v';

export const MSG_INITIATION = 1;
export const MSG_RESPONSE = 2;
export const MSG_ERROR = 3;
export const MSG_RECORD = 4;

export const INITIATION_HEADER_LEN = 5;
export const INITIATION_LEN = 101;
export const HEADER_LEN = 3;
export const MAX_MESSAGE_LEN = 4096;
export const TAG_LEN = 16;
export const MAX_PLAINTEXT_LEN = MAX_MESSAGE_LEN - HEADER_LEN - TAG_LEN;

/** A handshake refused for a reason the client may be told (it is sent back unencrypted). */
export class NoiseHandshakeError extends Error {}

const ZERO_NONCE = new Uint8Array(12);
const utf8 = (s: string) => new TextEncoder().encode(s);

function concat(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** The handshake's running hash and chaining key (Noise's SymmetricState). */
class SymmetricState {
  h: Uint8Array = blake2s(utf8(PROTOCOL_NAME));
  ck: Uint8Array = this.h;

  mixHash(data: Uint8Array): void {
    this.h = blake2s(concat(this.h, data));
  }

  /** MixKey(X25519(priv, pub)); returns the one-use key for the next encrypt or decrypt. */
  mixDH(priv: Uint8Array, pub: Uint8Array): Uint8Array {
    const out = hkdf(blake2s, x25519Shared(priv, pub), this.ck, undefined, 64);
    this.ck = out.slice(0, 32);
    return out.slice(32);
  }

  encryptAndHash(key: Uint8Array, plaintext: Uint8Array): Uint8Array {
    const sealed = chacha20poly1305(key, ZERO_NONCE, this.h).encrypt(plaintext);
    this.mixHash(sealed);
    return sealed;
  }

  decryptAndHash(key: Uint8Array, ciphertext: Uint8Array): Uint8Array {
    const opened = chacha20poly1305(key, ZERO_NONCE, this.h).decrypt(ciphertext);
    this.mixHash(ciphertext);
    return opened;
  }

  split(): [Uint8Array, Uint8Array] {
    const out = hkdf(blake2s, new Uint8Array(0), this.ck, undefined, 64);
    return [out.slice(0, 32), out.slice(32)];
  }
}

/**
 * One direction of the transport: ChaCha20-Poly1305 under a counter nonce, never reused. Records
 * go through node:crypto (OpenSSL): every byte of every map is sealed here, and the handshake's
 * pure-JavaScript AEAD costs about ten times as much per byte.
 */
export class TransportCipher {
  private counter = 0n;
  constructor(private readonly key: Uint8Array) {}

  private nextNonce(): Uint8Array {
    const nonce = new Uint8Array(12);
    new DataView(nonce.buffer).setBigUint64(4, this.counter, false);
    this.counter += 1n;
    return nonce;
  }

  /** A whole record frame carrying `plaintext` (at most MAX_PLAINTEXT_LEN bytes). */
  seal(plaintext: Uint8Array): Uint8Array {
    const frame = Buffer.alloc(HEADER_LEN + plaintext.length + TAG_LEN);
    this.sealInto([plaintext], frame, 0);
    return frame;
  }

  /**
   * Writes the record frame carrying `pieces` (their bytes in order, at most MAX_PLAINTEXT_LEN in
   * all) into `out` at `at`; returns its length. A large or vectored write is sealed record by record
   * into one buffer, not into a buffer per record (or per piece) joined after.
   */
  sealInto(pieces: readonly Uint8Array[], out: Buffer, at: number): number {
    const length = pieces.reduce((sum, piece) => sum + piece.length, 0);
    if (length > MAX_PLAINTEXT_LEN) throw new Error('record plaintext too large');
    const cipher = createCipheriv('chacha20-poly1305', this.key, this.nextNonce(), {
      authTagLength: TAG_LEN,
    });
    out[at] = MSG_RECORD;
    out.writeUInt16BE(length + TAG_LEN, at + 1);
    let into = at + HEADER_LEN;
    for (const piece of pieces) into += cipher.update(piece).copy(out, into);
    into += cipher.final().copy(out, into);
    cipher.getAuthTag().copy(out, into);
    return HEADER_LEN + length + TAG_LEN;
  }

  /** The plaintext of one record's payload; throws if it was not sealed by the peer in order. */
  open(ciphertext: Uint8Array): Uint8Array {
    if (ciphertext.length < TAG_LEN) throw new Error('record shorter than its tag');
    const decipher = createDecipheriv('chacha20-poly1305', this.key, this.nextNonce(), {
      authTagLength: TAG_LEN,
    });
    decipher.setAuthTag(ciphertext.subarray(ciphertext.length - TAG_LEN));
    const plaintext = decipher.update(ciphertext.subarray(0, ciphertext.length - TAG_LEN));
    decipher.final(); // throws when the tag does not match
    return plaintext;
  }
}

export interface NoiseSession {
  /** The control protocol version the client announced (its capability version's transport). */
  version: number;
  /** The client's machine public key, proven by the handshake. */
  machineKey: Uint8Array;
  /** The response frame to send before any record. */
  response: Uint8Array;
  /** Decrypts what the client sends. */
  rx: TransportCipher;
  /** Encrypts what control sends. */
  tx: TransportCipher;
}

/** Reads the 5-byte initiation header: the announced version and the payload length it claims. */
function initiationHeader(init: Uint8Array): { version: number; type: number; length: number } {
  const view = new DataView(init.buffer, init.byteOffset, init.byteLength);
  return { version: view.getUint16(0, false), type: init[2] as number, length: view.getUint16(3, false) };
}

/**
 * Answers a client's initiation message with control's static private key. Throws
 * NoiseHandshakeError for a malformed message, or for one not encrypted to this control's key (a
 * client holding an old /key, or garbage): nothing about the client is kept either way.
 */
export function respondToInitiation(
  controlPrivate: Uint8Array,
  init: Uint8Array,
  ephemeralPrivate: Uint8Array = x25519RandomPrivate(),
): NoiseSession {
  if (init.length !== INITIATION_LEN) throw new NoiseHandshakeError('wrong handshake initiation size');
  const { version, type, length } = initiationHeader(init);
  if (type !== MSG_INITIATION) throw new NoiseHandshakeError('unexpected handshake message type');
  if (length !== INITIATION_LEN - INITIATION_HEADER_LEN)
    throw new NoiseHandshakeError('wrong handshake initiation length');

  const s = new SymmetricState();
  s.mixHash(utf8(`${PROLOGUE_PREFIX}${version}`));
  s.mixHash(x25519Public(controlPrivate));
  const clientEphemeral = init.slice(5, 37);
  s.mixHash(clientEphemeral);
  let machineKey: Uint8Array;
  try {
    machineKey = s.decryptAndHash(s.mixDH(controlPrivate, clientEphemeral), init.slice(37, 85));
    s.decryptAndHash(s.mixDH(controlPrivate, machineKey), init.slice(85, 101));
  } catch {
    throw new NoiseHandshakeError(
      'handshake not encrypted to this control server’s key (fetch /key again) or corrupted',
    );
  }

  const ephemeralPublic = x25519Public(ephemeralPrivate);
  s.mixHash(ephemeralPublic);
  s.mixDH(ephemeralPrivate, clientEphemeral);
  const tag = s.encryptAndHash(s.mixDH(ephemeralPrivate, machineKey), new Uint8Array(0));
  const [toControl, toClient] = s.split();
  const response = new Uint8Array(3 + 32 + TAG_LEN);
  response[0] = MSG_RESPONSE;
  new DataView(response.buffer).setUint16(1, 32 + TAG_LEN, false);
  response.set(ephemeralPublic, 3);
  response.set(tag, 35);
  return {
    version,
    machineKey,
    response,
    rx: new TransportCipher(toControl),
    tx: new TransportCipher(toClient),
  };
}

/** An unencrypted error frame: the only thing a refused client is told on the upgraded stream. */
export function errorFrame(message: string): Uint8Array {
  const text = utf8(message).slice(0, 1024);
  const frame = new Uint8Array(HEADER_LEN + text.length);
  frame[0] = MSG_ERROR;
  new DataView(frame.buffer).setUint16(1, text.length, false);
  frame.set(text, HEADER_LEN);
  return frame;
}
