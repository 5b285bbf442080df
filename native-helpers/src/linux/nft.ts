import { createHash } from 'node:crypto';
import {
  type DesiredState,
  type ExitNodeConfig,
  type Family,
  type FilterRuleSpec,
  IP_PROTO,
  mergeSpans,
  type Prefix,
  parsePrefix,
  type Span,
} from '@weft/protocol';
import { BackendError } from '../backend.js';
import { WEFT_FWMARK } from './exit-routing.js';
import {
  disjointRects,
  disjointRectsBound,
  formatAddrSpan,
  formatPortSpan,
  prefixSpan,
} from './intervals.js';

// The nftables ruleset of one WireGuard interface: one table, `inet weft-NAME`, holding everything the
// helper enforces for that interface. It is rendered as a whole from the desired state and replaced in
// one transaction (`add table` + `delete table` + the new table in one file), so there is never a
// moment with no rules or half the rules. The table's comment carries a hash of what was rendered, so
// an unchanged state is recognised without reading the rules back, and nothing runs.

/** Protocols whose destination ports the filter matches (TCP, UDP, SCTP). */
const PORT_PROTOS = new Set<number>([IP_PROTO.tcp, IP_PROTO.udp, IP_PROTO.sctp]);
/** Protocols matched by address alone, whatever the ports say. */
const ICMP_PROTOS = new Set<number>([IP_PROTO.icmp, IP_PROTO.icmpv6]);
const ALL_PORTS: Span = { first: 0n, last: 65535n };

const FAMILIES = [4, 6] as const;
const ADDR_TYPE = { 4: 'ipv4_addr', 6: 'ipv6_addr' } as const;
const IP = { 4: 'ip', 6: 'ip6' } as const;

/**
 * The most set elements one table may hold. A 48 KB filter of overlapping prefixes with distinct ports
 * would otherwise render millions (megabytes of rules, for root to build and nft to load); real
 * netmaps stay far below this.
 */
export const MAX_TABLE_ELEMENTS = 65_536;

export const TABLE_FAMILY = 'inet';
export const HASH_PREFIX = 'weft sha256:';

export function tableName(iface: string): string {
  return `weft-${iface}`;
}

export interface RenderedTable {
  name: string;
  /** Identifies the rendered content; kept in the table's comment. */
  hash: string;
  /** The `nft -f` file: creates or replaces the table in one transaction. */
  file: string;
}

/** The table the state asks for, or null when it asks for nothing the firewall has to do. */
export function renderTable(state: DesiredState): RenderedTable | null {
  const { filter, router, exitNode } = state;
  if (filter === undefined && router === undefined && exitNode === undefined) return null;
  const iface = state.interface.name;
  const b = new Builder();
  const q = JSON.stringify(iface);

  // Inbound from the tunnel: replies to our own connections, then what the filter accepts; the rest drops.
  const filterChain = filter === undefined ? null : renderFilter(filter, b);
  if (filterChain !== null) {
    b.chain('input', 'type filter hook input priority filter; policy accept;', [
      `iifname ${q} ct state established,related accept`,
      `iifname ${q} jump ${filterChain}`,
      `iifname ${q} counter drop`,
      // The tunnel addresses are reached only through the tunnel: otherwise a host on the LAN could send
      // to them directly and skip the filter (wg-quick guards the same way).
      ...selfGuard(state, q),
    ]);
  }
  // Forwarded from the tunnel: only to the routes this node serves as a router, and only what the filter
  // allows there. A node that is not a router forwards nothing from the tunnel (Docker and friends turn
  // forwarding on for their own reasons).
  if (filterChain !== null || router !== undefined) {
    const lines = [`iifname ${q} ct state established,related accept`];
    for (const family of FAMILIES) {
      const routes = router === undefined ? [] : spansOf(router.routes, family);
      if (routes.length === 0) continue;
      b.reserve(routes.length, 'state.router.routes');
      const set = b.set(
        `route${family}`,
        ADDR_TYPE[family],
        routes.map((s) => formatAddrSpan(family, s)),
      );
      const verdict = filterChain === null ? 'accept' : `jump ${filterChain}`;
      lines.push(`iifname ${q} ${IP[family]} daddr @${set} ${verdict}`);
    }
    lines.push(`iifname ${q} counter drop`);
    b.chain('forward', 'type filter hook forward priority filter; policy accept;', lines);
  }
  if (router?.masquerade) {
    b.chain('postrouting', 'type nat hook postrouting priority srcnat; policy accept;', [
      `iifname ${q} oifname != ${q} masquerade`,
    ]);
  }
  if (exitNode !== undefined) renderKillswitch(exitNode, q, b);

  const body = b.body();
  const hash = createHash('sha256').update(body).digest('hex').slice(0, 32);
  const name = tableName(iface);
  const file = [
    // `add` makes the `delete` valid when the table does not exist yet; all three are one transaction.
    `add table ${TABLE_FAMILY} ${name}`,
    `delete table ${TABLE_FAMILY} ${name}`,
    `table ${TABLE_FAMILY} ${name} {`,
    `\tcomment "${HASH_PREFIX}${hash}"`,
    body,
    '}',
    '',
  ].join('\n');
  return { name, hash, file };
}

/**
 * While an exit node is selected, nothing leaves by another interface than the tunnel except the
 * WireGuard socket's own packets (marked), the engine's control and relay connections, the allowed
 * LAN, and link-local housekeeping (IPv6 neighbour discovery, DHCP). When the tunnel is down or gone,
 * traffic is refused at once instead of going out in the clear. The mangle chains carry the mark over
 * to the replies of the WireGuard socket (wg-quick does the same), for the reverse-path filter.
 */
function renderKillswitch(exit: ExitNodeConfig, q: string, b: Builder): void {
  const mark = `0x${WEFT_FWMARK.toString(16)}`;
  const direct = [...exit.bypass, ...exit.allowedLan];
  const lines = [`oifname "lo" accept`, `oifname ${q} accept`, `meta mark ${mark} accept`];
  for (const family of FAMILIES) {
    const spans = spansOf(direct, family);
    b.reserve(spans.length, 'state.exitNode');
    const set = b.set(
      `direct${family}`,
      ADDR_TYPE[family],
      spans.map((s) => formatAddrSpan(family, s)),
    );
    lines.push(`${IP[family]} daddr @${set} accept`);
  }
  lines.push(
    'ip6 daddr { fe80::/10, ff02::/16 } accept',
    'udp sport 68 udp dport 67 accept',
    'counter reject with icmpx type admin-prohibited',
  );
  b.chain('killswitch', 'type filter hook output priority filter; policy accept;', lines);
  b.chain('premangle', 'type filter hook prerouting priority mangle; policy accept;', [
    `meta l4proto udp ct mark ${mark} meta mark set ct mark`,
  ]);
  b.chain('postmangle', 'type filter hook postrouting priority mangle; policy accept;', [
    `meta l4proto udp meta mark ${mark} ct mark set meta mark`,
  ]);
}

/** Reads the hash back from `nft -t list table inet NAME`; null when the table carries none. */
export function parseTableHash(listing: string): string | null {
  const m = listing.match(new RegExp(`comment "${HASH_PREFIX}([0-9a-f]{32})"`));
  return m === null ? null : (m[1] as string);
}

/**
 * The filter as a chain of accept rules, two per filter rule and family: one for protocols with ports
 * (`daddr . proto . dport` in an interval set), one for those matched by address (`daddr . proto`).
 * Sets keep a big filter fast: each lookup is one set match, whatever the number of prefixes.
 */
function renderFilter(rules: readonly FilterRuleSpec[], b: Builder): string {
  const lines: string[] = [];
  rules.forEach((rule, i) => {
    const protos = [...new Set(rule.protos)];
    const portProtos = protos.filter((p) => PORT_PROTOS.has(p));
    for (const family of FAMILIES) {
      const src = spansOf(rule.src, family);
      if (src.length === 0) continue;
      const dst = rule.dst
        .map((d) => ({
          ...prefixSpan(d.prefix),
          ports: { first: BigInt(d.ports.first), last: BigInt(d.ports.last) },
        }))
        .filter((d) => d.family === family);
      const rects = dst.map((d) => ({ addr: d.span, ports: d.ports }));
      // Cutting overlapping rectangles can produce the square of their number: count first.
      const bound =
        src.length +
        portProtos.length * disjointRectsBound(rects) +
        (protos.length - portProtos.length) * dst.length;
      b.reserve(bound, `state.filter[${i}]`);
      const cut = portProtos.length > 0 ? disjointRects(rects) : [];
      const withPorts: string[] = [];
      const byAddress: string[] = [];
      for (const proto of protos) {
        if (PORT_PROTOS.has(proto)) {
          for (const r of cut)
            withPorts.push(`${formatAddrSpan(family, r.addr)} . ${proto} . ${formatPortSpan(r.ports)}`);
        } else {
          // ICMP ignores ports; any other protocol has none, so only an all-ports destination covers it.
          const spans = dst
            .filter((d) => ICMP_PROTOS.has(proto) || sameSpan(d.ports, ALL_PORTS))
            .map((d) => d.span);
          for (const s of mergeSpans(spans)) byAddress.push(`${formatAddrSpan(family, s)} . ${proto}`);
        }
      }
      if (withPorts.length === 0 && byAddress.length === 0) continue;
      const srcSet = b.set(
        `r${i}_src${family}`,
        ADDR_TYPE[family],
        src.map((s) => formatAddrSpan(family, s)),
      );
      const ip = IP[family];
      if (withPorts.length > 0) {
        const set = b.set(
          `r${i}_port${family}`,
          `${ADDR_TYPE[family]} . inet_proto . inet_service`,
          withPorts,
        );
        lines.push(`${ip} saddr @${srcSet} ${ip} daddr . meta l4proto . th dport @${set} accept`);
      }
      if (byAddress.length > 0) {
        const set = b.set(`r${i}_addr${family}`, `${ADDR_TYPE[family]} . inet_proto`, byAddress);
        lines.push(`${ip} saddr @${srcSet} ${ip} daddr . meta l4proto @${set} accept`);
      }
    }
  });
  return b.chain('filter', null, lines);
}

function selfGuard(state: DesiredState, q: string): string[] {
  const lines: string[] = [];
  for (const family of FAMILIES) {
    const own = state.interface.addresses
      .map((a) => parsePrefix(a) as Prefix)
      .filter((p) => p.addr.family === family)
      .map((p) => formatAddrSpan(family, { first: p.addr.value, last: p.addr.value }));
    if (own.length === 0) continue;
    const ip = IP[family];
    lines.push(
      `iifname != ${q} ${ip} daddr { ${[...new Set(own)].join(', ')} } fib saddr type != local counter drop`,
    );
  }
  return lines;
}

export function spansOf(prefixes: readonly string[], family: Family): Span[] {
  return mergeSpans(
    prefixes
      .map(prefixSpan)
      .filter((p) => p.family === family)
      .map((p) => p.span),
  );
}

function sameSpan(a: Span, b: Span): boolean {
  return a.first === b.first && a.last === b.last;
}

/** Collects sets and chains in the order they are declared. */
export class Builder {
  private readonly parts: string[] = [];
  private elements = 0;

  /** Counts set elements before they are built, and refuses a table that would exceed the limit. */
  reserve(count: number, what: string): void {
    this.elements += count;
    if (this.elements > MAX_TABLE_ELEMENTS) {
      throw new BackendError(
        'invalid-request',
        `${what} could take the nftables table to ${this.elements} set elements, over the limit of ` +
          `${MAX_TABLE_ELEMENTS}: use fewer overlapping prefixes with different ports`,
      );
    }
  }

  /** Declares an interval set; returns its name. */
  set(name: string, type: string, elements: readonly string[]): string {
    const lines = [`\tset ${name} {`, `\t\ttype ${type}`, '\t\tflags interval'];
    if (elements.length > 0)
      lines.push(`\t\telements = {\n${elements.map((e) => `\t\t\t${e},`).join('\n')}\n\t\t}`);
    lines.push('\t}');
    this.parts.push(lines.join('\n'));
    return name;
  }

  /** Declares a chain (a base chain when `hook` is given); returns its name. */
  chain(name: string, hook: string | null, rules: readonly string[]): string {
    const lines = [`\tchain ${name} {`];
    if (hook !== null) lines.push(`\t\t${hook}`);
    for (const r of rules) lines.push(`\t\t${r}`);
    lines.push('\t}');
    this.parts.push(lines.join('\n'));
    return name;
  }

  body(): string {
    return this.parts.join('\n');
  }
}
