import {
  type Family,
  formatAddr,
  formatPrefix,
  mergeSpans,
  type Prefix,
  parsePrefix,
  prefixRange,
  type Span,
} from '@weft/protocol';

// Interval arithmetic for nftables interval sets. The kernel refuses overlapping elements in an
// interval set ("conflicting intervals", or "File exists" for concatenations), and filters overlap all
// the time (a /10 and a /32 inside it), so every set is first turned into disjoint elements.

/** An address span and a port span: one element of an `addr . proto . port` set, per protocol. */
export interface Rect {
  addr: Span;
  ports: Span;
}

export function prefixSpan(text: string): { family: Family; span: Span } {
  const r = prefixRange(parsePrefix(text) as Prefix);
  return { family: r.family, span: { first: r.first, last: r.last } };
}

/**
 * The union of rectangles as disjoint rectangles: the address axis is cut at every rectangle's edge;
 * each piece gets the union of the port spans over it, and neighbouring pieces with the same ports
 * are joined again.
 */
export function disjointRects(rects: readonly Rect[]): Rect[] {
  const cuts = new Set<bigint>();
  for (const r of rects) {
    cuts.add(r.addr.first);
    cuts.add(r.addr.last + 1n);
  }
  const points = [...cuts].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  const byStart = [...rects].sort((a, b) => (a.addr.first < b.addr.first ? -1 : 1));
  const out: Rect[] = [];
  let active: Rect[] = [];
  let next = 0;
  let previous: { end: bigint; ports: Span[]; from: number } | null = null;
  for (let i = 0; i + 1 < points.length; i++) {
    const first = points[i] as bigint;
    const last = (points[i + 1] as bigint) - 1n;
    while (next < byStart.length && (byStart[next] as Rect).addr.first <= first)
      active.push(byStart[next++] as Rect);
    active = active.filter((r) => r.addr.last >= first);
    const ports = mergeSpans(active.map((r) => r.ports));
    if (ports.length === 0) {
      previous = null;
      continue;
    }
    if (previous !== null && previous.end + 1n === first && sameSpans(previous.ports, ports)) {
      for (let k = previous.from; k < out.length; k++) (out[k] as Rect).addr.last = last;
      previous.end = last;
      continue;
    }
    previous = { end: last, ports, from: out.length };
    for (const p of ports) out.push({ addr: { first, last }, ports: p });
  }
  return out;
}

/**
 * An upper bound on `disjointRects(rects).length`, found without building any rectangle: each piece of
 * the cut address axis yields at most one element per rectangle over it, and at most one per distinct
 * port span. Work and memory grow with the input, not with the output (which can grow as its square).
 */
export function disjointRectsBound(rects: readonly Rect[]): number {
  const points = [...new Set(rects.flatMap((r) => [r.addr.first, r.addr.last + 1n]))].sort((a, b) =>
    a < b ? -1 : a > b ? 1 : 0,
  );
  const index = new Map(points.map((p, i) => [p, i]));
  // How many rectangles start (+1) and end (-1) at each cut.
  const delta = new Int32Array(points.length);
  const add = (point: bigint, n: number): void => {
    const i = index.get(point) as number;
    delta[i] = (delta[i] as number) + n;
  };
  for (const r of rects) {
    add(r.addr.first, 1);
    add(r.addr.last + 1n, -1);
  }
  const portSpans = new Set(rects.map((r) => `${r.ports.first}-${r.ports.last}`)).size;
  let active = 0;
  let bound = 0;
  for (let i = 0; i + 1 < points.length; i++) {
    active += delta[i] as number;
    bound += Math.min(active, portSpans);
  }
  return bound;
}

function sameSpans(a: readonly Span[], b: readonly Span[]): boolean {
  return a.length === b.length && a.every((s, i) => s.first === b[i]?.first && s.last === b[i]?.last);
}

/** An address span as nft writes it: one address, a prefix when it is one, else `a-b`. */
export function formatAddrSpan(family: Family, s: Span): string {
  const bitsTotal = family === 4 ? 32 : 128;
  if (s.first === s.last) return formatAddr({ family, value: s.first });
  const size = s.last - s.first + 1n;
  // A power of two, aligned on its size: a prefix.
  if ((size & (size - 1n)) === 0n && s.first % size === 0n) {
    const bits = bitsTotal - (size.toString(2).length - 1);
    return formatPrefix({ addr: { family, value: s.first }, bits });
  }
  return `${formatAddr({ family, value: s.first })}-${formatAddr({ family, value: s.last })}`;
}

export function formatPortSpan(s: Span): string {
  return s.first === s.last ? String(s.first) : `${s.first}-${s.last}`;
}
