import { z } from 'zod';
import type { FilterRule } from './filter.js';
import { Cidr, Endpoint } from './primitives.js';

// The Tailscale client protocol's JSON, as the official clients (tailcfg, v1.84 and later) send and
// read it over ts2021. Requests are validated on arrival with the fields control uses; fields it does
// not use are accepted and dropped, since every client release adds some. Keys travel as
// `nodekey:`/`mkey:`/`discokey:` + 64 hex digits; Weft stores the same 32 bytes in base64.

/** v1.84's capability version: the oldest client accepted (the last ten minor releases to v1.102). */
export const TS_MIN_CAPABILITY_VERSION = 116;

const HEX_KEY = /^[0-9a-f]{64}$/;

/** A typed Tailscale key (`nodekey:…`) as the base64 Weft uses; throws on anything else. */
export function keyFromTailscale(text: string, prefix: 'nodekey' | 'mkey' | 'discokey'): string {
  const hex = text.startsWith(`${prefix}:`) ? text.slice(prefix.length + 1) : '';
  if (!HEX_KEY.test(hex)) throw new Error(`not a ${prefix}: key`);
  return Buffer.from(hex, 'hex').toString('base64');
}

/** A base64 key as Tailscale writes it. */
export function keyToTailscale(base64: string, prefix: 'nodekey' | 'mkey' | 'discokey'): string {
  return `${prefix}:${Buffer.from(base64, 'base64').toString('hex')}`;
}

export const isZeroTailscaleKey = (text: string): boolean => /^[a-z]+:0{64}$/.test(text);

const TsKey = (prefix: string) =>
  z.string().regex(new RegExp(`^${prefix}:[0-9a-f]{64}$`), `must be ${prefix}: and 64 hex digits`);

/** What control reads of a client's Hostinfo (the rest is kept by no one). */
export const TsHostinfo = z.object({
  IPNVersion: z.string().max(128).optional(),
  Hostname: z.string().max(256).optional(),
  OS: z.string().max(64).optional(),
  RoutableIPs: z.array(Cidr).max(64).nullish(),
  NetInfo: z.object({ PreferredDERP: z.number().int().min(0).max(65535).optional() }).nullish(),
});
export type TsHostinfo = z.infer<typeof TsHostinfo>;

export const TsRegisterRequest = z.object({
  Version: z.number().int().min(0),
  NodeKey: TsKey('nodekey'),
  OldNodeKey: TsKey('nodekey').optional(),
  Auth: z.object({ AuthKey: z.string().max(256).optional() }).nullish(),
  /** In the past: log out (expire the node key). */
  Expiry: z.string().optional(),
  /** The AuthURL of an earlier answer: wait for that sign-in to finish. */
  Followup: z.string().max(2048).optional(),
  Hostinfo: TsHostinfo.nullish(),
  Ephemeral: z.boolean().optional(),
});
export type TsRegisterRequest = z.infer<typeof TsRegisterRequest>;

export const TsMapRequest = z.object({
  Version: z.number().int().min(0),
  Compress: z.string().max(16).optional(),
  KeepAlive: z.boolean().optional(),
  NodeKey: TsKey('nodekey'),
  DiscoKey: TsKey('discokey').optional(),
  Endpoints: z.array(Endpoint).max(64).nullish(),
  Hostinfo: TsHostinfo.nullish(),
  Stream: z.boolean().optional(),
  OmitPeers: z.boolean().optional(),
  ReadOnly: z.boolean().optional(),
});
export type TsMapRequest = z.infer<typeof TsMapRequest>;

export interface TsUser {
  ID: number;
  LoginName: string;
  DisplayName: string;
}

export interface TsRegisterResponse {
  User?: TsUser & { Logins: unknown[]; Created: string };
  Login?: TsUser & { Provider: string };
  NodeKeyExpired: boolean;
  MachineAuthorized: boolean;
  AuthURL: string;
  Error?: string;
}

/** A node as tailcfg.Node: itself in `Node`, its peers in `Peers`/`PeersChanged`. */
export interface TsNode {
  ID: number;
  StableID: string;
  Name: string;
  User: number;
  Key: string;
  KeyExpiry: string;
  Machine?: string;
  DiscoKey?: string;
  Addresses: string[];
  AllowedIPs: string[];
  Endpoints: string[];
  HomeDERP?: number;
  /** The legacy spelling of HomeDERP ("127.3.3.40:REGION"), still read by older clients. */
  DERP?: string;
  Hostinfo: { Hostname: string; OS: string; IPNVersion?: string; RoutableIPs?: string[] };
  Created: string;
  Tags?: string[];
  PrimaryRoutes?: string[];
  LastSeen?: string;
  Online?: boolean;
  MachineAuthorized: boolean;
  Expired?: boolean;
  ComputedName: string;
  ComputedNameWithHost: string;
  /** A peer without disco or DERP: plain WireGuard to its endpoints (how Weft nodes appear). */
  IsWireGuardOnly?: boolean;
}

export interface TsPeerChange {
  NodeID: number;
  Endpoints?: string[];
  Online?: boolean;
  LastSeen?: string;
  DERPRegion?: number;
  DiscoKey?: string;
  Key?: string;
  KeyExpiry?: string;
}

export interface TsDerpNode {
  Name: string;
  RegionID: number;
  HostName: string;
  IPv4?: string;
  IPv6?: string;
  DERPPort?: number;
  STUNPort?: number;
  InsecureForTests?: boolean;
}

export interface TsDerpMap {
  Regions: Record<string, { RegionID: number; RegionCode: string; RegionName: string; Nodes: TsDerpNode[] }>;
  OmitDefaultRegions: boolean;
}

/** tailcfg.DNSConfig: resolvers as dnstype.Resolver ({Addr}), split domains in Routes. */
export interface TsDnsConfig {
  Resolvers: { Addr: string }[];
  Routes: Record<string, { Addr: string }[]>;
  Domains: string[];
  /** MagicDNS: the client answers tailnet names itself. */
  Proxied: boolean;
  ExtraRecords: { Name: string; Type: string; Value: string }[];
}

export interface TsMapResponse {
  KeepAlive?: boolean;
  Node?: TsNode;
  DERPMap?: TsDerpMap;
  Peers?: TsNode[];
  PeersChanged?: TsNode[];
  PeersRemoved?: number[];
  PeersChangedPatch?: TsPeerChange[];
  PacketFilter?: FilterRule[];
  UserProfiles?: TsUser[];
  Domain?: string;
  DNSConfig?: TsDnsConfig;
  CollectServices?: boolean;
  ControlTime?: string;
}

/** Sent in the clear-text-free "early payload" right after the handshake (tailcfg.EarlyNoise). */
export interface TsEarlyNoise {
  NodeKeyChallenge: string;
}
