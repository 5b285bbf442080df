import {
  type Addr,
  type DnsSettings,
  formatAddr,
  type NetMap,
  type NodeView,
  parseAddr,
  parsePrefix,
  prefixContains,
} from '@weft/protocol';

// The names this node answers itself, built from its netmap: every node it may see (itself and the
// peers control sent, never others) as NAME.BASE-DOMAIN, the tailnet's extra records, and the reverse
// (PTR) names of their addresses. Pure: rebuilt whenever the netmap changes.

export interface NameRecord {
  /** The canonical name, lower case, without the trailing dot. */
  fqdn: string;
  v4: string[];
  v6: string[];
}

export type Lookup =
  /** A name this node owns: answer with these addresses (none of the asked type: an empty answer). */
  | { kind: 'name'; record: NameRecord }
  /** A reverse name of a tailnet address. */
  | { kind: 'ptr'; fqdn: string }
  /** Inside the tailnet's own names but not known to this node: NXDOMAIN. */
  | { kind: 'nxdomain' }
  /** Someone else's name: forward it. */
  | { kind: 'forward' };

/** `name` lower-cased without a trailing dot (DNS names are case-insensitive). */
export function canonicalName(name: string): string {
  return name.toLowerCase().replace(/\.$/, '');
}

/** The reverse-lookup name of an address (in-addr.arpa / ip6.arpa), without the trailing dot. */
export function reverseName(addr: Addr): string {
  if (addr.family === 4) {
    return `${formatAddr(addr).split('.').reverse().join('.')}.in-addr.arpa`;
  }
  const hex = addr.value.toString(16).padStart(32, '0');
  return `${[...hex].reverse().join('.')}.ip6.arpa`;
}

/** The address a reverse name stands for, or null when it is not a whole one. */
export function addrOfReverseName(name: string): Addr | null {
  if (name.endsWith('.in-addr.arpa')) {
    const parts = name.slice(0, -'.in-addr.arpa'.length).split('.');
    return parts.length === 4 ? parseAddr(parts.reverse().join('.')) : null;
  }
  if (name.endsWith('.ip6.arpa')) {
    const nibbles = name.slice(0, -'.ip6.arpa'.length).split('.');
    if (nibbles.length !== 32 || !nibbles.every((n) => /^[0-9a-f]$/.test(n))) return null;
    return { family: 6, value: BigInt(`0x${nibbles.reverse().join('')}`) };
  }
  return null;
}

export class TailnetNames {
  private readonly byName = new Map<string, NameRecord>();
  private readonly byAddr = new Map<string, string>();
  private readonly ranges;

  constructor(
    readonly settings: DnsSettings,
    nodes: readonly NodeView[],
    tailnetRanges: readonly string[],
  ) {
    this.ranges = tailnetRanges.flatMap((r) => parsePrefix(r) ?? []);
    if (settings.magicDns) {
      for (const node of nodes) {
        const record: NameRecord = { fqdn: `${node.name}.${settings.baseDomain}`, v4: [], v6: [] };
        for (const a of node.addresses) {
          const addr = parseAddr(a.split('/')[0] as string);
          if (addr === null) continue;
          (addr.family === 4 ? record.v4 : record.v6).push(formatAddr(addr));
          this.byAddr.set(reverseName(addr), record.fqdn);
        }
        this.byName.set(record.fqdn, record);
      }
    }
    for (const extra of settings.extraRecords) {
      const fqdn = canonicalName(extra.name);
      const record = this.byName.get(fqdn) ?? { fqdn, v4: [], v6: [] };
      (extra.type === 'A' ? record.v4 : record.v6).push(extra.value);
      this.byName.set(fqdn, record);
    }
  }

  /** The names of a netmap: itself and its peers, under its DNS settings (none without them). */
  static of(netmap: NetMap): TailnetNames | null {
    if (!netmap.dns) return null;
    return new TailnetNames(netmap.dns, [netmap.self, ...netmap.peers], netmap.tailnetRanges);
  }

  /** What to do with a question for `name` (already canonical). */
  lookup(name: string): Lookup {
    const record = this.byName.get(name);
    if (record) return { kind: 'name', record };
    // A short name: the base domain is the first search domain.
    if (this.settings.magicDns && !name.includes('.')) {
      const short = this.byName.get(`${name}.${this.settings.baseDomain}`);
      if (short) return { kind: 'name', record: short };
    }
    const ptr = this.byAddr.get(name);
    if (ptr) return { kind: 'ptr', fqdn: ptr };
    if (
      this.settings.magicDns &&
      (name === this.settings.baseDomain || name.endsWith(`.${this.settings.baseDomain}`))
    ) {
      return { kind: 'nxdomain' };
    }
    // A tailnet address nobody this node may see holds: it is not the internet's to answer.
    const addr = addrOfReverseName(name);
    if (addr !== null && this.ranges.some((r) => prefixContains(r, addr))) return { kind: 'nxdomain' };
    return { kind: 'forward' };
  }

  /** Every name this node answers, for `weft dns status`. */
  records(): NameRecord[] {
    return [...this.byName.values()];
  }
}
