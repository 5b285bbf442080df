import type { DesiredState, NetMap, NodeView, PeerConfig, Prefs } from '@weft/protocol';
import { SAFE_MTU } from '../paths/mtu.js';
import { choosePeerEndpoint } from '../paths/selection.js';
import { applyRoutes } from './exit-nodes.js';
import { normalizeFilter } from './filter.js';

// The complete OS state the helper should converge to, as one pure function of what the engine
// knows (netmap, prefs, paths). Pure so it is tested without sockets, and so re-sending it is
// always safe.

export const PERSISTENT_KEEPALIVE_SECONDS = 25;

export interface DesiredInputs {
  netmap: NetMap;
  interfaceName: string;
  nodePrivateKey: string;
  listenPort: number;
  /** The interface MTU (paths/mtu.ts chooses it); the size that fits any path by default. */
  mtu?: number;
  /** Path selection's endpoint for a peer (direct candidate or loopback relay proxy). */
  endpointFor?: (peer: NodeView) => string | undefined;
  /** Peers that are not tailnet nodes: the relays' reflectors. */
  extraPeers?: PeerConfig[];
}

export function desiredState({
  netmap,
  interfaceName,
  nodePrivateKey,
  listenPort,
  mtu = SAFE_MTU,
  endpointFor = choosePeerEndpoint,
  extraPeers = [],
}: DesiredInputs): DesiredState {
  const peers: PeerConfig[] = [];
  // A relay's key is never a tailnet node: a netmap peer claiming one (a node registered under a
  // relay's public key) is dropped, so whoever holds that relay key gets no allowed IPs through it.
  const seen = new Set<string>([netmap.self.nodeKey, ...extraPeers.map((p) => p.publicKey)]);
  // Sorted by key so the same map always gives the same state, whatever order deltas arrived in.
  for (const peer of [...netmap.peers].sort((a, b) =>
    a.nodeKey < b.nodeKey ? -1 : a.nodeKey > b.nodeKey ? 1 : 0,
  )) {
    // WireGuard holds one entry per key: a duplicate (or ourselves) would make the helper refuse
    // the whole state, so it is dropped here.
    if (seen.has(peer.nodeKey)) continue;
    seen.add(peer.nodeKey);
    const endpoint = endpointFor(peer);
    peers.push({
      publicKey: peer.nodeKey,
      allowedIPs: peer.allowedIPs,
      ...(endpoint ? { endpoint } : {}),
      persistentKeepalive: PERSISTENT_KEEPALIVE_SECONDS,
    });
  }
  const extras = new Set<string>();
  for (const extra of extraPeers) {
    if (extra.publicKey === netmap.self.nodeKey || extras.has(extra.publicKey)) continue;
    extras.add(extra.publicKey);
    peers.push(extra);
  }
  return {
    interface: {
      name: interfaceName,
      privateKey: nodePrivateKey,
      listenPort,
      addresses: netmap.self.addresses,
      mtu,
    },
    peers,
    routes: netmap.tailnetRanges,
    // Enforced by the helper on what arrives from the tunnel; an empty filter lets nothing in.
    filter: normalizeFilter(netmap.packetFilter),
  };
}

/** What path selection tells the desired state (paths/connectivity.ts while a session runs). */
export interface PathView {
  /** The endpoint for a peer: a direct candidate or the loopback relay proxy. */
  endpointFor(peer: NodeView): string | undefined;
  /** Peers that are not tailnet nodes: the relays' reflectors. */
  reflectorPeers(): PeerConfig[];
}

export interface OsInputs {
  netmap: NetMap;
  prefs: Prefs;
  /** Absent before a session has path selection: each peer gets its first candidate. */
  paths: PathView | null;
  /** The interface MTU chosen from the paths (paths/mtu.ts); 1280 when absent. */
  mtu?: number;
  interfaceName: string;
  nodePrivateKey: string;
  /** Prefixes of the networks this machine is on (never routed into the tunnel). */
  localPrefixes: string[];
  /** Control and relay servers' addresses as /32 and /128: reached outside the tunnel. */
  bypass: string[];
}

/** The whole desired OS state: the tunnel to every peer, then exit node, subnet routes, router. */
export function desiredOsState(inp: OsInputs): DesiredState {
  const { netmap, prefs, paths } = inp;
  const tunnel = desiredState({
    netmap,
    interfaceName: inp.interfaceName,
    nodePrivateKey: inp.nodePrivateKey,
    listenPort: prefs.listenPort,
    ...(inp.mtu === undefined ? {} : { mtu: inp.mtu }),
    ...(paths
      ? { endpointFor: (peer: NodeView) => paths.endpointFor(peer), extraPeers: paths.reflectorPeers() }
      : {}),
  });
  return applyRoutes(tunnel, netmap, { prefs, localPrefixes: inp.localPrefixes, bypass: inp.bypass });
}
