import {
  type FilterRule,
  type FilterRuleSpec,
  formatPrefix,
  IP_PROTO,
  parseAddr,
  parseAddrRange,
  parsePrefix,
  rangeToPrefixes,
} from '@weft/protocol';

// The netmap's packet filter (Tailscale's FilterRule shape) normalised into the helper's strict form:
// `*` becomes 0.0.0.0/0 and ::/0, `a-b` ranges become the prefixes that cover them exactly, bare
// addresses become /32 and /128, and an absent or empty IPProto becomes TCP, UDP, ICMPv4 and ICMPv6.
// What cannot be read is left out, which only ever takes access away (the filter denies by default).

/** Tailscale's protocols when a rule names none. */
export const DEFAULT_PROTOS: readonly number[] = [IP_PROTO.tcp, IP_PROTO.udp, IP_PROTO.icmp, IP_PROTO.icmpv6];

export function normalizeFilter(rules: readonly FilterRule[], ignored: string[] = []): FilterRuleSpec[] {
  const out: FilterRuleSpec[] = [];
  rules.forEach((rule, i) => {
    // A rule with only CapGrant gives capabilities, not network access.
    if (rule.DstPorts === undefined || rule.DstPorts.length === 0) return;
    const src = new Set<string>();
    for (const text of rule.SrcIPs) {
      const prefixes = prefixesOf(text);
      if (prefixes === null) ignored.push(`rule ${i}: source ${JSON.stringify(text)}`);
      else for (const p of prefixes) src.add(p);
    }
    const dst = new Map<string, FilterRuleSpec['dst'][number]>();
    for (const d of rule.DstPorts) {
      const prefixes = prefixesOf(d.IP);
      if (prefixes === null || d.Ports.First > d.Ports.Last) {
        ignored.push(`rule ${i}: destination ${JSON.stringify(d.IP)} ${d.Ports.First}-${d.Ports.Last}`);
        continue;
      }
      for (const prefix of prefixes) {
        const ports = { first: d.Ports.First, last: d.Ports.Last };
        dst.set(`${prefix} ${ports.first}-${ports.last}`, { prefix, ports });
      }
    }
    if (src.size === 0 || dst.size === 0) return;
    const protos = rule.IPProto === undefined || rule.IPProto.length === 0 ? DEFAULT_PROTOS : rule.IPProto;
    out.push({
      src: [...src].sort(),
      dst: [...dst.keys()].sort().map((k) => dst.get(k) as FilterRuleSpec['dst'][number]),
      protos: [...new Set(protos)].sort((a, b) => a - b),
    });
  });
  return out;
}

/** `*`, an address, a CIDR (host bits clear) or an `a-b` range, as canonical prefixes; null if invalid. */
export function prefixesOf(text: string): string[] | null {
  if (text === '*') return ['0.0.0.0/0', '::/0'];
  if (text.includes('/')) {
    // A CIDR with host bits set is invalid in a filter.
    const p = parsePrefix(text, { strict: true });
    return p === null ? null : [formatPrefix(p)];
  }
  if (text.includes('-')) {
    const range = parseAddrRange(text);
    return range === null ? null : rangeToPrefixes(range).map(formatPrefix);
  }
  const addr = parseAddr(text);
  return addr === null ? null : [formatPrefix({ addr, bits: addr.family === 4 ? 32 : 128 })];
}
