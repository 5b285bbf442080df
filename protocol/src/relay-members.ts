import { hmac } from '@noble/hashes/hmac.js';
import { sha256 } from '@noble/hashes/sha2.js';
import { concatBytes, utf8ToBytes } from '@noble/hashes/utils.js';
import { z } from 'zod';
import { Key } from './primitives.js';

// Control → relay: which node keys belong to the tailnet, so a relay serves only its members.
//
// The relay dials control: a WebSocket to RELAY_MEMBERS_PATH?nonce=<32 random bytes, base64url>,
// the upgrade signed with the relay's own key as a machine signature (MACHINE_AUTH_HEADER, see
// control-api.ts). Control accepts only the keys of its relay map. Control then pushes the whole
// member set at once and again on every change (a node registered, deleted, expired or rotated),
// each message sealed with HMAC-SHA256 keyed by the X25519 secret of control's key and the relay's
// key, over the connection's nonce and the payload: the relay believes a list only from control
// (which it pins by key, whatever carries the WebSocket) and only on the connection it opened, and
// `seq` only grows, so nothing can be replayed or reordered.
//
// Pushed rather than polled so a deleted node is dropped from every relay within a moment of the
// change, as its peers are; the whole set rather than deltas, because it changes seldom (keys
// come and go, not endpoints) and a lost or reordered delta could then never leave a key behind.

export const RELAY_MEMBERS_PATH = '/relay/v1/members';

/** The largest member message the relay reads: a million keys with room to spare. */
export const RELAY_MEMBERS_MAX_BYTES = 64 * 1024 * 1024;

export const RelayMembers = z.strictObject({
  /** Grows by one with every message on a connection (from 1). */
  seq: z.number().int().min(1),
  /** Every node key of the tailnet whose key is valid now. */
  keys: z.array(Key).max(1_000_000),
});
export type RelayMembers = z.infer<typeof RelayMembers>;

const Sealed = z.strictObject({ payload: z.string(), mac: z.string() });

const LABEL = utf8ToBytes('weft relay members v1');

function macOf(secret: Uint8Array, nonce: string, payload: string): string {
  return Buffer.from(
    hmac(sha256, secret, concatBytes(LABEL, utf8ToBytes(nonce), utf8ToBytes(payload))),
  ).toString('base64');
}

/** Control's message: `secret` = sharedSecret(control private key, relay public key). */
export function sealRelayMembers(secret: Uint8Array, nonce: string, members: RelayMembers): string {
  const payload = JSON.stringify(members);
  return JSON.stringify({ payload, mac: macOf(secret, nonce, payload) });
}

/** The relay's check: the members, or why the message is refused. */
export function openRelayMembers(
  secret: Uint8Array,
  nonce: string,
  text: string,
): { members: RelayMembers } | { error: string } {
  let sealed: z.infer<typeof Sealed>;
  try {
    sealed = Sealed.parse(JSON.parse(text));
  } catch {
    return { error: 'malformed member message' };
  }
  const expected = macOf(secret, nonce, sealed.payload);
  let diff = expected.length ^ sealed.mac.length;
  for (let i = 0; i < expected.length; i++) diff |= expected.charCodeAt(i) ^ sealed.mac.charCodeAt(i);
  if (diff !== 0) return { error: 'member message not sealed by control' };
  let value: unknown;
  try {
    value = JSON.parse(sealed.payload);
  } catch {
    return { error: 'malformed member list' };
  }
  const parsed = RelayMembers.safeParse(value);
  return parsed.success ? { members: parsed.data } : { error: 'malformed member list' };
}

/** A fresh nonce for one members connection (base64url, so it travels in a query unescaped). */
export const RelayMembersNonce = z.string().regex(/^[A-Za-z0-9_-]{43}$/, 'must be 32 bytes in base64url');
