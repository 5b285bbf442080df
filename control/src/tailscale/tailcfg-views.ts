import {
  DEFAULT_BASE_DOMAIN,
  type DnsSettings,
  keyToTailscale,
  type NodeView,
  parseAddr,
  type RelayMap,
  type TsDerpMap,
  type TsDnsConfig,
  type TsNode,
  type TsUser,
} from '@weft/protocol';

// Weft's netmap as tailcfg: the one translation between the hub's views and what a Tailscale client
// reads. Tailscale ids are numbers: a node's is its IPv4 address as an integer (unique and kept for
// the node's life), a user's a hash of the login name; tagged nodes belong to Tailscale's
// "tagged-devices" user. Weft nodes have no disco key and do not speak DERP: they are sent as
// WireGuard-only peers, reached at their candidate endpoints.

/** Tailscale's id for the owner of tagged nodes. */
export const TAGGED_DEVICES_USER_ID = 2147455555;
const LEGACY_DERP_IP = '127.3.3.40';

export function tsNodeId(ipv4: string): number {
  const addr = parseAddr(ipv4);
  if (addr === null || addr.family !== 4) throw new Error(`not an IPv4 address: ${ipv4}`);
  return Number(addr.value);
}

export function tsUserId(user: string | null): number {
  if (user === null) return TAGGED_DEVICES_USER_ID;
  // FNV-1a, kept below 2^31 and away from the tagged-devices id.
  let hash = 0x811c9dc5;
  for (const byte of Buffer.from(user)) hash = Math.imul(hash ^ byte, 0x01000193) >>> 0;
  const id = (hash % 2_000_000_000) + 1;
  return id === TAGGED_DEVICES_USER_ID ? id + 1 : id;
}

export function tsUserProfile(user: string | null): TsUser {
  return user === null
    ? { ID: TAGGED_DEVICES_USER_ID, LoginName: 'tagged-devices', DisplayName: 'Tagged Devices' }
    : { ID: tsUserId(user), LoginName: user, DisplayName: user };
}

const NEVER = '0001-01-01T00:00:00Z';

/**
 * A node as tailcfg.Node; `self` for the client's own node (no Online/LastSeen, as Tailscale sends).
 * Its Name is NAME.DOMAIN. with the tailnet's DNS base domain.
 */
export function toTsNode(view: NodeView, self: boolean, domain = DEFAULT_BASE_DOMAIN): TsNode {
  const tailscale = view.kind === 'tailscale';
  const ipv4 = (view.addresses[0] ?? '').split('/')[0] as string;
  const name = `${view.name}.${domain}.`;
  return {
    ID: tsNodeId(ipv4),
    StableID: view.id,
    Name: name,
    User: tsUserId(view.user),
    Key: keyToTailscale(view.nodeKey, 'nodekey'),
    KeyExpiry: view.keyExpiry ?? NEVER,
    ...(view.discoKey ? { DiscoKey: keyToTailscale(view.discoKey, 'discokey') } : {}),
    Addresses: view.addresses,
    AllowedIPs: view.allowedIPs,
    Endpoints: view.endpoints,
    ...(tailscale && view.homeRelay
      ? { HomeDERP: view.homeRelay, DERP: `${LEGACY_DERP_IP}:${view.homeRelay}` }
      : {}),
    Hostinfo: {
      Hostname: view.name,
      OS: view.os,
      ...(view.clientVersion ? { IPNVersion: view.clientVersion } : {}),
      // Which routes the peer offers, so `tailscale status` can list exit nodes.
      RoutableIPs: view.allowedIPs.slice(view.addresses.length),
    },
    // Weft's views carry no creation time; the zero time reads as unknown.
    Created: NEVER,
    ...(view.tags.length > 0 ? { Tags: view.tags } : {}),
    PrimaryRoutes: view.allowedIPs
      .slice(view.addresses.length)
      .filter((r) => r !== '0.0.0.0/0' && r !== '::/0'),
    ...(self ? {} : { Online: view.online, ...(view.lastSeen ? { LastSeen: view.lastSeen } : {}) }),
    MachineAuthorized: true,
    ComputedName: view.name,
    ComputedNameWithHost: view.name,
    ...(tailscale || self ? {} : { IsWireGuardOnly: true }),
  };
}

/** Weft's relay map as a DERP map: each weft-relay region is one DERP region of one node. */
export function toDerpMap(relays: RelayMap | undefined): TsDerpMap {
  const regions: TsDerpMap['Regions'] = {};
  for (const r of relays?.regions ?? []) {
    const url = new URL(r.url);
    const host = url.hostname.replace(/^\[|\]$/g, '');
    const literal = parseAddr(host);
    const secure = url.protocol === 'wss:';
    regions[String(r.regionId)] = {
      RegionID: r.regionId,
      RegionCode: r.name,
      RegionName: r.name,
      Nodes: [
        {
          Name: `${r.regionId}a`,
          RegionID: r.regionId,
          HostName: host,
          ...(literal?.family === 4 ? { IPv4: host } : literal?.family === 6 ? { IPv6: host } : {}),
          DERPPort: url.port === '' ? (secure ? 443 : 80) : Number(url.port),
          // -1 tells the client this node has no STUN.
          STUNPort: r.stunPort ?? -1,
          // A ws:// relay has no certificate a client could check (a lab, a test).
          ...(secure ? {} : { InsecureForTests: true }),
        },
      ],
    };
  }
  return { Regions: regions, OmitDefaultRegions: true };
}

const resolvers = (servers: readonly string[]) => servers.map((Addr) => ({ Addr }));

/**
 * The tailnet's DNS settings as tailcfg.DNSConfig: MagicDNS is `Proxied` (the client answers the
 * names itself at 100.100.100.100) with the base domain first among the search domains.
 */
export function toTsDnsConfig(dns: DnsSettings): TsDnsConfig {
  const routes: Record<string, { Addr: string }[]> = {};
  for (const [domain, servers] of Object.entries(dns.splitDns)) routes[domain] = resolvers(servers);
  return {
    Resolvers: resolvers(dns.nameservers),
    Routes: routes,
    Domains: dns.magicDns ? [dns.baseDomain, ...dns.searchDomains] : dns.searchDomains,
    Proxied: dns.magicDns,
    ExtraRecords: dns.extraRecords.map((r) => ({ Name: r.name, Type: r.type, Value: r.value })),
  };
}
