import { hmac } from '@noble/hashes/hmac.js';
import { sha256 } from '@noble/hashes/sha2.js';
import { concatBytes, utf8ToBytes } from '@noble/hashes/utils.js';
import { z } from 'zod';
import { sharedSecret } from './machine-auth.js';
import { Endpoint, Key } from './primitives.js';

// "Call me maybe": one node asks a peer, through the relay, to try the direct path now, so both
// send to each other's candidates at the same moment (each opens its own NAT towards the other).
// It travels as the packet of an ordinary relay data frame (relay.ts), which the relay forwards by
// node key without looking inside; the receiver tells it from a WireGuard packet by its first
// bytes (a WireGuard message starts with a type 1..4 and three zero bytes, never with "w").
//
//   [CALL_ME_MAYBE_MAGIC: 9 bytes][tag: 32 bytes][body: UTF-8 JSON, CallMeMaybe]
//   tag = HMAC-SHA256(K, MAGIC ‖ body)
//   K   = HMAC-SHA256(X25519(own node key, peer node key), "weft call-me-maybe v1")
//
// Only the two nodes can compute K (the static Diffie-Hellman of their node keys, which the relay
// never holds), so a relay cannot forge a message; the body names both keys, so a message for one
// peer cannot be redirected to another; `counter` only grows (per sender) and must be recent, so a
// relay cannot replay one (see docs/security.md). The candidates are not secret (control hands
// them to every peer), so the body is authenticated, not encrypted.

export const CALL_ME_MAYBE_MAGIC = utf8ToBytes('weft-cmm1');
const TAG_BYTES = 32;
const HEADER_BYTES = CALL_ME_MAYBE_MAGIC.length + TAG_BYTES;
const KEY_LABEL = utf8ToBytes('weft call-me-maybe v1');
/** A message whose counter (sender's clock, ms) is further than this from ours is refused. */
export const CALL_ME_MAYBE_MAX_AGE_MS = 60_000;
/** At most this many candidates in one message. */
export const CALL_ME_MAYBE_MAX_CANDIDATES = 16;

export const CallMeMaybe = z.strictObject({
  type: z.literal('callMeMaybe'),
  from: Key,
  to: Key,
  /** The sender's wall clock in ms, strictly increasing per sender. */
  counter: z.number().int().nonnegative(),
  /** The sender's direct candidates, in the order it reports them to control. */
  candidates: z.array(Endpoint).max(CALL_ME_MAYBE_MAX_CANDIDATES),
});
export type CallMeMaybe = z.infer<typeof CallMeMaybe>;

/** True when a relayed packet is a call-me-maybe message rather than a WireGuard packet. */
export function isCallMeMaybe(packet: Uint8Array): boolean {
  if (packet.length < HEADER_BYTES) return false;
  for (let i = 0; i < CALL_ME_MAYBE_MAGIC.length; i++) if (packet[i] !== CALL_ME_MAYBE_MAGIC[i]) return false;
  return true;
}

function pairKey(privateKey: string, peerKey: string): Uint8Array {
  return hmac(sha256, sharedSecret(privateKey, peerKey), KEY_LABEL);
}

/** Seals a message to `msg.to` with the sender's node private key. */
export function sealCallMeMaybe(msg: CallMeMaybe, nodePrivateKey: string): Uint8Array {
  const body = utf8ToBytes(JSON.stringify(CallMeMaybe.parse(msg)));
  const tag = hmac(sha256, pairKey(nodePrivateKey, msg.to), concatBytes(CALL_ME_MAYBE_MAGIC, body));
  return concatBytes(CALL_ME_MAYBE_MAGIC, tag, body);
}

export type OpenedCallMeMaybe = { ok: true; msg: CallMeMaybe } | { ok: false; error: string };

/**
 * Checks a message the relay delivered from node key `source` to this node: well formed, sealed by
 * `source` for `nodeKey`, and newer than `lastCounter` (the last one accepted from `source`) and
 * recent by `now`. Anything else is refused with the reason.
 */
export function openCallMeMaybe(args: {
  packet: Uint8Array;
  source: string;
  nodeKey: string;
  nodePrivateKey: string;
  lastCounter: number;
  now: number;
}): OpenedCallMeMaybe {
  const { packet } = args;
  if (!isCallMeMaybe(packet)) return { ok: false, error: 'not a call-me-maybe message' };
  const tag = packet.subarray(CALL_ME_MAYBE_MAGIC.length, HEADER_BYTES);
  const body = packet.subarray(HEADER_BYTES);
  let key: Uint8Array;
  try {
    key = pairKey(args.nodePrivateKey, args.source);
  } catch {
    return { ok: false, error: 'unusable source key' };
  }
  const expected = hmac(sha256, key, concatBytes(CALL_ME_MAYBE_MAGIC, body));
  let diff = 0;
  for (let i = 0; i < TAG_BYTES; i++) diff |= (expected[i] as number) ^ (tag[i] as number);
  if (diff !== 0) return { ok: false, error: 'bad tag (not sealed by the source node key)' };
  let json: unknown;
  try {
    json = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(body));
  } catch {
    return { ok: false, error: 'body is not JSON' };
  }
  const parsed = CallMeMaybe.safeParse(json);
  if (!parsed.success) return { ok: false, error: `invalid body: ${parsed.error.issues[0]?.message}` };
  const msg = parsed.data;
  if (msg.from !== args.source || msg.to !== args.nodeKey)
    return { ok: false, error: 'keys do not match the frame' };
  if (msg.counter <= args.lastCounter) return { ok: false, error: 'replayed (counter not newer)' };
  if (Math.abs(msg.counter - args.now) > CALL_ME_MAYBE_MAX_AGE_MS)
    return { ok: false, error: 'stale (counter too far from our clock)' };
  return { ok: true, msg };
}
