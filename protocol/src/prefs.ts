import { z } from 'zod';
import { Cidr, Hostname } from './primitives.js';

// The one preferences model (Tailscale's ipn.Prefs and MaskedPrefs): the record the engine keeps,
// the patch a client sends (derived from it), and the defaults older files lack. The desktop app's
// own settings (theme, notifications, …) are UI settings and live in the bridge schema.

/** The user's intent for this node; the engine keeps it across restarts and logout. */
export const Prefs = z.strictObject({
  controlUrl: z.string().url().nullable(),
  hostname: Hostname.nullable(),
  wantRunning: z.boolean(),
  /** The WireGuard UDP port, chosen once so peers' cached endpoints stay valid across restarts. */
  listenPort: z.number().int().min(1).max(65535),
  /** Send internet traffic through this peer (by id); null: no exit node. */
  exitNodeId: z.string().min(1).max(128).nullable(),
  /** With an exit node, keep the local LAN reachable outside the tunnel. */
  exitNodeAllowLan: z.boolean(),
  /** Offer this node as an exit node (advertises 0.0.0.0/0 and ::/0). */
  advertiseExitNode: z.boolean(),
  /** Subnets this node offers to route (not the tailnet's own ranges, not /0). */
  advertiseRoutes: z.array(Cidr).max(64),
  /** Route the subnets other nodes offer (and control approved) into the tunnel. */
  acceptRoutes: z.boolean(),
  /** Resolve through the tailnet's DNS (MagicDNS names, split DNS); off: the OS's DNS is left alone. */
  useTailnetDns: z.boolean(),
});
export type Prefs = z.infer<typeof Prefs>;

const PATCHABLE = {
  exitNodeId: true,
  exitNodeAllowLan: true,
  advertiseExitNode: true,
  advertiseRoutes: true,
  acceptRoutes: true,
  useTailnetDns: true,
} as const;
type Patchable = keyof typeof PATCHABLE;

/**
 * `POST LOCALAPI_PREFIX/prefs`: the choices a client changes; the ones not given are kept. The rest
 * of Prefs changes only through up/down/logout.
 */
export const PrefsPatch = Prefs.pick(PATCHABLE).partial();
export type PrefsPatch = z.infer<typeof PrefsPatch>;

/** What a node chooses until told otherwise (and what files from before these choices mean). */
export const PREFS_DEFAULTS: Pick<Prefs, Patchable> = {
  exitNodeId: null,
  exitNodeAllowLan: false,
  advertiseExitNode: false,
  advertiseRoutes: [],
  acceptRoutes: true,
  useTailnetDns: true,
};

/** `prefs` with the choices the patch gives (the ones it leaves out are kept). */
export function patchPrefs(prefs: Prefs, patch: PrefsPatch): Prefs {
  const next: Prefs = { ...prefs };
  for (const [k, v] of Object.entries(patch)) if (v !== undefined) Object.assign(next, { [k]: v });
  return next;
}

/** Prefs as kept on disk: older files lack the patchable choices. */
export const StoredPrefs = Prefs.partial(PATCHABLE);
export type StoredPrefs = z.infer<typeof StoredPrefs>;

/** The complete record from a stored one: absent choices take their defaults. */
export function withDefaults(stored: StoredPrefs): Prefs {
  const d = PREFS_DEFAULTS;
  return {
    ...stored,
    exitNodeId: stored.exitNodeId ?? d.exitNodeId,
    exitNodeAllowLan: stored.exitNodeAllowLan ?? d.exitNodeAllowLan,
    advertiseExitNode: stored.advertiseExitNode ?? d.advertiseExitNode,
    advertiseRoutes: stored.advertiseRoutes ?? d.advertiseRoutes,
    acceptRoutes: stored.acceptRoutes ?? d.acceptRoutes,
    useTailnetDns: stored.useTailnetDns ?? d.useTailnetDns,
  };
}

/** The prefs Status shows the apps' switches: allow-LAN, and what this node offers to route. */
export const StatusPrefs = Prefs.pick({
  exitNodeAllowLan: true,
  useTailnetDns: true,
  advertiseExitNode: true,
  advertiseRoutes: true,
});
export type StatusPrefs = z.infer<typeof StatusPrefs>;
