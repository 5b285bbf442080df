import { canonicalPrefix, type DesiredState, type Family, parsePrefix } from '@weft/protocol';
import type { Command } from './plan.js';

// Policy routing for a client that sends its default traffic through an exit node, as wg-quick does
// for a peer with 0.0.0.0/0: the WireGuard socket marks its packets with WEFT_FWMARK, and
//
//   5310: to <control, relay, allowed LAN> lookup main     (the engine's own connections, the LAN)
//   5320: lookup main suppress_prefixlength 0              (every main route but the default)
//   5330: not fwmark WEFT_FWMARK lookup WEFT_TABLE         (everything else: into the tunnel)
//   WEFT_TABLE: default dev NAME                            (both families)
//
// so WireGuard's own packets (marked) keep the physical default route and nothing loops. These are
// pure planners: `ip -j rule` and `ip -j route` output in, the commands that close the gap out.

/** The mark on the WireGuard socket's packets while an exit node is used ("WF"). */
export const WEFT_FWMARK = 0x5746;
/** The routing table holding the default route into the tunnel. */
export const WEFT_TABLE = 22342;
export const PRIORITY = { direct: 5310, suppress: 5320, tunnel: 5330 } as const;
const OUR_PRIORITIES = new Set<number>(Object.values(PRIORITY));

export interface Rule {
  family: Family;
  priority: number;
  /** The `ip rule` selector and action after `priority N`, as `ip rule add` takes them. */
  args: string[];
}

const key = (r: Rule) => `${r.family} ${r.priority} ${r.args.join(' ')}`;

/** The rules an exit-node state needs; none without `exitNode`. */
export function desiredRules(state: Pick<DesiredState, 'exitNode'>): Rule[] {
  const exit = state.exitNode;
  if (exit === undefined) return [];
  const rules: Rule[] = [];
  const direct = [
    ...new Set([...exit.bypass, ...exit.allowedLan].map((p) => canonicalPrefix(p) as string)),
  ].sort();
  for (const family of [4, 6] as const) {
    for (const p of direct) {
      if ((parsePrefix(p)?.addr.family ?? 0) === family) {
        rules.push({ family, priority: PRIORITY.direct, args: ['to', p, 'table', 'main'] });
      }
    }
    rules.push({
      family,
      priority: PRIORITY.suppress,
      args: ['table', 'main', 'suppress_prefixlength', '0'],
    });
    rules.push({
      family,
      priority: PRIORITY.tunnel,
      args: ['not', 'fwmark', `0x${WEFT_FWMARK.toString(16)}`, 'table', String(WEFT_TABLE)],
    });
  }
  return rules;
}

interface IpRule {
  priority?: number;
  not?: unknown;
  src?: string;
  srclen?: number;
  dst?: string;
  dstlen?: number;
  fwmark?: string;
  fwmask?: string;
  table?: string;
  suppress_prefixlen?: number;
  iif?: string;
  oif?: string;
}

/** Rules at our priorities, in the shapes this module adds; anything else there is not ours and is left. */
export function parseRules(json: string, family: Family): Rule[] {
  const out: Rule[] = [];
  for (const r of JSON.parse(json) as IpRule[]) {
    if (r.priority === undefined || !OUR_PRIORITIES.has(r.priority)) continue;
    if (r.src !== 'all' || r.iif !== undefined || r.oif !== undefined) continue;
    const isNot = 'not' in r;
    if (r.priority === PRIORITY.direct && !isNot && r.dst !== undefined && r.table === 'main') {
      const bits = r.dstlen ?? (family === 4 ? 32 : 128);
      const p = canonicalPrefix(`${r.dst}/${bits}`);
      if (p !== null && r.fwmark === undefined && r.suppress_prefixlen === undefined) {
        out.push({ family, priority: r.priority, args: ['to', p, 'table', 'main'] });
      }
    } else if (r.priority === PRIORITY.suppress && !isNot && r.dst === undefined && r.table === 'main') {
      if (r.suppress_prefixlen === 0 && r.fwmark === undefined) {
        out.push({ family, priority: r.priority, args: ['table', 'main', 'suppress_prefixlength', '0'] });
      }
    } else if (r.priority === PRIORITY.tunnel && isNot && r.dst === undefined && r.fwmask === undefined) {
      if (r.fwmark !== undefined && Number(r.fwmark) === WEFT_FWMARK && r.table === String(WEFT_TABLE)) {
        const args = ['not', 'fwmark', `0x${WEFT_FWMARK.toString(16)}`, 'table', String(WEFT_TABLE)];
        out.push({ family, priority: r.priority, args });
      }
    }
  }
  return out;
}

const ipRule = (r: Rule, verb: 'add' | 'del'): Command => [
  'ip',
  ...(r.family === 6 ? ['-6'] : []),
  'rule',
  verb,
  'priority',
  String(r.priority),
  ...r.args,
];

/**
 * Removals first, tunnel rule before the others, so the default never points into a tunnel whose
 * exceptions are gone; additions in the opposite order, the tunnel rule last, so the engine's own
 * connections and the LAN are exempt before anything is diverted.
 */
export function planRules(current: readonly Rule[], desired: readonly Rule[]): Command[] {
  const want = new Set(desired.map(key));
  const have = new Set(current.map(key));
  const byPriority = (order: 1 | -1) => (x: Rule, y: Rule) => order * (x.priority - y.priority);
  const plan: Command[] = [];
  const seen = new Set<string>();
  for (const r of [...current].sort(byPriority(-1))) {
    if (want.has(key(r)) || seen.has(key(r))) continue;
    seen.add(key(r));
    plan.push(ipRule(r, 'del'));
  }
  for (const r of [...desired].sort(byPriority(1))) if (!have.has(key(r))) plan.push(ipRule(r, 'add'));
  return plan;
}

interface IpRoute {
  dst?: string;
  dev?: string;
  type?: string;
}

/** Whether WEFT_TABLE has `default dev NAME`, from `ip -j [-6] route show table WEFT_TABLE`. */
export function hasTunnelDefault(json: string, name: string): boolean {
  return (JSON.parse(json) as IpRoute[]).some(
    (r) => r.dst === 'default' && r.dev === name && (r.type ?? 'unicast') === 'unicast',
  );
}

export const tunnelDefault = (family: Family, verb: 'add' | 'del', name: string): Command => [
  'ip',
  ...(family === 6 ? ['-6'] : []),
  'route',
  verb,
  'default',
  'dev',
  name,
  'table',
  String(WEFT_TABLE),
];
