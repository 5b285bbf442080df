import { createPrivateKey, createPublicKey, diffieHellman, type KeyObject, randomBytes } from 'node:crypto';

// Control's X25519 on node:crypto (OpenSSL). Both hot paths need it: every Tailscale client's ts2021
// handshake (five scalar multiplications) and every machine-signed request of Weft's own clients
// (a registration, a stream connect). In JavaScript (@noble, the protocol package's) each costs a
// millisecond or more on this machine; at a restart of thousands of nodes that was a large share of
// control's CPU. Keys stay raw 32-byte arrays as Noise and @noble use them; OpenSSL takes a private
// key wrapped in RFC 8410's PKCS#8 prefix and a public one as a JWK (about ten times faster to
// import than the same key as DER: 8 µs, not 84).

const PKCS8_PREFIX = Buffer.from('302e020100300506032b656e04220420', 'hex');
const SPKI_PREFIX = Buffer.from('302a300506032b656e032100', 'hex');

function checked(raw: Uint8Array, what: string): Uint8Array {
  if (raw.length !== 32) throw new Error(`an X25519 ${what} key is 32 bytes`);
  return raw;
}

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
  let key = loaded.get(raw);
  if (key === undefined) {
    key = createPrivateKey({
      key: Buffer.concat([PKCS8_PREFIX, checked(raw, 'private')]),
      format: 'der',
      type: 'pkcs8',
    });
    loaded.set(raw, key);
    loads++;
  }
  return key;
}

function publicKey(raw: Uint8Array): KeyObject {
  const x = Buffer.from(checked(raw, 'public')).toString('base64url');
  return createPublicKey({ key: { kty: 'OKP', crv: 'X25519', x }, format: 'jwk' });
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

/** The last private key given as text, as the array the load cache knows: control has one. */
let lastPrivate: { text: string; raw: Uint8Array } | null = null;

/**
 * x25519Shared for keys in WireGuard's base64 (32 raw bytes), as the protocol package's sharedSecret
 * takes them: what control verifies machine signatures with.
 */
export function x25519SharedBase64(privateKey: string, publicKey: string): Uint8Array {
  if (lastPrivate?.text !== privateKey)
    lastPrivate = { text: privateKey, raw: Buffer.from(privateKey, 'base64') };
  return x25519Shared(lastPrivate.raw, Buffer.from(publicKey, 'base64'));
}
