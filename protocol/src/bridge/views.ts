import { parseEndpoint, parsePrefix } from '../ip.js';
import { PREFS_DEFAULTS } from '../prefs.js';
import type { AppState, BridgePeer, PeerPath } from './schema.js';

// Pure functions shared by the tray (electron) and the renderer, so both say the same thing.

/** What the tray icon shows. */
export type ConnectionPhase =
  | 'needs-login'
  | 'connecting'
  | 'connected'
  | 'exit-node'
  | 'disconnected'
  | 'error';

export function connectionPhase(s: AppState): ConnectionPhase {
  if (s.engine === null || s.helper.phase === 'failed') return 'error';
  if (s.login.phase === 'waiting' || s.login.phase === 'starting') return 'needs-login';
  const backend = s.engine.backendState;
  if (backend === 'NeedsLogin') return 'needs-login';
  if (s.pending === 'connect' || backend === 'Starting' || s.helper.phase === 'restarting')
    return 'connecting';
  if (backend === 'Running') return s.engine.exitNode ? 'exit-node' : 'connected';
  return 'disconnected';
}

/** The address to show and copy: the first IPv4 one, without its prefix length. */
export function primaryAddress(addresses: readonly string[]): string | null {
  const bare = addresses.map((a) => a.replace(/\/\d+$/, ''));
  return bare.find((a) => !a.includes(':')) ?? bare[0] ?? null;
}

function isLoopbackEndpoint(endpoint: string): boolean {
  const ep = parseEndpoint(endpoint);
  if (!ep) return false;
  if (ep.addr.family === 6) return ep.addr.value === 1n;
  return ep.addr.value >> 24n === 127n;
}

/**
 * A peer's path: the engine's word when it gives one; otherwise an endpoint on loopback is the
 * relay proxy, any other endpoint with a handshake is direct, and no handshake is no path yet.
 */
export function peerPath(p: BridgePeer): PeerPath {
  if (p.path) return p.path;
  if (!p.online || p.endpoint === null || p.lastHandshake === null) return 'none';
  return isLoopbackEndpoint(p.endpoint) ? 'relay' : 'direct';
}

export interface PathCounts {
  total: number;
  online: number;
  direct: number;
  relay: number;
}

export function pathCounts(peers: readonly BridgePeer[]): PathCounts {
  const c: PathCounts = { total: peers.length, online: 0, direct: 0, relay: 0 };
  for (const p of peers) {
    if (p.online) c.online++;
    const path = peerPath(p);
    if (path === 'direct') c.direct++;
    else if (path === 'relay') c.relay++;
  }
  return c;
}

export interface ExitNodeOptions {
  /** The suggested node, if any online one exists. */
  recommended: BridgePeer | null;
  /** Every exit node: recently used first (most recent first), then online, then by name. */
  list: BridgePeer[];
  current: BridgePeer | null;
  /** Allow-LAN for the exit node in use or the next one chosen: the engine remembers it. */
  allowLan: boolean;
}

export function exitNodeOptions(s: AppState): ExitNodeOptions {
  const peers = s.engine?.peers ?? [];
  const options = peers.filter((p) => p.exitNodeOption);
  const recentRank = (id: string) => {
    const i = s.prefs.recentExitNodes.indexOf(id);
    return i === -1 ? Number.POSITIVE_INFINITY : i;
  };
  const list = [...options].sort(
    (a, b) =>
      recentRank(a.id) - recentRank(b.id) ||
      Number(b.online) - Number(a.online) ||
      a.name.localeCompare(b.name),
  );
  const suggestedId = s.engine?.recommendedExitNodeId;
  let recommended = options.find((p) => p.id === suggestedId && p.online) ?? null;
  if (!recommended) {
    const online = options.filter((p) => p.online);
    online.sort(
      (a, b) =>
        (a.latencyMs ?? Number.POSITIVE_INFINITY) - (b.latencyMs ?? Number.POSITIVE_INFINITY) ||
        a.name.localeCompare(b.name),
    );
    recommended = online[0] ?? null;
  }
  const currentId = s.engine?.exitNode?.id;
  const current = currentId ? (peers.find((p) => p.id === currentId) ?? null) : null;
  const allowLan =
    s.engine?.exitNode?.allowLan ?? s.engine?.prefs?.exitNodeAllowLan ?? PREFS_DEFAULTS.exitNodeAllowLan;
  return { recommended, list, current, allowLan };
}

/** Days until the node key expires (fractional), or null when it does not expire / is unknown. */
export function keyExpiresInDays(s: AppState, now: Date): number | null {
  const at = s.engine?.self?.keyExpiry;
  if (!at) return null;
  const t = Date.parse(at);
  if (Number.isNaN(t)) return null;
  return (t - now.getTime()) / 86_400_000;
}

/** Checks a list of routes typed as text ("198.51.100.0/24, 203.0.113.0/24"). */
export function parseRoutesText(text: string): { routes: string[] } | { error: string } {
  const parts = text
    .split(/[\s,]+/)
    .map((p) => p.trim())
    .filter(Boolean);
  for (const p of parts) {
    if (parsePrefix(p, { strict: true }) === null)
      return { error: `${p} is not a route (like 198.51.100.0/24)` };
  }
  return { routes: [...new Set(parts)] };
}
