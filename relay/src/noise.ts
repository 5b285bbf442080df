import { timingSafeEqual } from 'node:crypto';
import { chacha20poly1305 } from '@noble/ciphers/chacha.js';
import { x25519 } from '@noble/curves/ed25519.js';
import { blake2s } from '@noble/hashes/blake2.js';
import { hmac } from '@noble/hashes/hmac.js';
import { concatBytes, utf8ToBytes } from '@noble/hashes/utils.js';

// The responder half of WireGuard's handshake, Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s, as the
// WireGuard whitepaper (section 5.4) specifies it, plus opening transport messages. Only what
// the reflector needs: it answers initiations and reads keepalives; it never sends data, never
// initiates, and uses no pre-shared key (WireGuard's default of 32 zero bytes).

const CONSTRUCTION = utf8ToBytes('Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s');
const IDENTIFIER = utf8ToBytes('WireGuard v1 zx2c4 Jason@zx2c4.com');
const LABEL_MAC1 = utf8ToBytes('mac1----');
const ZERO_PSK = new Uint8Array(32);
const EMPTY = new Uint8Array(0);

export const MessageType = { initiation: 1, response: 2, cookieReply: 3, transport: 4 } as const;
export const INITIATION_BYTES = 148;
export const RESPONSE_BYTES = 92;
export const TRANSPORT_HEADER_BYTES = 16;
const TAG_BYTES = 16;
/** A transport message with an empty payload: WireGuard's keepalive. */
export const KEEPALIVE_BYTES = TRANSPORT_HEADER_BYTES + TAG_BYTES;

const hash = (...parts: Uint8Array[]): Uint8Array => blake2s(concatBytes(...parts));
const mac = (key: Uint8Array, data: Uint8Array): Uint8Array => blake2s(data, { key, dkLen: 16 });
const hmacB = (key: Uint8Array, data: Uint8Array): Uint8Array => hmac(blake2s, key, data);

/** WireGuard's KDF_n: HKDF with HMAC-BLAKE2s, returning n 32-byte outputs. */
function kdf(key: Uint8Array, input: Uint8Array, n: 1 | 2 | 3): Uint8Array[] {
  const prk = hmacB(key, input);
  const out: Uint8Array[] = [];
  let prev: Uint8Array = EMPTY;
  for (let i = 1; i <= n; i++) {
    prev = hmacB(prk, concatBytes(prev, Uint8Array.of(i)));
    out.push(prev);
  }
  return out;
}

function nonce(counter: bigint): Uint8Array {
  const n = new Uint8Array(12);
  new DataView(n.buffer).setBigUint64(4, counter, true);
  return n;
}

function open(key: Uint8Array, counter: bigint, sealed: Uint8Array, aad: Uint8Array): Uint8Array | null {
  try {
    return chacha20poly1305(key, nonce(counter), aad).decrypt(sealed);
  } catch {
    return null;
  }
}

/** X25519, or null for a low-order public key (an all-zero shared secret). */
function dh(privateKey: Uint8Array, publicKey: Uint8Array): Uint8Array | null {
  try {
    return x25519.getSharedSecret(privateKey, publicKey);
  } catch {
    return null;
  }
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && timingSafeEqual(a, b);
}

const INITIAL_CHAIN = hash(CONSTRUCTION);
const INITIAL_HASH = hash(INITIAL_CHAIN, IDENTIFIER);

/** Everything the responder derives once from its static key. */
export interface ResponderIdentity {
  privateKey: Uint8Array;
  publicKey: Uint8Array;
  /** The key of mac1 on messages sent to us: HASH("mac1----" ‖ our public key). */
  mac1Key: Uint8Array;
  /** The handshake hash after mixing in our public key, the same for every initiation. */
  initialHash: Uint8Array;
}

export function responderIdentity(privateKey: Uint8Array): ResponderIdentity {
  const publicKey = x25519.getPublicKey(privateKey);
  return {
    privateKey,
    publicKey,
    mac1Key: hash(LABEL_MAC1, publicKey),
    initialHash: hash(INITIAL_HASH, publicKey),
  };
}

/** A handshake initiation that passed mac1 and decrypted: the initiator is who it claims. */
export interface Initiation {
  initiatorIndex: number;
  initiatorStatic: Uint8Array;
  initiatorEphemeral: Uint8Array;
  /** TAI64N, 12 bytes; must grow from one initiation to the next (replay protection). */
  timestamp: Uint8Array;
  chain: Uint8Array;
  hash: Uint8Array;
}

/**
 * Checks the message's shape and mac1 (cheap), asks `admit` whether to spend the Diffie-Hellman
 * work on it, then decrypts the initiator's static key and timestamp. Null when anything fails.
 */
export function consumeInitiation(
  me: ResponderIdentity,
  msg: Uint8Array,
  admit: () => boolean = () => true,
): Initiation | null {
  if (msg.length !== INITIATION_BYTES || msg[0] !== MessageType.initiation) return null;
  if ((msg[1] as number) | (msg[2] as number) | (msg[3] as number)) return null;
  if (!sameBytes(mac(me.mac1Key, msg.subarray(0, 116)), msg.subarray(116, 132))) return null;
  if (!admit()) return null;

  const initiatorIndex = new DataView(msg.buffer, msg.byteOffset).getUint32(4, true);
  const ephemeral = msg.slice(8, 40);
  const sealedStatic = msg.subarray(40, 88);
  const sealedTimestamp = msg.subarray(88, 116);

  let [chain] = kdf(INITIAL_CHAIN, ephemeral, 1) as [Uint8Array];
  let h = hash(me.initialHash, ephemeral);
  const es = dh(me.privateKey, ephemeral);
  if (es === null) return null;
  let key: Uint8Array;
  [chain, key] = kdf(chain, es, 2) as [Uint8Array, Uint8Array];
  const initiatorStatic = open(key, 0n, sealedStatic, h);
  if (initiatorStatic === null) return null;
  h = hash(h, sealedStatic);
  const ss = dh(me.privateKey, initiatorStatic);
  if (ss === null) return null;
  [chain, key] = kdf(chain, ss, 2) as [Uint8Array, Uint8Array];
  const timestamp = open(key, 0n, sealedTimestamp, h);
  if (timestamp === null) return null;
  h = hash(h, sealedTimestamp);
  return { initiatorIndex, initiatorStatic, initiatorEphemeral: ephemeral, timestamp, chain, hash: h };
}

export interface Response {
  /** The 92-byte handshake response to send back to the initiator's address. */
  message: Uint8Array;
  /** The key of the initiator's transport messages to us. */
  receiveKey: Uint8Array;
}

/**
 * Builds the handshake response to `init` with our session index `senderIndex`. We never send
 * transport data, so only the receiving key is returned.
 */
export function createResponse(
  init: Initiation,
  senderIndex: number,
  ephemeralPrivate: Uint8Array = x25519.utils.randomSecretKey(),
): Response | null {
  const ephemeral = x25519.getPublicKey(ephemeralPrivate);
  let [chain] = kdf(init.chain, ephemeral, 1) as [Uint8Array];
  let h = hash(init.hash, ephemeral);
  const ee = dh(ephemeralPrivate, init.initiatorEphemeral);
  const se = dh(ephemeralPrivate, init.initiatorStatic);
  if (ee === null || se === null) return null;
  [chain] = kdf(chain, ee, 1) as [Uint8Array];
  [chain] = kdf(chain, se, 1) as [Uint8Array];
  const [chain2, tau, key] = kdf(chain, ZERO_PSK, 3) as [Uint8Array, Uint8Array, Uint8Array];
  h = hash(h, tau);
  const sealedEmpty = chacha20poly1305(key, nonce(0n), h).encrypt(EMPTY);

  const message = new Uint8Array(RESPONSE_BYTES);
  const view = new DataView(message.buffer);
  message[0] = MessageType.response;
  view.setUint32(4, senderIndex, true);
  view.setUint32(8, init.initiatorIndex, true);
  message.set(ephemeral, 12);
  message.set(sealedEmpty, 44);
  message.set(mac(hash(LABEL_MAC1, init.initiatorStatic), message.subarray(0, 60)), 60);
  // mac2 stays zero: we never sent a cookie.
  const [receiveKey] = kdf(chain2, EMPTY, 2) as [Uint8Array, Uint8Array];
  return { message, receiveKey };
}

export interface TransportHeader {
  receiverIndex: number;
  counter: bigint;
}

export function parseTransportHeader(msg: Uint8Array): TransportHeader | null {
  if (msg.length < KEEPALIVE_BYTES || msg[0] !== MessageType.transport) return null;
  if ((msg[1] as number) | (msg[2] as number) | (msg[3] as number)) return null;
  const view = new DataView(msg.buffer, msg.byteOffset);
  return { receiverIndex: view.getUint32(4, true), counter: view.getBigUint64(8, true) };
}

/** Decrypts a transport message's payload; null when it does not authenticate. */
export function openTransport(
  receiveKey: Uint8Array,
  header: TransportHeader,
  msg: Uint8Array,
): Uint8Array | null {
  return open(receiveKey, header.counter, msg.subarray(TRANSPORT_HEADER_BYTES), EMPTY);
}

/** Compares TAI64N timestamps (big-endian seconds then nanoseconds): is `a` later than `b`? */
export function timestampAfter(a: Uint8Array, b: Uint8Array): boolean {
  for (let i = 0; i < 12; i++) {
    if (a[i] !== b[i]) return (a[i] as number) > (b[i] as number);
  }
  return false;
}
