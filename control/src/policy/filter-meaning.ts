import type { AddrRange, FilterRule } from '@weft/protocol';
import { IPSet, parseFilterIP } from './ipset.js';

// What a packet filter means, independent of how it is written: for every protocol, the
// function (destination address, port) → set of allowed sources; for capabilities, the
// function (capability, value, destination address) → set of sources. Each function is
// written canonically (maximal destination runs with identical behaviour, then maximal port
// runs), so two filters mean the same exactly when their canonical lines are equal. Used by
// the conformance tests, and by control to skip pushing a recompiled filter that means the same.

/** IPProto absent: TCP, UDP, ICMPv4, ICMPv6. */
const DEFAULT_PROTOS = [6, 17, 1, 58];

interface Atom {
  dst: IPSet;
  /** Inclusive port range, or [0, 0] for capabilities. */
  ports: readonly [number, number];
  src: IPSet;
}

function parseAll(texts: string[], what: string): IPSet {
  return IPSet.unionAll(
    texts.map((t) => {
      const set = parseFilterIP(t);
      if (set === null) throw new Error(`invalid ${what} "${t}"`);
      return set;
    }),
  );
}

/** Sorted elementary segments [first, last] between all boundaries of the given runs. */
function segments(runs: [bigint, bigint][]): [bigint, bigint][] {
  const cuts = [...new Set(runs.flatMap(([f, l]) => [f, l + 1n]))].sort((a, b) =>
    a < b ? -1 : a > b ? 1 : 0,
  );
  const out: [bigint, bigint][] = [];
  for (let i = 0; i + 1 < cuts.length; i++) out.push([cuts[i] as bigint, (cuts[i + 1] as bigint) - 1n]);
  return out;
}

/** Maximal runs of equal, non-empty values over adjacent segments. */
function runs(
  values: { seg: [bigint, bigint]; key: string }[],
): { first: bigint; last: bigint; key: string }[] {
  const out: { first: bigint; last: bigint; key: string }[] = [];
  for (const { seg, key } of values) {
    if (key === '') continue;
    const prev = out[out.length - 1];
    if (prev && prev.key === key && prev.last + 1n === seg[0]) prev.last = seg[1];
    else out.push({ first: seg[0], last: seg[1], key });
  }
  return out;
}

function portFunction(atoms: Atom[]): string {
  const segs = segments(atoms.map((a) => [BigInt(a.ports[0]), BigInt(a.ports[1])]));
  const values = segs.map((seg) => {
    const src = IPSet.unionAll(
      atoms.filter((a) => BigInt(a.ports[0]) <= seg[0] && seg[1] <= BigInt(a.ports[1])).map((a) => a.src),
    );
    return { seg, key: src.toStrings().join(',') };
  });
  return runs(values)
    .map((r) => `${r.first}-${r.last}:[${r.key}]`)
    .join(' ');
}

/** Canonical lines of one function over destination addresses. */
function canonicalLines(label: string, atoms: Atom[]): string[] {
  const lines: string[] = [];
  for (const family of [4, 6] as const) {
    const inFamily = (r: AddrRange) => r.family === family;
    const dstRuns = atoms.flatMap((a) =>
      a.dst
        .ranges()
        .filter(inFamily)
        .map((r) => [r.first, r.last] as [bigint, bigint]),
    );
    const values = segments(dstRuns).map((seg) => {
      const here = IPSet.fromRanges([{ family, first: seg[0], last: seg[1] }]);
      return { seg, key: portFunction(atoms.filter((a) => a.dst.intersect(here).equals(here))) };
    });
    for (const r of runs(values)) {
      const dst = IPSet.fromRanges([{ family, first: r.first, last: r.last }]).toStrings()[0];
      lines.push(`${label} dst=${dst} ${r.key}`);
    }
  }
  return lines;
}

function canonicalJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`;
  if (value !== null && typeof value === 'object') {
    const entries = Object.entries(value as Record<string, unknown>).sort(([a], [b]) =>
      a < b ? -1 : a > b ? 1 : 0,
    );
    return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonicalJson(v)}`).join(',')}}`;
  }
  return JSON.stringify(value);
}

/** The canonical description of a filter, one line per run of identical behaviour. */
export function filterMeaning(rules: FilterRule[]): string[] {
  const byLabel = new Map<string, Atom[]>();
  const add = (label: string, atom: Atom) => byLabel.set(label, [...(byLabel.get(label) ?? []), atom]);
  for (const rule of rules) {
    const src = parseAll(rule.SrcIPs, 'SrcIPs entry');
    if (src.isEmpty) continue;
    for (const dp of rule.DstPorts ?? []) {
      const dst = parseAll([dp.IP], 'DstPorts IP');
      for (const proto of rule.IPProto ?? DEFAULT_PROTOS) {
        add(`proto=${proto}`, { dst, ports: [dp.Ports.First, dp.Ports.Last], src });
      }
    }
    for (const grant of (rule.CapGrant ?? []) as { Dsts?: string[]; CapMap?: Record<string, unknown> }[]) {
      const dst = parseAll(grant.Dsts ?? [], 'CapGrant Dsts entry');
      for (const [cap, values] of Object.entries(grant.CapMap ?? {})) {
        for (const value of Array.isArray(values) ? values : [values]) {
          add(`cap=${cap} value=${canonicalJson(value)}`, { dst, ports: [0, 0], src });
        }
      }
    }
  }
  return [...byLabel.entries()].flatMap(([label, atoms]) => canonicalLines(label, atoms)).sort();
}

/** Lines only in `a` and lines only in `b`; both empty when the filters mean the same. */
export function compareFilters(a: FilterRule[], b: FilterRule[]): { onlyA: string[]; onlyB: string[] } {
  const ma = filterMeaning(a);
  const mb = filterMeaning(b);
  const sb = new Set(mb);
  const sa = new Set(ma);
  return { onlyA: ma.filter((l) => !sb.has(l)), onlyB: mb.filter((l) => !sa.has(l)) };
}
