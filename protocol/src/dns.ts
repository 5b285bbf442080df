import { z } from 'zod';
import { type Addr, type Prefix, parseAddr, parseEndpoint, parsePrefix, prefixContains } from './ip.js';

// The tailnet's DNS settings (MagicDNS, nameservers, split DNS, search domains, extra records): what
// an admin sets with `weft-control dns set`, what control keeps in its settings table and what every
// node receives in its netmap. One schema for all three, so a value refused at the CLI can never
// reach a node, and a node refuses a netmap whose settings are not exactly right.

const LABEL = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;

/** A domain name without the trailing dot: lower-case labels, at most 253 characters. */
export const DnsDomain = z
  .string()
  .max(253)
  .refine(
    (s) => s.split('.').every((label) => LABEL.test(label)),
    'must be a domain name: dot-separated labels of lower-case letters, digits and -',
  );

/**
 * Where no upstream may be: the resolver's own addresses. Each node's queries to them are redirected
 * back into its resolver, so forwarding there loops. A DNS server on a peer's tailnet address (a
 * Pi-hole on the tailnet) is a fine upstream: its queries go through the tunnel to that peer.
 */
const NOT_UPSTREAM = ['100.100.100.100/32', 'fd7a:115c:a1e0::53/128'].map((p) => parsePrefix(p) as Prefix);

function upstreamAddr(s: string): Addr | null {
  return parseAddr(s) ?? parseEndpoint(s)?.addr ?? null;
}

const QUERY_LABEL = /^[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?$/;

/**
 * A name to ask about: as a domain name, but labels may also hold `_` (SRV names such as
 * `_sip._tcp.example.com`, `_msdcs` and the like are names one asks, not names one sets).
 */
export const DnsQueryName = z
  .string()
  .max(253)
  .refine(
    (s) => s.split('.').every((label) => QUERY_LABEL.test(label)),
    'must be a domain name: dot-separated labels of lower-case letters, digits, - and _',
  );

/** An upstream resolver: an IP address (port 53) or ip:port / [ipv6]:port, outside the tailnet. */
export const Nameserver = z
  .string()
  .refine((s) => upstreamAddr(s) !== null, 'must be an IP address, ip:port or [ipv6]:port')
  .refine((s) => {
    const addr = upstreamAddr(s);
    return addr === null || !NOT_UPSTREAM.some((p) => prefixContains(p, addr));
  }, 'must not be the tailnet resolver (100.100.100.100, fd7a:115c:a1e0::53): forwarding there loops back into the resolver');

export const ExtraRecord = z
  .strictObject({
    name: DnsDomain,
    type: z.enum(['A', 'AAAA']),
    value: z.string(),
  })
  .refine((r) => parseAddr(r.value)?.family === (r.type === 'A' ? 4 : 6), {
    message: 'an A record needs an IPv4 address, an AAAA record an IPv6 address',
    path: ['value'],
  });
export type ExtraRecord = z.infer<typeof ExtraRecord>;

export const DnsSettings = z.strictObject({
  /** Answer tailnet names (NAME.baseDomain, and NAME through the search domain). */
  magicDns: z.boolean(),
  /** The suffix of every node's name. */
  baseDomain: DnsDomain,
  /** Where names outside the tailnet and the split domains go; empty: the OS's own resolvers. */
  nameservers: z.array(Nameserver).max(8),
  /** Split DNS: names in a domain (and its subdomains) go to that domain's resolvers. */
  splitDns: z.record(DnsDomain, z.array(Nameserver).min(1).max(8)),
  /** Tried in order for a single-label name (the base domain comes first with MagicDNS). */
  searchDomains: z.array(DnsDomain).max(16),
  extraRecords: z.array(ExtraRecord).max(1024),
});
export type DnsSettings = z.infer<typeof DnsSettings>;

/** Names such as `laptop.weft.internal`, matching the names Tailscale clients are shown. */
export const DEFAULT_BASE_DOMAIN = 'weft.internal';

/** A tailnet's settings until an admin sets them: MagicDNS on, the OS's resolvers for the rest. */
export const DNS_DEFAULTS: DnsSettings = {
  magicDns: true,
  baseDomain: DEFAULT_BASE_DOMAIN,
  nameservers: [],
  splitDns: {},
  searchDomains: [],
  extraRecords: [],
};

/** What `dns set` sends: only the settings it changes. */
export const DnsSettingsPatch = DnsSettings.partial();
export type DnsSettingsPatch = z.infer<typeof DnsSettingsPatch>;

/** The address the engine's resolver answers at (as Tailscale's does), and its IPv6 twin. */
export const TAILNET_DNS_IPV4 = '100.100.100.100';
export const TAILNET_DNS_IPV6 = 'fd7a:115c:a1e0::53';
