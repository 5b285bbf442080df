import { createPrivateKey, createPublicKey, diffieHellman, type KeyObject, randomBytes } from 'node:crypto';

// X25519 for ts2021's handshake on node:crypto (OpenSSL): every Tailscale client's connection costs
// control five scalar multiplications, about 1.3 ms each in JavaScript (@noble) on this machine.
// Keys stay raw 32-byte arrays as Noise and @noble use them; OpenSSL takes them wrapped in the
// fixed DER prefixes of RFC 8410 (PKCS#8 for a private key, SPKI for a public one).

const PKCS8_PREFIX = Buffer.from('302e020100300506032b656e04220420', 'hex');
const SPKI_PREFIX = Buffer.from('302a300506032b656e032100', 'hex');

/**
 * Loading a private key costs OpenSSL about half a millisecond (it derives the public half), more
 * than the multiplication itself: each key array is loaded once. The handshake uses control's key
 * three times per client and each ephemeral key three times.
 */
const loaded = new WeakMap<Uint8Array, KeyObject>();
let loads = 0;
/** How many private keys were loaded into OpenSSL so far (what the cache saves is visible). */
export const privateKeyLoads = () => loads;
function privateKey(raw: Uint8Array): KeyObject {
  if (raw.length !== 32) throw new Error('an X25519 private key is 32 bytes');
  let key = loaded.get(raw);
  if (key === undefined) {
    key = createPrivateKey({ key: Buffer.concat([PKCS8_PREFIX, raw]), format: 'der', type: 'pkcs8' });
    loaded.set(raw, key);
    loads++;
  }
  return key;
}

function publicKey(raw: Uint8Array): KeyObject {
  if (raw.length !== 32) throw new Error('an X25519 public key is 32 bytes');
  return createPublicKey({ key: Buffer.concat([SPKI_PREFIX, raw]), format: 'der', type: 'spki' });
}

export const x25519RandomPrivate = (): Uint8Array => new Uint8Array(randomBytes(32));

export function x25519Public(privateRaw: Uint8Array): Uint8Array {
  const der = createPublicKey(privateKey(privateRaw)).export({ format: 'der', type: 'spki' });
  return new Uint8Array(der.subarray(SPKI_PREFIX.length));
}

/** The shared secret; throws for a low-order public key (an all-zero result), as Noise requires. */
export function x25519Shared(privateRaw: Uint8Array, publicRaw: Uint8Array): Uint8Array {
  return new Uint8Array(
    diffieHellman({ privateKey: privateKey(privateRaw), publicKey: publicKey(publicRaw) }),
  );
}
