import { z } from 'zod';
import { DnsQueryName, DnsSettings } from './dns.js';
import { StatusPrefs } from './prefs.js';
import { Hostname } from './primitives.js';

// The engine's LocalAPI (HTTP over a unix socket), used by the `weft` CLI and the desktop app.

export const BackendState = z.enum(['NeedsLogin', 'Starting', 'Running', 'Stopped']);
export type BackendState = z.infer<typeof BackendState>;

export const PeerStatus = z.strictObject({
  id: z.string(),
  name: z.string(),
  /** The name it resolves by (NAME.BASE-DOMAIN) while MagicDNS is on; absent otherwise. */
  dnsName: z.string().optional(),
  user: z.string().nullable(),
  tags: z.array(z.string()),
  os: z.string(),
  addresses: z.array(z.string()),
  online: z.boolean(),
  lastSeen: z.string().nullable(),
  /** The WireGuard endpoint currently in use, as the interface reports it. */
  endpoint: z.string().nullable(),
  /** ISO time of the last WireGuard handshake, null if none yet. */
  lastHandshake: z.string().nullable(),
  rxBytes: z.number().int(),
  txBytes: z.number().int(),
  /**
   * How packets to this peer travel now: straight to `endpoint` (confirmed by packets received on
   * it), or through the relay (`endpoint` is then the engine's loopback relay proxy).
   */
  path: z.enum(['direct', 'relay']).optional(),
  /** The relay region the engine sends through while `path` is relay; null when direct or none. */
  relayRegion: z.string().nullable().optional(),
  /**
   * Why the path is the relay, as far as this node can tell (e.g. "peer's NAT maps per
   * destination"); null when direct.
   */
  relayReason: z.string().nullable().optional(),
  /** The peer offers an approved exit node this node may use (`weft set --exit-node`). */
  exitNodeOption: z.boolean().optional(),
  /** This node sends its internet traffic through the peer now. */
  exitNode: z.boolean().optional(),
  /** Round trip through the tunnel, in ms, when measured (`weft exit-node list` measures it). */
  latencyMs: z.number().nonnegative().nullable().optional(),
  /** Approved subnet routes this node sends to the peer (with accept-routes on). */
  routes: z.array(z.string()).optional(),
});
export type PeerStatus = z.infer<typeof PeerStatus>;

export const Status = z.strictObject({
  backendState: BackendState,
  controlUrl: z.string().nullable(),
  /** Set while waiting for an interactive login. */
  authUrl: z.string().nullable(),
  /** When `authUrl` stops working (ISO time), if control said; absent from older engines. */
  authUrlExpiresAt: z.string().nullable().optional(),
  self: z
    .strictObject({
      id: z.string(),
      name: z.string(),
      /** The name it resolves by (NAME.BASE-DOMAIN) while MagicDNS is on; absent otherwise. */
      dnsName: z.string().optional(),
      addresses: z.array(z.string()),
      /**
       * When this node's key expires (ISO time) and it must sign in again; null when expiry is
       * disabled. Absent from older engines. Automatic rotation keeps this deadline.
       */
      keyExpiry: z.string().nullable().optional(),
      /** This node's OS as control knows it (linux, darwin, win32, …). Absent from older engines. */
      os: z.string().optional(),
    })
    .nullable(),
  peers: z.array(PeerStatus),
  /** Human-readable problems (control unreachable, helper down, …); empty when healthy. */
  health: z.array(z.string()),
  /** The exit node chosen (`weft set --exit-node`), by peer id; null for none. */
  exitNode: z.strictObject({ id: z.string(), allowLan: z.boolean() }).nullable().optional(),
  /** The online exit node with the lowest measured latency (`weft exit-node suggest`). */
  recommendedExitNodeId: z.string().nullable().optional(),
  /** Allow-LAN, and what this node offers to route for the tailnet (control still approves it). */
  prefs: StatusPrefs.optional(),
  /**
   * Who this node is signed in as; null for a tagged node or when logged out. Control sends only
   * the login name so far, so displayName is the login name too. Absent from older engines.
   */
  user: z.strictObject({ loginName: z.string(), displayName: z.string() }).nullable().optional(),
  /** The tunnel interface's MTU in force and why (the paths it was chosen from); absent while down. */
  mtu: z.strictObject({ mtu: z.number().int().min(1280).max(9000), reason: z.string() }).optional(),
});
export type Status = z.infer<typeof Status>;

export const UpRequest = z.strictObject({
  controlUrl: z
    .string()
    .url()
    .refine((u) => /^https?:\/\//.test(u), 'must be an http(s) URL'),
  authKey: z.string().min(1).max(256).optional(),
  hostname: Hostname.optional(),
  /** Control's key differs from the one pinned at first use: accept and pin the new one. */
  acceptNewControlKey: z.boolean().optional(),
});
export type UpRequest = z.infer<typeof UpRequest>;

/** One peer offering an exit node, as `GET LOCALAPI_PREFIX/exit-nodes` lists it. */
export const ExitNodeInfo = z.strictObject({
  id: z.string(),
  name: z.string(),
  tags: z.array(z.string()),
  addresses: z.array(z.string()),
  online: z.boolean(),
  /** Round trip through the tunnel just measured (best of a few probes); null when no answer. */
  latencyMs: z.number().nonnegative().nullable(),
  /** In use now. */
  selected: z.boolean(),
});
export type ExitNodeInfo = z.infer<typeof ExitNodeInfo>;

/** `GET LOCALAPI_PREFIX/exit-nodes`: the exit nodes this node may use, latencies measured now. */
export const ExitNodeList = z.strictObject({
  exitNodes: z.array(ExitNodeInfo),
  /** The online exit node with the lowest latency; null when none answered. */
  recommended: z.string().nullable(),
});
export type ExitNodeList = z.infer<typeof ExitNodeList>;

/** `GET LOCALAPI_PREFIX/dns`: the tailnet's DNS as this node uses it (`weft dns status`). */
export const DnsStatus = z.strictObject({
  /** The settings control sent; null before a netmap (or from a control without DNS). */
  settings: DnsSettings.nullable(),
  useTailnetDns: z.boolean(),
  /** Where the engine's resolver listens (the OS reaches it as 100.100.100.100); null: not running. */
  resolver: z.strictObject({ addresses: z.array(z.string()), port: z.number().int() }).nullable(),
  /** The resolvers the OS had before (forwarded to when the tailnet sets none), as the helper said. */
  osResolvers: z.array(z.string()),
  /** Every name this node answers itself. */
  records: z.array(z.strictObject({ name: z.string(), addresses: z.array(z.string()) })),
  stats: z.strictObject({
    queries: z.number().int(),
    answeredLocally: z.number().int(),
    forwarded: z.number().int(),
    cacheHits: z.number().int(),
    malformed: z.number().int(),
    failed: z.number().int(),
  }),
});
export type DnsStatus = z.infer<typeof DnsStatus>;

/** `POST LOCALAPI_PREFIX/dns/query`: one question, answered by the engine's resolver. */
export const DnsQueryRequest = z.strictObject({
  name: z
    .string()
    .max(254)
    .transform((s) => s.toLowerCase().replace(/\.$/, ''))
    .pipe(DnsQueryName),
  type: z.enum(['A', 'AAAA', 'PTR', 'TXT', 'MX', 'CNAME', 'SRV', 'NS']),
});
export type DnsQueryRequest = z.input<typeof DnsQueryRequest>;

export const DnsQueryResult = z.strictObject({
  name: z.string(),
  type: z.string(),
  rcode: z.string(),
  /** "TYPE data" per record. */
  records: z.array(z.string()),
});
export type DnsQueryResult = z.infer<typeof DnsQueryResult>;

export const LOCALAPI_PREFIX = '/localapi/v0';

/**
 * One line of `GET LOCALAPI_PREFIX/watch` (newline-delimited JSON): the whole status, first with
 * `initial: true`, then again whenever the engine's state changes. Byte counters are as of that
 * moment; poll `/status` for live ones.
 */
export const WatchEvent = z.strictObject({ initial: z.boolean(), status: Status });
export type WatchEvent = z.infer<typeof WatchEvent>;

/** One relay region as `weft netcheck` sees it. */
export const NetcheckRelay = z.strictObject({
  regionId: z.number().int(),
  name: z.string(),
  url: z.string(),
  /** The WebSocket is up and authenticated. */
  connected: z.boolean(),
  /** Round trip of the last WebSocket ping, null before the first answer. */
  latencyMs: z.number().nullable(),
  /** This node's WireGuard socket as the region's reflector sees it; null if not (yet) seen. */
  reflected: z.string().nullable(),
  home: z.boolean(),
});
export type NetcheckRelay = z.infer<typeof NetcheckRelay>;

/** `GET LOCALAPI_PREFIX/netcheck`: what the node knows about its network's NAT and relays. */
export const NetcheckReport = z.strictObject({
  /** UDP to the reflectors works (a reflector saw the WireGuard socket); null with no relays. */
  udp: z.boolean().nullable(),
  /** The distinct reflected endpoints of the WireGuard socket. */
  reflected: z.array(z.string()),
  /**
   * True when two reflectors saw different mappings of the same socket (endpoint-dependent,
   * "symmetric" NAT: direct paths work only towards peers without NAT); null with fewer than two.
   */
  mappingVariesByDestination: z.boolean().nullable(),
  /** The LAN candidates of the WireGuard socket. */
  local: z.array(z.string()),
  /**
   * Port mapping on the default gateway: which protocol mapped the WireGuard port ('none': the
   * gateway mapped it by none of PCP, NAT-PMP and UPnP IGD, or there is no gateway; null before
   * the first try)
   * and the public endpoint it mapped.
   */
  portMapping: z.strictObject({
    answered: z.enum(['pcp', 'nat-pmp', 'upnp', 'none']).nullable(),
    endpoint: z.string().nullable(),
  }),
  homeRegion: z.string().nullable(),
  relays: z.array(NetcheckRelay),
});
export type NetcheckReport = z.infer<typeof NetcheckReport>;
