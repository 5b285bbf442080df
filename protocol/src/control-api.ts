import { x25519 } from '@noble/curves/ed25519.js';
import { hmac } from '@noble/hashes/hmac.js';
import { sha256 } from '@noble/hashes/sha2.js';
import { utf8ToBytes } from '@noble/hashes/utils.js';
import { z } from 'zod';
import { NodeView } from './netmap.js';
import { Hostname, Key, Timestamp } from './primitives.js';

// The node ↔ control HTTP API. Every /machine/ request is signed with the machine key: the header
// `Weft-Machine-Auth: <machineKey>.<unix seconds>.<nonce>.<base64 HMAC-SHA256>` where the HMAC key
// is the X25519 shared secret of the machine key and control's key (GET /machine/key), over
// `METHOD\nPATH\nSECONDS\nNONCE\nSHA256(body) hex`, and the nonce is 16 random bytes (base64url).
// Control refuses signatures more than 2 minutes off its clock, and a nonce it has seen within
// that window (a replayed request).

export const MACHINE_AUTH_HEADER = 'weft-machine-auth';
export const MACHINE_AUTH_MAX_SKEW_SECONDS = 120;

export const ControlKeyResponse = z.strictObject({ publicKey: Key });

export const RegisterRequest = z.strictObject({
  nodeKey: Key,
  hostname: Hostname,
  os: z.string().max(64),
  /** A pre-auth key; without one, control answers with an auth URL (interactive login). */
  authKey: z.string().min(1).max(256).optional(),
  /**
   * Interactive login: once control has answered `needs-auth`, the node sends the same request
   * with `wait: true` and control holds it (up to LOGIN_WAIT_SECONDS) until the person has signed
   * in (`authorized`), the link expired or was cancelled (an ErrorBody, see LOGIN_ERROR_CODES), or
   * the time ran out (`needs-auth` again with the same URL: send it again).
   */
  wait: z.boolean().optional(),
  /**
   * Key rotation: the node key this node used until now. With `oldNodeKeyProof` it proves the
   * node holds that key, and control moves the node to `nodeKey` keeping its name, addresses and
   * key expiry (no sign-in while the old key is still valid).
   */
  oldNodeKey: Key.optional(),
  /** nodeKeyRotationProof(old node private key, control's public key, machine key, new node key). */
  oldNodeKeyProof: z
    .string()
    .regex(/^[A-Za-z0-9+/]{43}=$/, 'must be a 32-byte HMAC in base64')
    .optional(),
  /**
   * nodeKeyPossessionProof(node private key, control's public key, machine key): proves the sender
   * holds `nodeKey`'s private key, so no machine can register (and be routed traffic for) a
   * WireGuard key it does not own. Checked before anything is stored.
   */
  nodeKeyProof: z.string().regex(/^[A-Za-z0-9+/]{43}=$/, 'must be a 32-byte HMAC in base64'),
});
export type RegisterRequest = z.infer<typeof RegisterRequest>;

export const RegisterResponse = z.discriminatedUnion('status', [
  z.strictObject({ status: z.literal('authorized'), node: NodeView }),
  z.strictObject({
    status: z.literal('needs-auth'),
    authUrl: z.string().url(),
    /** When the link stops working; the node may show it ("expires in 9 minutes"). */
    expiresAt: Timestamp.optional(),
  }),
]);
export type RegisterResponse = z.infer<typeof RegisterResponse>;

/** How long control holds a `wait: true` registration before answering `needs-auth` again. */
export const LOGIN_WAIT_SECONDS = 60;

/** ErrorBody codes that end a pending interactive login; the node needs a new one (register without `wait`). */
export const LOGIN_ERROR_CODES = ['login-expired', 'login-cancelled'] as const;

/** Answer to a signed POST LOGIN_CANCEL_PATH (empty body): whether a pending login was cancelled. */
export const LoginCancelResponse = z.strictObject({ cancelled: z.boolean() });
export type LoginCancelResponse = z.infer<typeof LoginCancelResponse>;

/** Answer to a signed POST LOGOUT_PATH (empty body): control expired the node's key. */
export const LogoutResponse = z.strictObject({ loggedOut: z.boolean() });
export type LogoutResponse = z.infer<typeof LogoutResponse>;

const ROTATION_CONTEXT = 'weft node key rotation v1';
const POSSESSION_CONTEXT = 'weft node key possession v1';

/**
 * Proof that the sender holds the private key of its node key: HMAC-SHA256 keyed with the X25519
 * shared secret of the node key and control's key, over a fixed context, the machine key and the
 * node key. Only the node key's holder (or control) can compute it; it is bound to this machine.
 */
export function nodeKeyPossessionProof(args: {
  nodePrivateKey: string;
  controlPublicKey: string;
  machineKey: string;
}): string {
  const secret = x25519.getSharedSecret(unb64(args.nodePrivateKey), unb64(args.controlPublicKey));
  const nodeKey = Buffer.from(x25519.getPublicKey(unb64(args.nodePrivateKey))).toString('base64');
  return contextMac(secret, POSSESSION_CONTEXT, args.machineKey, nodeKey);
}

/** Control's side of nodeKeyPossessionProof. */
export function verifyNodeKeyPossessionProof(args: {
  controlPrivateKey: string;
  nodeKey: string;
  machineKey: string;
  proof: string;
}): boolean {
  let secret: Uint8Array;
  try {
    secret = x25519.getSharedSecret(unb64(args.controlPrivateKey), unb64(args.nodeKey));
  } catch {
    return false;
  }
  return sameText(contextMac(secret, POSSESSION_CONTEXT, args.machineKey, args.nodeKey), args.proof);
}

/**
 * Proof that the sender holds the private key of `oldNodeKey`: HMAC-SHA256 keyed with the X25519
 * shared secret of the old node key and control's key, over a fixed context, the machine key and
 * the new node key. Only the old key's holder (or control) can compute it, and it is bound to this
 * machine and this new key, so it cannot be replayed to move another machine or to another key.
 */
export function nodeKeyRotationProof(args: {
  oldNodePrivateKey: string;
  controlPublicKey: string;
  machineKey: string;
  newNodeKey: string;
}): string {
  const secret = x25519.getSharedSecret(unb64(args.oldNodePrivateKey), unb64(args.controlPublicKey));
  return contextMac(secret, ROTATION_CONTEXT, args.machineKey, args.newNodeKey);
}

/** Control's side of nodeKeyRotationProof. */
export function verifyNodeKeyRotationProof(args: {
  controlPrivateKey: string;
  oldNodeKey: string;
  machineKey: string;
  newNodeKey: string;
  proof: string;
}): boolean {
  let secret: Uint8Array;
  try {
    secret = x25519.getSharedSecret(unb64(args.controlPrivateKey), unb64(args.oldNodeKey));
  } catch {
    return false;
  }
  return sameText(contextMac(secret, ROTATION_CONTEXT, args.machineKey, args.newNodeKey), args.proof);
}

function contextMac(secret: Uint8Array, context: string, machineKey: string, nodeKey: string): string {
  const text = `${context}\n${machineKey}\n${nodeKey}`;
  return Buffer.from(hmac(sha256, secret, utf8ToBytes(text))).toString('base64');
}

/** Constant-time comparison of two proofs. */
function sameText(expected: string, given: string): boolean {
  const a = Buffer.from(expected);
  const b = Buffer.from(given);
  let diff = a.length ^ b.length;
  for (let i = 0; i < Math.min(a.length, b.length); i++) diff |= (a[i] ?? 0) ^ (b[i] ?? 0);
  return diff === 0;
}

const unb64 = (text: string): Uint8Array => new Uint8Array(Buffer.from(text, 'base64'));

/**
 * How long a node waits between stream attempts: jittered back-off (backoffDelayMs) from 500 ms to
 * 15 s. A stream that had carried its map for `steadyMs` and then broke is tried again sooner (see
 * backoffDelayMs's `steady`).
 */
export const STREAM_RETRY = { baseMs: 500, capMs: 15_000, steadyMs: 10_000 } as const;

/**
 * The delay before attempt `attempt` + 1 (from 0) of a retry loop: half fixed, half random, of
 * min(cap, base·2ⁿ). The jitter spreads the reconnects of many nodes after a control restart.
 * `steady`: the first attempt follows a connection that worked for a while and then broke (its
 * server went away, as a killed replica does): the lower half of the first step instead, from 0, so
 * a herd arrives spread as widely as ever but that much sooner. Later attempts back off as usual.
 */
export function backoffDelayMs(
  attempt: number,
  limits: { baseMs: number; capMs: number },
  random: () => number = Math.random,
  steady = false,
): number {
  const ceiling = Math.min(limits.capMs, limits.baseMs * 2 ** Math.min(attempt, 30));
  if (steady && attempt === 0) return Math.round((random() * ceiling) / 2);
  return Math.round(ceiling / 2 + (random() * ceiling) / 2);
}

/**
 * How long a node waits for control to answer its stream upgrade before it gives the attempt up,
 * after `timeouts` attempts in a row that control did not answer in time: 15 s, doubling with each
 * up to 2 minutes, plus up to a quarter more at random. A whole office connecting at once (back
 * after an outage) can queue upgrades at control for longer than 15 s; a node with a fixed patience
 * gave up, queued again at the back and was never served (nor were its neighbours, for the work
 * control had spent on the ones that left). The jitter keeps the nodes that gave up together from
 * giving up together again.
 */
export function streamHandshakeTimeoutMs(timeouts: number, random: () => number = Math.random): number {
  const ceiling = Math.min(120_000, 15_000 * 2 ** Math.min(timeouts, 3));
  return Math.round(ceiling + (random() * ceiling) / 4);
}
export const REGISTER_PATH = '/machine/register';
export const CONTROL_KEY_PATH = '/machine/key';
export const LOGIN_CANCEL_PATH = '/machine/login/cancel';
export const LOGOUT_PATH = '/machine/logout';
