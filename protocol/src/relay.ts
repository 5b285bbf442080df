import { hmac } from '@noble/hashes/hmac.js';
import { sha256 } from '@noble/hashes/sha2.js';
import { concatBytes, randomBytes, utf8ToBytes } from '@noble/hashes/utils.js';
import { z } from 'zod';
import { sharedSecret } from './machine-auth.js';
import { Endpoint, Key, Port, Timestamp } from './primitives.js';

// The relay protocol: one WebSocket per node to `weft-relay` at RELAY_PATH, subprotocol
// RELAY_SUBPROTOCOL (the version gate: a relay refuses an upgrade that does not offer it).
//
// Text frames carry JSON control messages (RelayServerMessage / RelayClientMessage); binary
// frames carry opaque packets from node to node, so the hot path never parses JSON: WireGuard
// packets, and the nodes' own end-to-end authenticated call-me-maybe asks (call-me-maybe.ts),
// which the relay forwards alike without telling them apart:
//
//   [type: u8][node key: 32 bytes][opaque WireGuard packet: 0..RELAY_MAX_PACKET_BYTES]
//   type 0x01 send  node → relay   key = the destination node key
//   type 0x02 recv  relay → node   key = the authenticated source node key
//
// Authentication, before any packet moves:
//   relay → {type:'challenge', relayKey, challenge}   fresh 32 random bytes per connection
//   node  → {type:'auth', nodeKey, proof}
//           proof = HMAC-SHA256(X25519(nodePriv, relayKey),
//                               "weft relay auth v1" ‖ relayKey ‖ nodeKey ‖ challenge)
//   relay → {type:'authOk', nodeKey, reflectorPort}   or a close with RelayCloseCode.authFailed
// Only the holder of the node private key (or the relay) can compute the proof; binding the
// relay key and the node key means a proof is good for one relay, one key and one connection.
// The relay's key is also its reflector's WireGuard key, so a relay is described by one key.
//
// Reflected endpoint (see REFLECTOR_KEEPALIVE_SECONDS): node → {type:'endpointRequest'}, relay →
// {type:'endpoint', endpoint, observedAt}; the relay also pushes it unasked whenever its
// reflector sees the node's WireGuard socket at a new address. Control learns it from the node,
// which reports it among its candidates (StreamClientMessage 'endpoints'): control never has
// to trust or reach the relay, and a node could misreport its LAN endpoints just as well.
//
// Errors end the connection with a close code (RelayCloseCode, or 1009 for an oversized frame)
// and a short reason; there is no error message.

export const RELAY_PATH = '/relay';
export const RELAY_SUBPROTOCOL = 'weft-relay.v1';

export const RELAY_KEY_BYTES = 32;
export const RELAY_DATA_HEADER_BYTES = 1 + RELAY_KEY_BYTES;
/** The largest WebSocket message either side accepts; larger ones close the connection (1009). */
export const RELAY_MAX_FRAME_BYTES = 64 * 1024;
export const RELAY_MAX_PACKET_BYTES = RELAY_MAX_FRAME_BYTES - RELAY_DATA_HEADER_BYTES;

export const RelayFrameType = { send: 0x01, recv: 0x02 } as const;
export type RelayFrameType = (typeof RelayFrameType)[keyof typeof RelayFrameType];

/** WebSocket close codes (private-use range) the relay ends a connection with. */
export const RelayCloseCode = {
  /** A malformed control message or data frame, or a message out of order. */
  protocolError: 4000,
  /** A wrong proof, or a packet or request before authentication. */
  authFailed: 4001,
  /** Another connection authenticated with the same node key; the newest wins. */
  replaced: 4002,
  /** No valid auth message in time. */
  authTimeout: 4003,
  /**
   * The node key is not (or no longer) in the tailnet the relay serves, or the relay has not yet
   * heard from control who is. The node may try again later: it may have only just joined.
   */
  notMember: 4004,
} as const;

/**
 * Each node adds the relay's key as a WireGuard peer with NO allowed IPs and this persistent
 * keepalive: the keepalive makes WireGuard handshake with the reflector (which reads the node's
 * public mapping from it), and with no allowed IPs WireGuard drops every packet that peer could
 * send into the node, so whoever holds a relay key cannot deliver one packet into a node's stack.
 */
/** Keepalive for the reflector peer: short enough to hold common NAT UDP mappings open. */
export const REFLECTOR_KEEPALIVE_SECONDS = 25;

/** 32 bytes in standard base64: the same shape as a key. */
const Bytes32 = Key;

export const RelayServerMessage = z.discriminatedUnion('type', [
  z.strictObject({ type: z.literal('challenge'), relayKey: Key, challenge: Bytes32 }),
  z.strictObject({ type: z.literal('authOk'), nodeKey: Key, reflectorPort: Port }),
  z.strictObject({
    type: z.literal('endpoint'),
    /** The source address of the node's WireGuard socket as the reflector sees it; null if unseen. */
    endpoint: Endpoint.nullable(),
    observedAt: Timestamp.nullable(),
  }),
]);
export type RelayServerMessage = z.infer<typeof RelayServerMessage>;

export const RelayClientMessage = z.discriminatedUnion('type', [
  z.strictObject({ type: z.literal('auth'), nodeKey: Key, proof: Bytes32 }),
  z.strictObject({ type: z.literal('endpointRequest') }),
]);
export type RelayClientMessage = z.infer<typeof RelayClientMessage>;

/** Parses a text frame; null when it is not exactly one valid message. */
export function parseRelayControl<T>(schema: z.ZodType<T>, text: string): T | null {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    return null;
  }
  const parsed = schema.safeParse(json);
  return parsed.success ? parsed.data : null;
}

export interface RelayDataFrame {
  type: RelayFrameType;
  /** A view of the 32 key bytes inside the frame. */
  key: Uint8Array;
  /** A view of the packet inside the frame. */
  packet: Uint8Array;
}

export function encodeRelayData(type: RelayFrameType, key: Uint8Array, packet: Uint8Array): Uint8Array {
  if (key.length !== RELAY_KEY_BYTES) throw new Error('relay frame key must be 32 bytes');
  if (packet.length > RELAY_MAX_PACKET_BYTES) throw new Error('packet too large for a relay frame');
  const frame = new Uint8Array(RELAY_DATA_HEADER_BYTES + packet.length);
  frame[0] = type;
  frame.set(key, 1);
  frame.set(packet, RELAY_DATA_HEADER_BYTES);
  return frame;
}

/** Decodes a binary frame without copying; null when it is not a well-formed data frame. */
export function decodeRelayData(frame: Uint8Array): RelayDataFrame | null {
  if (frame.length < RELAY_DATA_HEADER_BYTES || frame.length > RELAY_MAX_FRAME_BYTES) return null;
  const type = frame[0];
  if (type !== RelayFrameType.send && type !== RelayFrameType.recv) return null;
  return {
    type,
    key: frame.subarray(1, RELAY_DATA_HEADER_BYTES),
    packet: frame.subarray(RELAY_DATA_HEADER_BYTES),
  };
}

/**
 * Rewrites a decoded frame's type and key in place. The relay turns a `send` into a `recv`
 * this way, so forwarding never copies the packet.
 */
export function readdressRelayData(frame: Uint8Array, type: RelayFrameType, key: Uint8Array): void {
  if (key.length !== RELAY_KEY_BYTES) throw new Error('relay frame key must be 32 bytes');
  frame[0] = type;
  frame.set(key, 1);
}

const AUTH_LABEL = utf8ToBytes('weft relay auth v1');
const unb64 = (text: string): Uint8Array => new Uint8Array(Buffer.from(text, 'base64'));

/** A fresh challenge for one connection, in base64. */
export function newRelayChallenge(): string {
  return Buffer.from(randomBytes(32)).toString('base64');
}

function proofBytes(secret: Uint8Array, relayKey: string, nodeKey: string, challenge: string): Uint8Array {
  return hmac(sha256, secret, concatBytes(AUTH_LABEL, unb64(relayKey), unb64(nodeKey), unb64(challenge)));
}

/** The node's answer to a challenge (base64), computed with its node private key. */
export function relayAuthProof(args: {
  nodePrivateKey: string;
  nodeKey: string;
  relayKey: string;
  challenge: string;
}): string {
  const secret = sharedSecret(args.nodePrivateKey, args.relayKey);
  return Buffer.from(proofBytes(secret, args.relayKey, args.nodeKey, args.challenge)).toString('base64');
}

/** The relay's check of an answer. False for a wrong proof or an unusable (low-order) node key. */
export function verifyRelayAuthProof(args: {
  relayPrivateKey: string;
  relayKey: string;
  nodeKey: string;
  challenge: string;
  proof: string;
}): boolean {
  let secret: Uint8Array;
  try {
    secret = sharedSecret(args.relayPrivateKey, args.nodeKey);
  } catch {
    return false;
  }
  const expected = proofBytes(secret, args.relayKey, args.nodeKey, args.challenge);
  const given = unb64(args.proof);
  if (given.length !== expected.length) return false;
  let diff = 0;
  for (let i = 0; i < expected.length; i++) diff |= (expected[i] as number) ^ (given[i] as number);
  return diff === 0;
}
