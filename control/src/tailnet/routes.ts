import { EXIT_ROUTES, formatPrefix, type Prefix, parsePrefix, prefixContains } from '@weft/protocol';
import type { NodeRecord } from './records.js';

// Routes a node offers (subnet routers, exit nodes) and which of them are in use. A node advertises
// routes; none is used until approved, by an admin (`weft-control routes approve`) or by the
// policy's autoApprovers (the policy compiler decides those). 0.0.0.0/0 and ::/0 are one offer: "exit
// node"; approving either approves both.

const EXIT = new Set(EXIT_ROUTES);

export const isExitRoute = (route: string): boolean => EXIT.has(route);

/** The canonical text of a prefix (host bits must already be zero), or null if it is not one. */
export function canonicalRoute(text: string): string | null {
  const p = parsePrefix(text.trim(), { strict: true });
  return p === null ? null : formatPrefix(p);
}

/** Canonical, without duplicates, IPv4 before IPv6, in address order. */
export function normalizeRoutes(routes: readonly string[]): string[] {
  const out = new Set<string>();
  for (const r of routes) {
    const c = canonicalRoute(r);
    if (c !== null) out.add(c);
  }
  return [...out].sort(compareRoutes);
}

function compareRoutes(a: string, b: string): number {
  const pa = parsePrefix(a) as Prefix;
  const pb = parsePrefix(b) as Prefix;
  if (pa.addr.family !== pb.addr.family) return pa.addr.family - pb.addr.family;
  if (pa.addr.value !== pb.addr.value) return pa.addr.value < pb.addr.value ? -1 : 1;
  return pa.bits - pb.bits;
}

/** Whether two prefixes share any address. */
export function routesOverlap(a: string, b: string): boolean {
  const pa = parsePrefix(a);
  const pb = parsePrefix(b);
  if (pa === null || pb === null || pa.addr.family !== pb.addr.family) return false;
  return prefixContains(pa, pb.addr) || prefixContains(pb, pa.addr);
}

/**
 * The routes an admin approved that the node still advertises (what is in use without a policy;
 * with one, autoApprovers may approve more).
 */
export function adminApprovedRoutes(node: Pick<NodeRecord, 'advertisedRoutes' | 'approvedRoutes'>): string[] {
  const approved = new Set(normalizeRoutes(node.approvedRoutes));
  const exitApproved = [...approved].some(isExitRoute);
  return normalizeRoutes(node.advertisedRoutes).filter(
    (r) => approved.has(r) || (isExitRoute(r) && exitApproved),
  );
}

/**
 * Approving: `routes` added to the node's approved list (an exit route brings its partner). Routes
 * the node does not advertise are kept too, and take effect once it does.
 */
export function withApproved(current: readonly string[], routes: readonly string[]): string[] {
  const add = routes.some(isExitRoute) ? [...routes, ...EXIT_ROUTES] : routes;
  return normalizeRoutes([...current, ...add]);
}

/** Unapproving: `routes` removed (an exit route takes its partner with it). */
export function withoutApproved(current: readonly string[], routes: readonly string[]): string[] {
  const drop = new Set(normalizeRoutes(routes.some(isExitRoute) ? [...routes, ...EXIT_ROUTES] : routes));
  return normalizeRoutes(current).filter((r) => !drop.has(r));
}

/**
 * Among nodes approved for the same subnet, the one peers route it to: the first to have
 * registered (as Tailscale makes the first advertiser primary). Exit routes have no primary: each
 * exit node is a separate choice.
 */
export function electPrimaries(
  nodes: Iterable<NodeRecord>,
  approvedOf: (n: NodeRecord) => readonly string[],
): Map<string, string> {
  const best = new Map<string, NodeRecord>();
  for (const n of nodes) {
    for (const r of approvedOf(n)) {
      if (isExitRoute(r)) continue;
      const cur = best.get(r);
      if (!cur || n.createdAt < cur.createdAt || (n.createdAt === cur.createdAt && n.id < cur.id)) {
        best.set(r, n);
      }
    }
  }
  return new Map([...best].map(([r, n]) => [r, n.id]));
}
