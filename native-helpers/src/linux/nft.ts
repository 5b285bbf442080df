import { createHash } from 'node:crypto';
import {
  type DesiredState,
  type DnsConfig,
  type ExitNodeConfig,
  type Family,
  type FilterRuleSpec,
  IP_PROTO,
  mergeSpans,
  type Prefix,
  parsePrefix,
  type Span,
  TAILNET_DNS_IPV4,
  TAILNET_DNS_IPV6,
} from '@weft/protocol';
import { z } from 'zod';
import { BackendError } from '../backend.js';
import { WEFT_FWMARK } from './exit-routing.js';
import {
  disjointRects,
  disjointRectsBound,
  formatAddrSpan,
  formatPortSpan,
  prefixSpan,
  type Rect,
} from './intervals.js';

// The nftables ruleset of one WireGuard interface: one table, `inet weft-NAME`, holding everything the
// helper enforces for that interface. It is rendered as a whole from the desired state and replaced in
// one transaction (`add table` + `delete table` + the new table in one file), so there is never a
// moment with no rules or half the rules. A hash of what was rendered rides in the comment of an empty
// set, `hash`, so an unchanged state is recognised by listing that set alone, and nothing runs. Not in
// the table's comment: nft (1.0.6) fetches every element of every set of a table it lists, even in
// terse mode, and the flow sets hold up to 65,536 each (docs/performance.md).

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
/** The empty set whose comment carries the table's hash. */
export const HASH_SET = 'hash';

export function tableName(iface: string): string {
  return `weft-${iface}`;
}

export interface RenderedTable {
  name: string;
  /** Identifies the rendered content; kept in the comment of the set `HASH_SET`. */
  hash: string;
  /** The `nft -f` file: creates or replaces the table in one transaction. */
  file: string;
  /** The sets of this machine's UDP flows, which the packet path fills (`renderReplies`). */
  flowSets: readonly FlowSet[];
}

export interface FlowSet {
  name: string;
  family: Family;
}

/** The table the state asks for, or null when it asks for nothing the firewall has to do. */
/** What the host does apart from this state, which the table must allow for. */
export interface HostFacts {
  /** IP forwarding is on (containers, VMs, another VPN): it may forward into the tunnel. */
  forwards: boolean;
}

export function renderTable(
  state: DesiredState,
  host: HostFacts = { forwards: false },
): RenderedTable | null {
  const { filter, router, exitNode, dns } = state;
  if (filter === undefined && router === undefined && exitNode === undefined && dns === undefined)
    return null;
  const iface = state.interface.name;
  const b = new Builder();
  const q = JSON.stringify(iface);

  // Inbound, in one base chain (each base chain is one more pass for every packet the host receives),
  // which asks for the interface's name once: what came from the tunnel goes on to a chain of its own
  // (nothing to the resolver's port, then replies to this machine's own traffic, then what the filter
  // accepts; the rest drops); anything else meets at most the guard of the tunnel addresses. Every
  // packet of the host passes here, WireGuard's own UDP too, so what it meets is kept this short.
  //
  // No connection tracking: once any rule of a namespace uses `ct` or NAT, the kernel tracks every
  // packet of it, WireGuard's UDP underneath included, which cost more than the rest of the table
  // (docs/performance.md). Replies are told apart statelessly instead, as Tailscale's filter does.
  const filterChain = filter === undefined ? null : renderFilter(filter, b);
  const fromTunnel = dns === undefined ? [] : dnsGuard(dns);
  const toTunnel: string[] = [];
  if (filterChain !== null) {
    const replies = renderReplies(b);
    fromTunnel.push(...replies.inbound, `jump ${filterChain}`, 'counter drop');
    toTunnel.push(...replies.outbound);
  }
  if (fromTunnel.length > 0) {
    b.chain(
      'input',
      'type filter hook input priority filter; policy accept;',
      // The tunnel addresses are reached only through the tunnel: otherwise a host on the LAN could send
      // to them directly and skip the filter (wg-quick guards the same way).
      [
        `iifname ${q} jump ${b.chain('tunnel_in', null, fromTunnel)}`,
        // With a filter, tunnel_in ends in a verdict: nothing from the tunnel comes back to the guard.
        ...(filterChain === null ? [] : selfGuard(state)),
      ],
    );
  }
  // This machine's own packets: the resolver's redirect first (it ends in a verdict), then what leaves
  // by the tunnel notes its UDP flow, so the replies get in.
  const outbound = dns === undefined ? [] : renderDnsRedirect(dns, b);
  if (toTunnel.length > 0) outbound.push(`oifname ${q} jump ${b.chain('tunnel_out', null, toTunnel)}`);
  if (outbound.length > 0) {
    // `route`, so a rewritten packet is routed again (to lo); `raw`, before connection tracking, where
    // a host's own firewall runs it, so `notrack` keeps the rewritten DNS packets out of it.
    const type = dns === undefined ? 'filter' : 'route';
    b.chain('output', `type ${type} hook output priority raw; policy accept;`, outbound);
  }
  // Forwarded from the tunnel: only to the routes this node serves as a router, and only what the filter
  // allows there. A router keeps connection tracking here: its LAN's replies to a peer come back
  // through this chain, and masquerade needs the tracking anyway; routers are not the common case,
  // and they pay it for forwarded traffic only as much as any NAT gateway does.
  if (router !== undefined) {
    const lines = ['ct state established,related accept'];
    for (const family of FAMILIES) {
      const routes = spansOf(router.routes, family);
      if (routes.length === 0) continue;
      b.reserve(routes.length, 'state.router.routes');
      const set = b.set(
        `route${family}`,
        ADDR_TYPE[family],
        routes.map((s) => formatAddrSpan(family, s)),
      );
      const verdict = filterChain === null ? 'accept' : `jump ${filterChain}`;
      lines.push(`${IP[family]} daddr @${set} ${verdict}`);
    }
    lines.push('counter drop');
    b.chain('forward', 'type filter hook forward priority filter; policy accept;', [
      `iifname ${q} jump ${b.chain('tunnel_fwd', null, lines)}`,
    ]);
  } else if (filterChain !== null) {
    // Not a router: from the tunnel, only the replies to what this host forwards into it (Docker and
    // friends turn forwarding on, and their containers reach peers through the host). Those need
    // connection tracking, so only a host that forwards has the rule, and pays for it; such a host
    // mostly tracks already, for its own NAT.
    const lines = [...(host.forwards ? ['ct state established,related accept'] : []), 'counter drop'];
    b.chain('forward', 'type filter hook forward priority filter; policy accept;', [
      `iifname ${q} jump ${b.chain('tunnel_fwd', null, lines)}`,
    ]);
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
    // The smallest type; no rule looks it up.
    `\tset ${HASH_SET} {\n\t\ttype inet_proto\n\t\tcomment "${HASH_PREFIX}${hash}"\n\t}`,
    body,
    '}',
    '',
  ].join('\n');
  return { name, hash, file, flowSets: b.flowSets };
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

/**
 * Replies to this machine's own traffic, told apart without connection tracking (as Tailscale's
 * filter does): TCP that is not a bare SYN (no connection opens without an accepted SYN), UDP from
 * an address and port this machine sent to by the tunnel, to the address and port it sent from
 * (noted in a set as it leaves), and ICMP replies and errors (fragmentation needed among them). A
 * peer still opens nothing the filter does not allow: no bare SYN, no new UDP flow, no echo request.
 *
 * A flow is kept 2 minutes after its last outgoing packet. The sets hold at most 65,536 flows each;
 * when one is full, a new flow's packets still leave but its replies are dropped (unless the filter
 * allows them) until older flows expire: it fails closed.
 */
function renderReplies(b: Builder): { inbound: string[]; outbound: string[] } {
  const inbound = [
    // IPv6 is reassembled after this hook (IPv4 before it), and without connection tracking nothing
    // reassembles it earlier: a fragment after the first has no ports to match. The first, with the
    // headers, is filtered, and without it the rest never make a packet (as Tailscale's filter does).
    'frag frag-off != 0 accept',
    'tcp flags & (syn | ack) != syn accept',
  ];
  const outbound: string[] = [];
  for (const family of FAMILIES) {
    const set = b.flowSet(`udp${family}`, family);
    const ip = IP[family];
    // Both ends, the local address too: a flow from the tunnel address opens nothing to another
    // address of this machine that a peer reaches through the tunnel.
    inbound.push(`${ip} saddr . udp sport . ${ip} daddr . udp dport @${set} accept`);
    outbound.push(`meta l4proto udp update @${set} { ${ip} daddr . udp dport . ${ip} saddr . udp sport }`);
  }
  inbound.push(
    'icmp type { echo-reply, destination-unreachable, time-exceeded, parameter-problem } accept',
    'icmpv6 type { echo-reply, destination-unreachable, packet-too-big, time-exceeded, parameter-problem } accept',
  );
  return { inbound, outbound };
}

/**
 * This machine's queries to 100.100.100.100:53 (and the IPv6 twin) go to the engine's resolver, which
 * listens unprivileged on a high port of the tunnel address. Without NAT (which would turn on
 * connection tracking for every packet): the query's addresses and port are rewritten in place, from
 * the tunnel address to the resolver's address and port with the source becoming 100.100.100.100, and
 * the answer, going back to 100.100.100.100, the same way round; so both sides see the addresses they
 * expect, the resolver's direct address still answers as itself, and no state is kept. A query from
 * another source address would lose that address: it is dropped rather than sent into the tunnel.
 * The input chain guards the resolver's port (`dnsGuard`).
 */
function renderDnsRedirect(dns: DnsConfig, b: Builder): string[] {
  const { ipv4, ipv6, port } = dns.resolver;
  const lines: string[] = [];
  const twins = [
    { family: 4 as const, twin: TAILNET_DNS_IPV4, resolver: ipv4 },
    ...(ipv6 === undefined ? [] : [{ family: 6 as const, twin: TAILNET_DNS_IPV6, resolver: ipv6 }]),
  ];
  for (const { family, twin, resolver } of twins) {
    const ip = IP[family];
    const swap = `notrack ${ip} saddr set ${twin} ${ip} daddr set ${resolver}`;
    const chain = b.chain(`dns${family}`, null, [
      ...['udp', 'tcp'].flatMap((proto) => [
        `${ip} saddr ${resolver} ${proto} dport 53 ${swap} ${proto} dport set ${port} accept`,
        `${ip} saddr ${resolver} ${proto} sport ${port} ${swap} ${proto} sport set 53 accept`,
      ]),
      // Nothing else this machine sends to the twin leaves by the tunnel: not a query from another
      // address, nor the ICMP error a closed port or a late answer makes, which quotes the query.
      'counter drop',
    ]);
    lines.push(`${ip} daddr ${twin} jump ${chain}`);
  }
  return lines;
}

/**
 * The resolver serves this machine alone: whatever the policy opens, nothing from the tunnel reaches
 * its port (a peer would otherwise learn the names this node may see, and forward through it). First
 * of what comes from the tunnel, so not even a reply gets there. Nor does anything from the tunnel
 * pass for the resolver's address (a peer routing it, an exit node, could otherwise slip a segment
 * into a TCP query, whose non-SYN packets pass as replies).
 */
function dnsGuard(dns: DnsConfig): string[] {
  return [
    // The port first: one compare fails for every other packet, before the protocol's set lookup.
    `th dport ${dns.resolver.port} meta l4proto { tcp, udp } counter drop`,
    `ip saddr ${TAILNET_DNS_IPV4} counter drop`,
    ...(dns.resolver.ipv6 === undefined ? [] : [`ip6 saddr ${TAILNET_DNS_IPV6} counter drop`]),
  ];
}

const hashListing = z.object({
  // Other entries (the metainfo) have no `set`.
  nftables: z.array(
    z.object({
      set: z
        .object({ family: z.string(), table: z.string(), name: z.string(), comment: z.string().optional() })
        .optional(),
    }),
  ),
});

const HASH_COMMENT = new RegExp(`^${HASH_PREFIX}([0-9a-f]{32})$`);

/**
 * Reads the hash back from `nft -j list set inet TABLE hash`: the comment of that table's set of
 * that name, and of no other. Null when it carries none (another helper's, or edited by hand);
 * throws on a listing of another shape.
 */
export function parseTableHash(json: string, table: string): string | null {
  const sets = hashListing
    .parse(JSON.parse(json))
    .nftables.flatMap((item) => (item.set === undefined ? [] : [item.set]))
    .filter((s) => s.family === TABLE_FAMILY && s.table === table && s.name === HASH_SET);
  if (sets.length !== 1) return null;
  const m = sets[0]?.comment?.match(HASH_COMMENT);
  return m == null ? null : (m[1] as string);
}

/**
 * The filter as lookups, not a walk: the source address picks, in one verdict map per family, the
 * group of rules whose sources cover it, and that group's chain asks two sets whether the
 * destination (with protocol and port) is allowed. A new connection costs two lookups whatever the
 * number of rules; established traffic is accepted before it gets here.
 *
 * Sources are cut into disjoint pieces (a map's intervals may not overlap); pieces covered by the
 * same rules share one group, so rules over the same sources ("*", a group of people) render once.
 */
function renderFilter(rules: readonly FilterRuleSpec[], b: Builder): string {
  const lines: string[] = [];
  for (const family of FAMILIES) {
    const familyRules = rules.flatMap((rule, index) => {
      const src = spansOf(rule.src, family);
      const dst = rule.dst
        .map((d) => ({
          ...prefixSpan(d.prefix),
          ports: { first: BigInt(d.ports.first), last: BigInt(d.ports.last) },
        }))
        .filter((d) => d.family === family)
        .map((d) => ({ addr: d.span, ports: d.ports }));
      const protos = [...new Set(rule.protos)].sort((x, y) => x - y);
      const reaches = protos.some((p) => PORT_PROTOS.has(p) || addressRects(p, dst).length > 0);
      return src.length > 0 && dst.length > 0 && reaches ? [{ index, src, dst, protos }] : [];
    });
    const pieces = sourcePieces(familyRules);
    if (pieces.length === 0) continue;
    b.reserve(pieces.length, 'state.filter');
    const groups = new Map<string, string>();
    const verdicts: string[] = [];
    for (const piece of pieces) {
      const key = piece.members.join(',');
      let chain = groups.get(key);
      if (chain === undefined) {
        chain = renderGroup(
          `g${family}_${groups.size}`,
          family,
          piece.members.map((m) => familyRules[m] as FamilyRule),
          b,
        );
        groups.set(key, chain);
      }
      verdicts.push(`${formatAddrSpan(family, piece.span)} : jump ${chain}`);
    }
    const map = b.map(`src${family}`, ADDR_TYPE[family], verdicts);
    lines.push(`${IP[family]} saddr vmap @${map}`);
  }
  return b.chain('filter', null, lines);
}

interface FamilyRule {
  /** Position in state.filter, for errors. */
  index: number;
  src: Span[];
  dst: Rect[];
  protos: number[];
}

/** The most rule-in-piece pairs the source cut may visit: overlapping sources cost their product. */
const MAX_SOURCE_WORK = 16 * MAX_TABLE_ELEMENTS;

/** The rules' sources cut into disjoint spans, each with the rules (by position) covering it. */
function sourcePieces(rules: readonly FamilyRule[]): { span: Span; members: number[] }[] {
  const edges = new Map<bigint, { add: number[]; remove: number[] }>();
  const edge = (at: bigint) => {
    let e = edges.get(at);
    if (e === undefined) {
      e = { add: [], remove: [] };
      edges.set(at, e);
    }
    return e;
  };
  rules.forEach((r, k) => {
    for (const s of r.src) {
      edge(s.first).add.push(k);
      edge(s.last + 1n).remove.push(k);
    }
  });
  const points = [...edges.keys()].sort((x, y) => (x < y ? -1 : x > y ? 1 : 0));
  const active = new Set<number>();
  const pieces: { span: Span; members: number[] }[] = [];
  let work = 0;
  for (const [j, at] of points.entries()) {
    const e = edges.get(at) as { add: number[]; remove: number[] };
    for (const k of e.remove) active.delete(k);
    for (const k of e.add) active.add(k);
    const next = points[j + 1];
    if (active.size === 0 || next === undefined) continue;
    work += active.size;
    if (work > MAX_SOURCE_WORK) {
      throw new BackendError(
        'invalid-request',
        `state.filter: its rules' sources overlap in more than ${MAX_SOURCE_WORK} ways: use fewer overlapping source prefixes`,
      );
    }
    const members = [...active].sort((x, y) => x - y);
    const span = { first: at, last: next - 1n };
    const prev = pieces.at(-1);
    if (prev !== undefined && prev.span.last + 1n === at && prev.members.join(',') === members.join(','))
      prev.span.last = span.last;
    else pieces.push({ span, members });
  }
  return pieces;
}

/** Destinations a protocol without ports reaches: ICMP ignores ports, others need all of them. */
function addressRects(proto: number, dst: readonly Rect[]): Rect[] {
  return ICMP_PROTOS.has(proto) ? [...dst] : dst.filter((d) => sameSpan(d.ports, ALL_PORTS));
}

/** One group's chain: what its rules allow, as `daddr . proto . dport` and `daddr . proto` sets. */
function renderGroup(name: string, family: Family, rules: readonly FamilyRule[], b: Builder): string {
  // Per protocol, the rules allowing it; protocols allowed by the same rules share one cut.
  const byProto = new Map<number, FamilyRule[]>();
  for (const r of rules) {
    for (const proto of r.protos) {
      const list = byProto.get(proto);
      if (list === undefined) byProto.set(proto, [r]);
      else list.push(r);
    }
  }
  const protos = [...byProto.keys()].sort((x, y) => x - y);
  const ruleSet = (proto: number) => (byProto.get(proto) as FamilyRule[]).map((r) => r.index).join(',');
  const portRects = new Map<string, Rect[]>();
  const addrSpans = new Map<number, Span[]>();
  for (const proto of protos) {
    const members = byProto.get(proto) as FamilyRule[];
    if (PORT_PROTOS.has(proto))
      portRects.set(
        ruleSet(proto),
        members.flatMap((r) => r.dst),
      );
    else
      addrSpans.set(
        proto,
        members.flatMap((r) => addressRects(proto, r.dst).map((d) => d.addr)),
      );
  }
  // Cutting overlapping rectangles can produce the square of their number: count first.
  const what =
    rules.length === 1
      ? `state.filter[${rules[0]?.index}]`
      : `state.filter[${rules[0]?.index}] with ${rules.length - 1} more rules over the same sources`;
  let bound = 0;
  for (const proto of protos) {
    if (PORT_PROTOS.has(proto)) bound += disjointRectsBound(portRects.get(ruleSet(proto)) as Rect[]);
    else bound += (addrSpans.get(proto) as Span[]).length;
  }
  b.reserve(bound, what);
  const withPorts: string[] = [];
  const byAddress: string[] = [];
  const cuts = new Map<string, Rect[]>();
  for (const proto of protos) {
    if (PORT_PROTOS.has(proto)) {
      const key = ruleSet(proto);
      const cut = cuts.get(key) ?? disjointRects(portRects.get(key) as Rect[]);
      cuts.set(key, cut);
      for (const r of cut)
        withPorts.push(`${formatAddrSpan(family, r.addr)} . ${proto} . ${formatPortSpan(r.ports)}`);
    } else {
      for (const s of mergeSpans(addrSpans.get(proto) as Span[]))
        byAddress.push(`${formatAddrSpan(family, s)} . ${proto}`);
    }
  }
  const ip = IP[family];
  const lines: string[] = [];
  if (withPorts.length > 0) {
    const set = b.set(`${name}_port`, `${ADDR_TYPE[family]} . inet_proto . inet_service`, withPorts);
    lines.push(`${ip} daddr . meta l4proto . th dport @${set} accept`);
  }
  if (byAddress.length > 0) {
    const set = b.set(`${name}_addr`, `${ADDR_TYPE[family]} . inet_proto`, byAddress);
    lines.push(`${ip} daddr . meta l4proto @${set} accept`);
  }
  return b.chain(name, null, lines);
}

function selfGuard(state: DesiredState): string[] {
  const lines: string[] = [];
  for (const family of FAMILIES) {
    const own = state.interface.addresses
      .map((a) => parsePrefix(a) as Prefix)
      .filter((p) => p.addr.family === family)
      .map((p) => formatAddrSpan(family, { first: p.addr.value, last: p.addr.value }));
    if (own.length === 0) continue;
    const ip = IP[family];
    lines.push(
      // The address first, which other packets fail at once. Not from lo: this machine's own packets,
      // such as the resolver's answers to 100.100.100.100 queries, whose source is 100.100.100.100
      // again once the redirect is undone.
      `${ip} daddr { ${[...new Set(own)].join(', ')} } iifname != "lo" fib saddr type != local counter drop`,
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
  readonly flowSets: FlowSet[] = [];
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

  /**
   * Declares a set of flows (peer address . port . local address . port) the packet path fills
   * (`update @NAME`), bounded in size, each element expiring.
   */
  flowSet(name: string, family: Family): string {
    this.flowSets.push({ name, family });
    const end = `${ADDR_TYPE[family]} . inet_service`;
    this.parts.push(
      [
        `\tset ${name} {`,
        `\t\ttype ${end} . ${end}`,
        '\t\tsize 65536',
        '\t\tflags dynamic,timeout',
        '\t\ttimeout 2m',
        '\t}',
      ].join('\n'),
    );
    return name;
  }

  /** Declares an interval verdict map (`KEY : jump CHAIN` elements); returns its name. */
  map(name: string, type: string, elements: readonly string[]): string {
    const lines = [`\tmap ${name} {`, `\t\ttype ${type} : verdict`, '\t\tflags interval'];
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
