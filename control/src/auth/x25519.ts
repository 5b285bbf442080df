import { createPrivateKey, createPublicKey, diffieHellman, type KeyObject } from 'node:crypto';

// X25519 through node:crypto (OpenSSL) for control's hot path: every registration and every stream
// connect verifies a machine signature, which needs the secret of control's key and the machine's.
// The protocol package's pure-JS X25519 (it also runs in the renderer) costs about a millisecond a
// time; at a restart of 10,000 nodes that was a large share of control's CPU. Keys are WireGuard
// base64 (32 raw bytes), handed to OpenSSL as PKCS#8 (the private key) and JWK (the peer's).

const PKCS8_X25519 = Buffer.from('302e020100300506032b656e04220420', 'hex');

function raw(base64: string): Buffer {
  const bytes = Buffer.from(base64, 'base64');
  if (bytes.length !== 32) throw new Error('an X25519 key is 32 bytes');
  return bytes;
}

/** The last private key asked about: control has one. */
let cached: { text: string; key: KeyObject } | null = null;

function privateKeyObject(privateKey: string): KeyObject {
  if (cached?.text !== privateKey) {
    const key = createPrivateKey({
      key: Buffer.concat([PKCS8_X25519, raw(privateKey)]),
      format: 'der',
      type: 'pkcs8',
    });
    cached = { text: privateKey, key };
  }
  return cached.key;
}

/**
 * The X25519 shared secret, as protocol's sharedSecret gives it; throws for a malformed key or one
 * that yields no secret (a low-order point gives all zeros, which OpenSSL refuses).
 */
export function nativeSharedSecret(privateKey: string, publicKey: string): Uint8Array {
  // As a JWK: OpenSSL takes it about ten times faster than the same key in DER (8 µs, not 84).
  const peer = createPublicKey({
    key: { kty: 'OKP', crv: 'X25519', x: raw(publicKey).toString('base64url') },
    format: 'jwk',
  });
  return new Uint8Array(diffieHellman({ privateKey: privateKeyObject(privateKey), publicKey: peer }));
}
