import { z } from 'zod';
import { DnsDomain } from './dns.js';
import { parseAddr } from './ip.js';
import { Cidr, Endpoint, IfaceAddr, InterfaceName, Key, Port } from './primitives.js';

// The privileged helper's one command language: newline-delimited JSON over a local socket.
// The engine always sends the complete desired state; the helper converges the OS to it.

/** The most OS resolvers a status reports (the helper keeps the first ones). */
export const MAX_OS_RESOLVERS = 16;

/** Largest request line the helper reads; longer input is refused before parsing. */
export const HELPER_MAX_MESSAGE_BYTES = 4 * 1024 * 1024;

export const PeerConfig = z.strictObject({
  publicKey: Key,
  allowedIPs: z.array(Cidr).max(4096),
  endpoint: Endpoint.optional(),
  persistentKeepalive: z.number().int().min(1).max(65535).optional(),
});
export type PeerConfig = z.infer<typeof PeerConfig>;

/**
 * Well-known IP protocol numbers of the packet filter. Ports mean something only for TCP, UDP and
 * SCTP; ICMP matches by address alone; any other protocol matches only a destination whose ports
 * are the whole range 0-65535 (Tailscale's filter semantics).
 */
export const IP_PROTO = { icmp: 1, tcp: 6, udp: 17, icmpv6: 58, sctp: 132 } as const;

export const FilterPorts = z
  .strictObject({ first: Port, last: Port })
  .refine((r) => r.first <= r.last, 'first must not be greater than last');

export const FilterDestination = z.strictObject({ prefix: Cidr, ports: FilterPorts });

/**
 * One accept rule of the packet filter, normalised by the engine from the netmap's Tailscale-shaped
 * rules: a packet arriving from the tunnel from any `src` prefix, to any `dst` prefix and port, with
 * a protocol in `protos`, is accepted. `*` has become 0.0.0.0/0 and ::/0, ranges have become prefixes.
 */
export const FilterRuleSpec = z.strictObject({
  src: z.array(Cidr).min(1).max(65536),
  dst: z.array(FilterDestination).min(1).max(65536),
  protos: z.array(z.number().int().min(0).max(255)).min(1).max(256),
});
export type FilterRuleSpec = z.infer<typeof FilterRuleSpec>;

/** This node forwards tunnel traffic into its other networks: a subnet router or an exit node. */
export const RouterConfig = z.strictObject({
  /** The approved routes this node serves (0.0.0.0/0 and ::/0 for an exit node); nothing else is forwarded. */
  routes: z.array(Cidr).min(1).max(4096),
  /** Source-NAT forwarded traffic to the outgoing interface's address, so the LAN needs no route back. */
  masquerade: z.boolean(),
});
export type RouterConfig = z.infer<typeof RouterConfig>;

/**
 * This node sends its default traffic through the tunnel (an exit node is selected). The exit peer's
 * `allowedIPs` carry 0.0.0.0/0 and ::/0; the helper routes everything else into the interface.
 */
export const ExitNodeConfig = z.strictObject({
  /** Local LAN prefixes that stay reachable outside the tunnel (allow-LAN access); [] blocks the LAN. */
  allowedLan: z.array(Cidr).max(256),
  /** Control and relay servers the engine reaches outside the tunnel (usually /32 and /128). */
  bypass: z.array(Cidr).max(256),
});
export type ExitNodeConfig = z.infer<typeof ExitNodeConfig>;

const Ipv4 = z.string().refine((s) => parseAddr(s)?.family === 4, 'must be an IPv4 address');
const Ipv6 = z.string().refine((s) => parseAddr(s)?.family === 6, 'must be an IPv6 address');

/**
 * The OS resolves through the engine's resolver ("use tailnet DNS" is on and control sent DNS
 * settings): 100.100.100.100:53 and fd7a:115c:a1e0::53 port 53 are redirected to where the resolver
 * listens (the tunnel addresses, a high port: the engine is unprivileged), and the OS resolver
 * configuration points at 100.100.100.100 with these search domains. Absent: DNS is left alone.
 */
export const DnsConfig = z.strictObject({
  resolver: z.strictObject({
    ipv4: Ipv4,
    ipv6: Ipv6.optional(),
    port: z.number().int().min(1024).max(65535),
  }),
  searchDomains: z.array(DnsDomain).max(16),
});
export type DnsConfig = z.infer<typeof DnsConfig>;

export const DesiredState = z.strictObject({
  interface: z.strictObject({
    name: InterfaceName,
    privateKey: Key,
    listenPort: Port,
    addresses: z.array(IfaceAddr).max(16),
    mtu: z.number().int().min(1280).max(9000),
  }),
  peers: z.array(PeerConfig).max(65536),
  /** Prefixes routed into the interface (peers' addresses and approved routes). */
  routes: z.array(Cidr).max(65536),
  /**
   * The packet filter enforced on traffic arriving from the tunnel (and forwarded by a router): what
   * a rule accepts, plus replies to this node's own connections, gets in; the rest is dropped.
   * Absent: the helper installs no filter (everything the peers send arrives).
   */
  filter: z.array(FilterRuleSpec).max(16384).optional(),
  router: RouterConfig.optional(),
  exitNode: ExitNodeConfig.optional(),
  dns: DnsConfig.optional(),
});
export type DesiredState = z.infer<typeof DesiredState>;

const RequestId = z.number().int().min(0).max(Number.MAX_SAFE_INTEGER);

export const HelperRequest = z.discriminatedUnion('op', [
  z.strictObject({ id: RequestId, op: z.literal('apply'), state: DesiredState }),
  z.strictObject({ id: RequestId, op: z.literal('status'), interface: InterfaceName }),
  z.strictObject({ id: RequestId, op: z.literal('down'), interface: InterfaceName }),
]);
export type HelperRequest = z.infer<typeof HelperRequest>;

export const WgPeerStatus = z.strictObject({
  publicKey: Key,
  endpoint: z.string().nullable(),
  allowedIPs: z.array(z.string()),
  /** Unix seconds of the last handshake, null if none. */
  latestHandshake: z.number().int().nullable(),
  rxBytes: z.number().int(),
  txBytes: z.number().int(),
});
export type WgPeerStatus = z.infer<typeof WgPeerStatus>;

export const InterfaceStatus = z.strictObject({
  name: InterfaceName,
  exists: z.boolean(),
  backend: z.enum(['kernel', 'wireguard-go']).nullable(),
  publicKey: Key.nullable(),
  listenPort: Port.nullable(),
  addresses: z.array(z.string()),
  peers: z.array(WgPeerStatus),
  /**
   * While the helper points the OS at the tailnet resolver: the resolvers the OS had before (the
   * engine forwards to them when the tailnet sets none).
   */
  osResolvers: z.array(z.string().max(64)).max(MAX_OS_RESOLVERS).optional(),
});
export type InterfaceStatus = z.infer<typeof InterfaceStatus>;

export const HelperErrorCode = z.enum(['invalid-request', 'too-large', 'os-error', 'not-found', 'busy']);

export const HelperResponse = z.union([
  z.strictObject({ id: RequestId, ok: z.literal(true), status: InterfaceStatus }),
  z.strictObject({
    id: RequestId.nullable(),
    ok: z.literal(false),
    error: z.strictObject({ code: HelperErrorCode, message: z.string() }),
  }),
]);
export type HelperResponse = z.infer<typeof HelperResponse>;
