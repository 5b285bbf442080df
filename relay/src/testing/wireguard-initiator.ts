import { chacha20poly1305 } from '@noble/ciphers/chacha.js';
import { x25519 } from '@noble/curves/ed25519.js';
import { blake2s } from '@noble/hashes/blake2.js';
import { hmac } from '@noble/hashes/hmac.js';
import { concatBytes, utf8ToBytes } from '@noble/hashes/utils.js';
import type { KeyPair } from '@weft/protocol';
import { expect } from 'vitest';

// Test support (part of no build): a WireGuard initiator written from the WireGuard whitepaper,
// so tests and the fuzz can forge, replay and corrupt messages to the reflector.
// reflector.real.test.ts checks the reflector against wireguard-go itself.

const hash = (...p: Uint8Array[]) => blake2s(concatBytes(...p));
const hmacB = (k: Uint8Array, d: Uint8Array) => hmac(blake2s, k, d);
function kdf(key: Uint8Array, input: Uint8Array, n: number): Uint8Array[] {
  const prk = hmacB(key, input);
  const out: Uint8Array[] = [];
  let prev: Uint8Array = new Uint8Array(0);
  for (let i = 1; i <= n; i++) {
    prev = hmacB(prk, concatBytes(prev, Uint8Array.of(i)));
    out.push(prev);
  }
  return out;
}
const nonce = (c: bigint) => {
  const n = new Uint8Array(12);
  new DataView(n.buffer).setBigUint64(4, c, true);
  return n;
};
const b = (k: string) => new Uint8Array(Buffer.from(k, 'base64'));
const CHAIN0 = hash(utf8ToBytes('Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s'));
const HASH0 = hash(CHAIN0, utf8ToBytes('WireGuard v1 zx2c4 Jason@zx2c4.com'));
const LABEL_MAC1 = utf8ToBytes('mac1----');

let tai64 = 1n;
/** A strictly increasing TAI64N-shaped timestamp. */
function timestamp(): Uint8Array {
  const t = new Uint8Array(12);
  new DataView(t.buffer).setBigUint64(0, 0x400000006553f100n + tai64++, false);
  return t;
}

/** A WireGuard initiator, enough to handshake with the reflector and send keepalives. */
export class Initiator {
  private ephemeral = x25519.utils.randomSecretKey();
  private chain: Uint8Array = new Uint8Array(0);
  private h: Uint8Array = new Uint8Array(0);
  readonly index = 0x01020304;
  sendKey: Uint8Array | null = null;
  counter = 0n;

  constructor(
    readonly keys: KeyPair,
    readonly responder: string,
  ) {}

  initiation(ts = timestamp()): Uint8Array {
    const sr = b(this.responder);
    const epub = x25519.getPublicKey(this.ephemeral);
    let [c] = kdf(CHAIN0, epub, 1) as [Uint8Array];
    let h = hash(hash(HASH0, sr), epub);
    let k: Uint8Array;
    [c, k] = kdf(c, x25519.getSharedSecret(this.ephemeral, sr), 2) as [Uint8Array, Uint8Array];
    const sealedStatic = chacha20poly1305(k, nonce(0n), h).encrypt(b(this.keys.publicKey));
    h = hash(h, sealedStatic);
    [c, k] = kdf(c, x25519.getSharedSecret(b(this.keys.privateKey), sr), 2) as [Uint8Array, Uint8Array];
    const sealedTs = chacha20poly1305(k, nonce(0n), h).encrypt(ts);
    h = hash(h, sealedTs);
    this.chain = c;
    this.h = h;
    const msg = new Uint8Array(148);
    msg[0] = 1;
    new DataView(msg.buffer).setUint32(4, this.index, true);
    msg.set(epub, 8);
    msg.set(sealedStatic, 40);
    msg.set(sealedTs, 88);
    msg.set(blake2s(msg.subarray(0, 116), { key: hash(LABEL_MAC1, sr), dkLen: 16 }), 116);
    return msg;
  }

  /** Processes the response as the initiator must; returns the responder's index. */
  response(reply: Uint8Array): number {
    const msg = new Uint8Array(reply);
    const view = new DataView(msg.buffer, msg.byteOffset);
    expect(msg.length).toBe(92);
    expect(msg[0]).toBe(2);
    expect(view.getUint32(8, true)).toBe(this.index);
    const mac1 = blake2s(msg.subarray(0, 60), { key: hash(LABEL_MAC1, b(this.keys.publicKey)), dkLen: 16 });
    expect(msg.subarray(60, 76)).toEqual(mac1);
    const epub = msg.subarray(12, 44);
    let [c] = kdf(this.chain, epub, 1) as [Uint8Array];
    let h = hash(this.h, epub);
    [c] = kdf(c, x25519.getSharedSecret(this.ephemeral, epub), 1) as [Uint8Array];
    [c] = kdf(c, x25519.getSharedSecret(b(this.keys.privateKey), epub), 1) as [Uint8Array];
    const [c2, tau, k] = kdf(c, new Uint8Array(32), 3) as [Uint8Array, Uint8Array, Uint8Array];
    h = hash(h, tau);
    expect(chacha20poly1305(k, nonce(0n), h).decrypt(msg.subarray(44, 60)).length).toBe(0);
    [this.sendKey] = kdf(c2, new Uint8Array(0), 2) as [Uint8Array];
    return view.getUint32(4, true);
  }

  transport(receiver: number, payload = new Uint8Array(0), counter = this.counter++): Uint8Array {
    const header = new Uint8Array(16);
    const view = new DataView(header.buffer);
    header[0] = 4;
    view.setUint32(4, receiver, true);
    view.setBigUint64(8, counter, true);
    return concatBytes(
      header,
      chacha20poly1305(this.sendKey as Uint8Array, nonce(counter), new Uint8Array(0)).encrypt(payload),
    );
  }
}
