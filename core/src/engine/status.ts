import type { BackendState, InterfaceStatus, NetMap, PeerStatus, Status, WgPeerStatus } from '@weft/protocol';

// The LocalAPI Status: what control says about each peer (name, addresses, online) merged with
// what the real WireGuard interface says (endpoint in use, last handshake, bytes). Pure.

export interface StatusInputs {
  backendState: BackendState;
  controlUrl: string | null;
  authUrl: string | null;
  authUrlExpiresAt?: string | null;
  netmap: NetMap | null;
  /** The interface as the helper last reported it; null when not known. */
  iface: InterfaceStatus | null;
  health: string[];
  /** Path selection's view of a peer (direct or relayed, and through which region). */
  peerPath?: (
    key: string,
    endpoint: string | null,
  ) => { path: 'direct' | 'relay'; relayRegion: string | null };
}

/** Strips the prefix length: status shows addresses, not interface prefixes. */
const bare = (addr: string) => addr.replace(/\/\d+$/, '');

export function buildStatus(inp: StatusInputs): Status {
  const logged = inp.backendState !== 'NeedsLogin';
  const map = logged ? inp.netmap : null;
  // Peers are listed only while the tunnel is wanted: a stopped node reaches nobody.
  const showPeers = inp.backendState === 'Running' || inp.backendState === 'Starting';
  const wg = new Map<string, WgPeerStatus>(
    (inp.iface?.exists ? inp.iface.peers : []).map((p) => [p.publicKey, p]),
  );
  const peers: PeerStatus[] =
    showPeers && map
      ? map.peers.map((p) => {
          const w = wg.get(p.nodeKey);
          return {
            id: p.id,
            name: p.name,
            user: p.user,
            tags: p.tags,
            os: p.os,
            addresses: p.addresses.map(bare),
            online: p.online,
            lastSeen: p.lastSeen,
            endpoint: w?.endpoint ?? null,
            lastHandshake: w?.latestHandshake ? new Date(w.latestHandshake * 1000).toISOString() : null,
            rxBytes: w?.rxBytes ?? 0,
            txBytes: w?.txBytes ?? 0,
            ...(inp.peerPath ? inp.peerPath(p.nodeKey, w?.endpoint ?? null) : {}),
          };
        })
      : [];
  peers.sort((a, b) => a.name.localeCompare(b.name));
  return {
    backendState: inp.backendState,
    controlUrl: inp.controlUrl,
    authUrl: inp.authUrl,
    authUrlExpiresAt: inp.authUrl ? (inp.authUrlExpiresAt ?? null) : null,
    self: map
      ? {
          id: map.self.id,
          name: map.self.name,
          addresses: map.self.addresses.map(bare),
          keyExpiry: map.self.keyExpiry,
          os: map.self.os,
        }
      : null,
    peers,
    health: inp.health,
    user: map?.self.user ? { loginName: map.self.user, displayName: map.self.user } : null,
  };
}
