import {
  type Addr,
  type AddrRange,
  type Family,
  familyBits,
  formatAddr,
  formatPrefix,
  type Prefix,
  parseAddr,
  parseAddrRange,
  parsePrefix,
  prefixRange,
  rangeToPrefixes,
} from '@weft/protocol';

// A set of addresses of both families as sorted, disjoint, non-adjacent inclusive ranges.
// Policy resolution, filter reduction and the meaning comparison all reduce to this arithmetic.

type Span = readonly [bigint, bigint];

function normalize(spans: Span[]): Span[] {
  const sorted = [...spans].sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
  const out: [bigint, bigint][] = [];
  for (const [first, last] of sorted) {
    const prev = out[out.length - 1];
    if (prev && first <= prev[1] + 1n) {
      if (last > prev[1]) prev[1] = last;
    } else {
      out.push([first, last]);
    }
  }
  return out;
}

function intersectSpans(a: readonly Span[], b: readonly Span[]): Span[] {
  const out: Span[] = [];
  let i = 0;
  let j = 0;
  while (i < a.length && j < b.length) {
    const x = a[i] as Span;
    const y = b[j] as Span;
    // biome-ignore lint/complexity/useMathMinMax: Math.max and Math.min do not take bigint.
    const first = x[0] > y[0] ? x[0] : y[0];
    // biome-ignore lint/complexity/useMathMinMax: as above.
    const last = x[1] < y[1] ? x[1] : y[1];
    if (first <= last) out.push([first, last]);
    if (x[1] < y[1]) i++;
    else j++;
  }
  return out;
}

function subtractSpans(a: readonly Span[], b: readonly Span[]): Span[] {
  const out: Span[] = [];
  for (const [first, last] of a) {
    let start = first;
    for (const [bf, bl] of b) {
      if (bl < start || bf > last) continue;
      if (bf > start) out.push([start, bf - 1n]);
      start = bl + 1n;
      if (start > last) break;
    }
    if (start <= last) out.push([start, last]);
  }
  return out;
}

export class IPSet {
  static readonly EMPTY = new IPSet([], []);
  static readonly ALL = new IPSet([[0n, (1n << 32n) - 1n]], [[0n, (1n << 128n) - 1n]]);

  private constructor(
    readonly v4: readonly Span[],
    readonly v6: readonly Span[],
  ) {}

  static fromRanges(ranges: Iterable<AddrRange>): IPSet {
    const v4: Span[] = [];
    const v6: Span[] = [];
    for (const r of ranges) (r.family === 4 ? v4 : v6).push([r.first, r.last]);
    return new IPSet(normalize(v4), normalize(v6));
  }

  static fromPrefixes(prefixes: Iterable<Prefix>): IPSet {
    return IPSet.fromRanges([...prefixes].map(prefixRange));
  }

  static fromAddrs(addrs: Iterable<Addr>): IPSet {
    return IPSet.fromRanges([...addrs].map((a) => ({ family: a.family, first: a.value, last: a.value })));
  }

  static unionAll(sets: Iterable<IPSet>): IPSet {
    const v4: Span[] = [];
    const v6: Span[] = [];
    for (const s of sets) {
      v4.push(...s.v4);
      v6.push(...s.v6);
    }
    return new IPSet(normalize(v4), normalize(v6));
  }

  get isEmpty(): boolean {
    return this.v4.length === 0 && this.v6.length === 0;
  }

  union(other: IPSet): IPSet {
    return IPSet.unionAll([this, other]);
  }

  intersect(other: IPSet): IPSet {
    return new IPSet(intersectSpans(this.v4, other.v4), intersectSpans(this.v6, other.v6));
  }

  subtract(other: IPSet): IPSet {
    return new IPSet(subtractSpans(this.v4, other.v4), subtractSpans(this.v6, other.v6));
  }

  overlaps(other: IPSet): boolean {
    return !this.intersect(other).isEmpty;
  }

  containsAddr(a: Addr): boolean {
    return (a.family === 4 ? this.v4 : this.v6).some(([f, l]) => f <= a.value && a.value <= l);
  }

  equals(other: IPSet): boolean {
    const same = (x: readonly Span[], y: readonly Span[]) =>
      x.length === y.length && x.every((s, i) => s[0] === y[i]?.[0] && s[1] === y[i]?.[1]);
    return same(this.v4, other.v4) && same(this.v6, other.v6);
  }

  ranges(): AddrRange[] {
    const of = (family: Family, spans: readonly Span[]) =>
      spans.map(([first, last]) => ({ family, first, last }));
    return [...of(4, this.v4), ...of(6, this.v6)];
  }

  prefixes(): Prefix[] {
    return this.ranges().flatMap(rangeToPrefixes);
  }

  /** Tailscale's text forms: a bare address, a CIDR, or `first-last` when no single prefix fits. */
  toStrings(): string[] {
    return this.ranges().map((r) => {
      const prefixes = rangeToPrefixes(r);
      const only = prefixes[0];
      if (prefixes.length === 1 && only) {
        return only.bits === familyBits(r.family) ? formatAddr(only.addr) : formatPrefix(only);
      }
      return `${formatAddr({ family: r.family, value: r.first })}-${formatAddr({ family: r.family, value: r.last })}`;
    });
  }
}

/** Parses one address entry as filters write them: `*`, an address, a CIDR or an `a-b` range. */
export function parseFilterIP(text: string): IPSet | null {
  if (text === '*') return IPSet.ALL;
  if (text.includes('/')) {
    const p = parsePrefix(text, { strict: true });
    return p === null ? null : IPSet.fromPrefixes([p]);
  }
  const range = parseAddrRange(text);
  if (range !== null) return IPSet.fromRanges([range]);
  const addr = parseAddr(text);
  return addr === null ? null : IPSet.fromAddrs([addr]);
}
