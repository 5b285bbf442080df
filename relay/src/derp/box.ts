import { hsalsa, xsalsa20poly1305 } from '@noble/ciphers/salsa.js';
import { randomBytes } from '@noble/ciphers/utils.js';
import { x25519 } from '@noble/curves/ed25519.js';
import { DERP_NONCE_BYTES } from '@weft/protocol';

// NaCl crypto_box, as DERP seals ClientInfo and ServerInfo (Go's nacl/box via key.NodePrivate's
// SealTo/OpenFrom): the X25519 secret of the two keys, hashed by HSalsa20 with a zero nonce into a
// secretbox key; the sealed form is nonce (24) ‖ Poly1305 tag (16) ‖ ciphertext.

const SIGMA = new Uint32Array(new Uint8Array(Buffer.from('expand 32-byte k', 'latin1')).buffer);

/** crypto_box_beforenm. Throws for a low-order peer key (an all-zero X25519 secret). */
function boxKey(privateKey: Uint8Array, peerPublicKey: Uint8Array): Uint8Array {
  const shared = x25519.getSharedSecret(privateKey, peerPublicKey);
  const out = new Uint32Array(8);
  hsalsa(SIGMA, new Uint32Array(shared.buffer, shared.byteOffset, 8), new Uint32Array(4), out);
  return new Uint8Array(out.buffer);
}

/** Seals `message` from `privateKey` to `peerPublicKey`, with a fresh random nonce in front. */
export function sealBox(privateKey: Uint8Array, peerPublicKey: Uint8Array, message: Uint8Array): Uint8Array {
  const nonce = randomBytes(DERP_NONCE_BYTES);
  const sealed = xsalsa20poly1305(boxKey(privateKey, peerPublicKey), nonce).encrypt(message);
  const out = new Uint8Array(DERP_NONCE_BYTES + sealed.length);
  out.set(nonce);
  out.set(sealed, DERP_NONCE_BYTES);
  return out;
}

/** Opens what `peerPublicKey` sealed to `privateKey`; null when it is not authentic. */
export function openBox(
  privateKey: Uint8Array,
  peerPublicKey: Uint8Array,
  boxed: Uint8Array,
): Uint8Array | null {
  if (boxed.length < DERP_NONCE_BYTES + 16) return null;
  try {
    const key = boxKey(privateKey, peerPublicKey);
    return xsalsa20poly1305(key, boxed.subarray(0, DERP_NONCE_BYTES)).decrypt(
      boxed.subarray(DERP_NONCE_BYTES),
    );
  } catch {
    return null;
  }
}
