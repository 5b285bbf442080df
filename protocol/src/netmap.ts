import { z } from 'zod';
import { DnsSettings } from './dns.js';
import { FilterRule } from './filter.js';
import { Cidr, Endpoint, IfaceAddr, Key, Timestamp } from './primitives.js';

// What control tells each node: itself, the peers policy lets it see, and the filter it enforces.

export const NodeView = z.strictObject({
  id: z.string(),
  /** Unique machine name within the tailnet. */
  name: z.string(),
  /** The owning user's login name; null for tagged nodes. */
  user: z.string().nullable(),
  tags: z.array(z.string()),
  nodeKey: Key,
  /** The node's own tunnel addresses, as /32 and /128. */
  addresses: z.array(IfaceAddr),
  /** What the peer may source: its addresses plus approved routes. */
  allowedIPs: z.array(Cidr),
  /** Candidate UDP endpoints the node reported for its WireGuard socket. */
  endpoints: z.array(Endpoint),
  online: z.boolean(),
  lastSeen: Timestamp.nullable(),
  keyExpiry: Timestamp.nullable(),
  os: z.string(),
  /**
   * In a peer's view: the peer offers an approved exit node to this node, whose `allowedIPs` then
   * hold 0.0.0.0/0 and/or ::/0. A client routes them into the tunnel only while it has chosen
   * that peer as its exit node. Absent: no.
   */
  exitNodeOption: z.boolean().optional(),
  /** Which client the node runs: Weft's engine (absent) or an official Tailscale client. */
  kind: z.enum(['weft', 'tailscale']).optional(),
  /** The client's version as it reported it, when it did. */
  clientVersion: z.string().max(128).optional(),
  /** Tailscale clients: their disco key (base64) and home relay region, for Tailscale peers. */
  discoKey: Key.optional(),
  homeRelay: z.number().int().min(1).max(65535).optional(),
});
export type NodeView = z.infer<typeof NodeView>;

/** The routes that make a node an exit node: advertised, approved and offered together. */
export const EXIT_ROUTES: readonly string[] = ['0.0.0.0/0', '::/0'];

/**
 * One relay region: a `weft-relay` that forwards WireGuard ciphertext between nodes (WebSocket at
 * `url`) and reflects their WireGuard socket's public mapping (UDP, port announced by the relay).
 * `publicKey` is pinned: a relay presenting another key is refused.
 */
export const RelayRegion = z.strictObject({
  regionId: z.number().int().min(1).max(65535),
  name: z.string().regex(/^[a-z0-9][a-z0-9-]{0,62}$/, 'must be lower-case letters, digits and -'),
  url: z
    .string()
    .url()
    .refine((u) => /^wss?:\/\//.test(u), 'must be a ws:// or wss:// URL'),
  publicKey: Key,
  /** The relay's STUN port (UDP), announced to Tailscale clients in their DERP map; absent: none. */
  stunPort: z.number().int().min(1).max(65535).optional(),
});
export type RelayRegion = z.infer<typeof RelayRegion>;

/** The relays control tells every node about; a node picks its home region by latency. */
export const RelayMap = z.strictObject({ regions: z.array(RelayRegion).max(64) });
export type RelayMap = z.infer<typeof RelayMap>;

export const NetMap = z.strictObject({
  self: NodeView,
  peers: z.array(NodeView),
  packetFilter: z.array(FilterRule),
  /** The tailnet's IPv4 and IPv6 ranges, routed into the tunnel as a whole. */
  tailnetRanges: z.array(Cidr),
  /** The relays to use; absent when control has none configured (peers then need direct paths). */
  relayMap: RelayMap.optional(),
  /** The tailnet's DNS settings; absent from a control that has none (no tailnet names then). */
  dns: DnsSettings.optional(),
});
export type NetMap = z.infer<typeof NetMap>;

/**
 * What a node holds of its peers, as control named it: an order-independent digest of their views,
 * with its format's version first, so a token of another format simply does not match. Control
 * sends it with a message after which the node's peers are what control recorded; the node keeps
 * the latest message's (none: it holds none) and gives it when it opens its next stream, and control
 * then sends `resume` instead of a whole map when it would send the same peers.
 */
export const MapToken = z
  .string()
  .min(1)
  .max(64)
  .regex(/^[A-Za-z0-9._-]+$/, 'must be letters, digits, ".", "_" or "-"');
export type MapToken = z.infer<typeof MapToken>;

export const STREAM_PATH = '/machine/stream';

/** The stream URL's query: the token of the map the node holds, when it holds one. */
export const StreamQuery = z.strictObject({ mapToken: MapToken.optional() });
export type StreamQuery = z.infer<typeof StreamQuery>;

/** The stream's path for a node holding `mapToken` (signed as it is: the signature covers the query). */
export function streamPath(mapToken: string | null): string {
  return mapToken === null ? STREAM_PATH : `${STREAM_PATH}?mapToken=${encodeURIComponent(mapToken)}`;
}

/**
 * Control → node over the stream: a whole map (or `resume`) first, then changes as they happen.
 * `mapToken` is the first key after `type`, so a reader can take it from a message's head.
 */
export const StreamServerMessage = z.discriminatedUnion('type', [
  z.strictObject({ type: z.literal('full'), mapToken: MapToken.optional(), netmap: NetMap }),
  /** The node's peers are what it holds (its token matched): the rest of a whole map, fresh. */
  z.strictObject({
    type: z.literal('resume'),
    mapToken: MapToken,
    netmap: NetMap.omit({ peers: true }),
  }),
  z.strictObject({
    type: z.literal('delta'),
    mapToken: MapToken.optional(),
    self: NodeView.optional(),
    peersUpserted: z.array(NodeView).optional(),
    peersRemoved: z.array(z.string()).optional(),
    packetFilter: z.array(FilterRule).optional(),
    dns: DnsSettings.optional(),
  }),
  /** The node can no longer use the tailnet (deleted, expired, logged out): it must log in again. */
  z.strictObject({ type: z.literal('logout'), reason: z.string() }),
]);
export type StreamServerMessage = z.infer<typeof StreamServerMessage>;

/** Node → control over the stream. */
export const StreamClientMessage = z.discriminatedUnion('type', [
  z.strictObject({ type: z.literal('endpoints'), endpoints: z.array(Endpoint).max(64) }),
  /**
   * The routes this node offers to route for the tailnet (subnets, and 0.0.0.0/0 + ::/0 for an
   * exit node), sent on every connect and whenever they change. Control uses none of them until
   * an admin or the policy's autoApprovers approves it.
   */
  z.strictObject({ type: z.literal('routes'), advertisedRoutes: z.array(Cidr).max(64) }),
]);
export type StreamClientMessage = z.infer<typeof StreamClientMessage>;

/** Applies a stream message to the map the node holds; returns the new map (never mutates). */
export function applyStreamMessage(current: NetMap | null, msg: StreamServerMessage): NetMap | null {
  if (msg.type === 'full') return msg.netmap;
  if (msg.type === 'logout' || current === null) return current;
  // Control matched the token of the peers held: they stay, everything else is as sent.
  if (msg.type === 'resume') return { ...msg.netmap, peers: current.peers };
  const removed = new Set(msg.peersRemoved ?? []);
  const upserted = new Map((msg.peersUpserted ?? []).map((p) => [p.id, p]));
  const peers = current.peers.filter((p) => !removed.has(p.id) && !upserted.has(p.id));
  peers.push(...upserted.values());
  return {
    ...current,
    self: msg.self ?? current.self,
    peers,
    packetFilter: msg.packetFilter ?? current.packetFilter,
    ...(msg.dns || current.dns ? { dns: msg.dns ?? current.dns } : {}),
  };
}

/**
 * The token a node holds after `msg`: the message's own, or none (its peers may no longer be what
 * control recorded, so a resume must not be asked for).
 */
export function mapTokenAfter(msg: StreamServerMessage): string | null {
  return msg.type === 'logout' ? null : (msg.mapToken ?? null);
}
