import { x25519 } from '@noble/curves/ed25519.js';
import { hmac } from '@noble/hashes/hmac.js';
import { sha256 } from '@noble/hashes/sha2.js';
import { bytesToHex, randomBytes, utf8ToBytes } from '@noble/hashes/utils.js';
import { MACHINE_AUTH_MAX_SKEW_SECONDS } from './control-api.js';

// X25519 keys in WireGuard's base64 form, and the machine-key signature of control requests
// (see control-api.ts). Both the engine (signing) and control (verifying) use these.

export interface KeyPair {
  privateKey: string;
  publicKey: string;
}

const b64 = (bytes: Uint8Array): string => Buffer.from(bytes).toString('base64');
const unb64 = (text: string): Uint8Array => new Uint8Array(Buffer.from(text, 'base64'));

export function generateKeyPair(): KeyPair {
  const priv = x25519.utils.randomSecretKey();
  return { privateKey: b64(priv), publicKey: b64(x25519.getPublicKey(priv)) };
}

export function publicKeyOf(privateKey: string): string {
  return b64(x25519.getPublicKey(unb64(privateKey)));
}

export function sharedSecret(privateKey: string, peerPublicKey: string): Uint8Array {
  return x25519.getSharedSecret(unb64(privateKey), unb64(peerPublicKey));
}

function mac(
  secret: Uint8Array,
  method: string,
  path: string,
  seconds: number,
  nonce: string,
  body: string,
): string {
  const text = `${method.toUpperCase()}\n${path}\n${seconds}\n${nonce}\n${bytesToHex(sha256(utf8ToBytes(body)))}`;
  return b64(hmac(sha256, secret, utf8ToBytes(text)));
}

const NONCE = /^[A-Za-z0-9_-]{22}$/;

/**
 * A signer for one machine and control: the X25519 work (the shared secret and the machine's public
 * key, a millisecond or more each in pure JS) is done once, not per request; each call signs one
 * request with a fresh nonce.
 */
export function machineSigner(
  machinePrivateKey: string,
  controlPublicKey: string,
): (request: { method: string; path: string; body: string; now?: number }) => string {
  const secret = sharedSecret(machinePrivateKey, controlPublicKey);
  const machineKey = publicKeyOf(machinePrivateKey);
  return (r) => {
    const seconds = Math.floor((r.now ?? Date.now()) / 1000);
    // 16 random bytes: control remembers each for the signature's lifetime and refuses a replay.
    const nonce = Buffer.from(randomBytes(16)).toString('base64url');
    const tag = mac(secret, r.method, r.path, seconds, nonce, r.body);
    return `${machineKey}.${seconds}.${nonce}.${tag}`;
  };
}

/** The header value a machine sends to prove it holds `machinePrivateKey`. */
export function signMachineRequest(args: {
  machinePrivateKey: string;
  controlPublicKey: string;
  method: string;
  path: string;
  body: string;
  now?: number;
}): string {
  return machineSigner(args.machinePrivateKey, args.controlPublicKey)(args);
}

/**
 * Verifies a machine signature; returns the machine public key with the signature's nonce and time
 * (the verifier must refuse a nonce it saw within MACHINE_AUTH_MAX_SKEW_SECONDS of that time: see
 * control's replay window), or an error message.
 */
export function verifyMachineRequest(args: {
  header: string | undefined;
  controlPrivateKey: string;
  method: string;
  path: string;
  body: string;
  now?: number;
  /**
   * The X25519 secret of control's key and `machineKey` (default: sharedSecret, pure JS, which runs
   * anywhere); control passes a native one. Throws for a key that gives no secret.
   */
  secret?: (machineKey: string) => Uint8Array;
}): { machineKey: string; nonce: string; seconds: number } | { error: string } {
  const parts = (args.header ?? '').split('.');
  if (parts.length !== 4) return { error: 'missing or malformed machine signature' };
  const [machineKey, secondsText, nonce, given] = parts as [string, string, string, string];
  if (!/^[A-Za-z0-9+/]{43}=$/.test(machineKey) || !/^[0-9]{1,12}$/.test(secondsText) || !NONCE.test(nonce)) {
    return { error: 'malformed machine signature' };
  }
  if (!isCanonicalPublicKey(machineKey)) return { error: 'machine key not in canonical form' };
  const seconds = Number(secondsText);
  const nowSeconds = Math.floor((args.now ?? Date.now()) / 1000);
  if (Math.abs(nowSeconds - seconds) > MACHINE_AUTH_MAX_SKEW_SECONDS) {
    return { error: 'machine signature expired (check the clock)' };
  }
  let secret: Uint8Array;
  try {
    secret = args.secret ? args.secret(machineKey) : sharedSecret(args.controlPrivateKey, machineKey);
  } catch {
    return { error: 'invalid machine key' };
  }
  const expected = mac(secret, args.method, args.path, seconds, nonce, args.body);
  if (!timingSafeEqualText(expected, given)) return { error: 'bad machine signature' };
  return { machineKey, nonce, seconds };
}

const FIELD_PRIME = 2n ** 255n - 19n;

/**
 * Whether `key` is the one spelling of its X25519 public key: base64 with zero padding bits, and
 * the u-coordinate below the field prime (so the top bit clear). X25519 ignores the top bit and
 * reduces u, so other spellings give the same secret; were they accepted, a captured request could
 * be replayed under each, the replay window keeping keys as text.
 */
function isCanonicalPublicKey(key: string): boolean {
  const bytes = unb64(key);
  if (bytes.length !== 32 || b64(bytes) !== key) return false;
  let u = 0n;
  for (let i = 31; i >= 0; i--) u = (u << 8n) | BigInt(bytes[i] as number);
  return u < FIELD_PRIME;
}

function timingSafeEqualText(a: string, b: string): boolean {
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a.charCodeAt(i) ^ b.charCodeAt(i);
  return diff === 0;
}
