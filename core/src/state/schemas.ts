import { Cidr, Hostname, Key } from '@weft/protocol';
import { z } from 'zod';

// What the engine keeps on disk besides keys. Validated on every read: a hand-edited or
// half-migrated file is refused with a clear message instead of half-working.

/** The user's intent; survives logout. */
export const Prefs = z.strictObject({
  controlUrl: z.string().url().nullable(),
  hostname: Hostname.nullable(),
  wantRunning: z.boolean(),
  /** The WireGuard UDP port, chosen once so peers' cached endpoints stay valid across restarts. */
  listenPort: z.number().int().min(1).max(65535),
  // Exit nodes and subnet routes (absent in older files: the defaults noted).
  /** The peer (id) internet traffic goes through; null or absent: none. */
  exitNodeId: z.string().min(1).max(128).nullable().optional(),
  /** With an exit node, keep the local LAN reachable outside the tunnel (default off). */
  exitNodeAllowLan: z.boolean().optional(),
  /** Offer this node as an exit node (default off). */
  advertiseExitNode: z.boolean().optional(),
  /** Subnets this node offers to route (default none). */
  advertiseRoutes: z.array(Cidr).max(64).optional(),
  /** Use the subnet routes other nodes offer (default on). */
  acceptRoutes: z.boolean().optional(),
});
export type Prefs = z.infer<typeof Prefs>;

/** Which node key control has authorized, and where; absent means NeedsLogin. */
export const Login = z.strictObject({
  controlUrl: z.string().url(),
  nodePublicKey: Key,
  /** When control accepted this node key (a sign-in, a pre-auth key, or a rotation): its age. */
  authorizedAt: z.iso.datetime({ offset: true }),
});
export type Login = z.infer<typeof Login>;

export const LISTEN_PORT_MIN = 40000;
export const LISTEN_PORT_MAX = 60000;

/** Control's public key as first seen at a control URL: a different one later is refused. */
export const ControlKeyPin = z.strictObject({
  controlUrl: z.string().url(),
  publicKey: Key,
  pinnedAt: z.iso.datetime({ offset: true }),
});
export type ControlKeyPin = z.infer<typeof ControlKeyPin>;
