import { canonicalPrefix, formatAddr, type Prefix, parseAddr, parsePrefix } from '@weft/protocol';
import { inAny, UNROUTABLE } from '../reserved.js';

// Readers for `ip -j` output, reduced to what the planner compares. Addresses and prefixes come back
// canonical (compressed IPv6, host bits cleared for routes) so they compare equal to requested ones.

export interface LinkSnapshot {
  name: string;
  /** `linkinfo.info_kind`: `wireguard` for kernel WireGuard, `tun` for wireguard-go. */
  kind: string | null;
  mtu: number;
  up: boolean;
  /** Addresses the helper manages (`addr/len`), without the kernel's link-local and host ones. */
  addresses: string[];
}

export interface RouteSnapshot {
  /** Canonical prefix, `0.0.0.0/0` or `::/0` for the default route. */
  dst: string;
  /** Added by the kernel for an address (`proto kernel`): present, but not ours to delete. */
  kernel: boolean;
  /** A plain unicast route outside link-local and multicast: the kind the helper adds and deletes. */
  manageable: boolean;
}

interface IpAddrInfo {
  family?: string;
  local?: string;
  prefixlen?: number;
  scope?: string;
}

interface IpLink {
  ifname?: string;
  flags?: string[];
  mtu?: number;
  linkinfo?: { info_kind?: string };
  addr_info?: IpAddrInfo[];
}

interface IpRoute {
  dst?: string;
  type?: string;
  protocol?: string;
}

/** Parses `ip -j -d addr show dev NAME`. */
export function parseLink(json: string): LinkSnapshot {
  const [link] = JSON.parse(json) as IpLink[];
  if (link?.ifname === undefined || typeof link.mtu !== 'number') {
    throw new Error('unexpected output from ip -j addr show');
  }
  const addresses: string[] = [];
  for (const a of link.addr_info ?? []) {
    if (a.scope === 'link' || a.scope === 'host' || a.local === undefined) continue;
    const addr = parseAddr(a.local);
    if (addr !== null) addresses.push(`${formatAddr(addr)}/${a.prefixlen}`);
  }
  return {
    name: link.ifname,
    kind: link.linkinfo?.info_kind ?? null,
    mtu: link.mtu,
    up: link.flags?.includes('UP') ?? false,
    addresses,
  };
}

/** Parses `ip -j [-6] route show dev NAME` for one family. */
export function parseRoutes(json: string, family: 4 | 6): RouteSnapshot[] {
  const routes: RouteSnapshot[] = [];
  for (const r of JSON.parse(json) as IpRoute[]) {
    const dst = canonicalDst(r.dst, family);
    if (dst === null) continue;
    const kernel = r.protocol === 'kernel';
    const unicast = r.type === undefined || r.type === 'unicast';
    routes.push({
      dst,
      kernel,
      manageable: unicast && !kernel && !inAny(parsePrefix(dst) as Prefix, UNROUTABLE),
    });
  }
  return routes;
}

/** `ip` prints `default` for /0 and leaves the length off host routes. */
function canonicalDst(dst: string | undefined, family: 4 | 6): string | null {
  if (dst === undefined) return null;
  if (dst === 'default') return family === 4 ? '0.0.0.0/0' : '::/0';
  return canonicalPrefix(dst.includes('/') ? dst : `${dst}/${family === 4 ? 32 : 128}`);
}

/** Canonical `addr/len` of an interface address as requested (host bits kept). */
export function canonicalIfaceAddr(text: string): string {
  const p = parsePrefix(text) as Prefix;
  return `${formatAddr(p.addr)}/${p.bits}`;
}
