import type { DesiredState, NetMap, NodeView, PeerConfig } from '@weft/protocol';
import { choosePeerEndpoint } from '../paths/selection.js';
import { normalizeFilter } from './filter.js';

// The complete OS state the helper should converge to, as a pure function of what the engine
// knows. Pure so it is tested without sockets, and so re-sending it is always safe.

export const TUNNEL_MTU = 1280;
export const PERSISTENT_KEEPALIVE_SECONDS = 25;

export interface DesiredInputs {
  netmap: NetMap;
  interfaceName: string;
  nodePrivateKey: string;
  listenPort: number;
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
      mtu: TUNNEL_MTU,
    },
    peers,
    routes: netmap.tailnetRanges,
    // Enforced by the helper on what arrives from the tunnel; an empty filter lets nothing in.
    filter: normalizeFilter(netmap.packetFilter),
  };
}
