import { canonicalPrefix } from '@weft/protocol';
import { canonicalIfaceAddr, type LinkSnapshot, type RouteSnapshot } from './ip.js';

// Pure planners: a snapshot of the interface plus the desired state in, the `ip` commands that close
// the gap out. Nothing to do gives an empty plan, which is what makes applying twice a no-op.
// Deletions come first so an address or route that changes shape is never held twice.

export type Command = string[];

export function planAddresses(name: string, link: LinkSnapshot, desired: readonly string[]): Command[] {
  const want = new Set(desired.map(canonicalIfaceAddr));
  const have = new Set(link.addresses);
  const plan: Command[] = [];
  for (const a of have) if (!want.has(a)) plan.push(['ip', 'address', 'del', a, 'dev', name]);
  for (const a of want) {
    if (have.has(a)) continue;
    // No duplicate address detection on a point-to-point tunnel: the address is usable at once.
    plan.push(['ip', 'address', 'add', a, 'dev', name, ...(a.includes(':') ? ['nodad'] : [])]);
  }
  return plan;
}

export function planLink(name: string, link: LinkSnapshot, mtu: number): Command[] {
  return link.mtu === mtu && link.up ? [] : [['ip', 'link', 'set', name, 'mtu', String(mtu), 'up']];
}

/**
 * Routes in the main table through the interface. A route the kernel made for an address counts as
 * present. New routes are added, never replaced: `replace` would silently take a prefix away from
 * another interface and `down` could not give it back; `add` fails instead, and the error says so.
 */
export function planRoutes(
  name: string,
  current: readonly RouteSnapshot[],
  desired: readonly string[],
): Command[] {
  const want = new Set(desired.map((r) => canonicalPrefix(r) as string));
  const present = new Set(current.filter((r) => r.kernel || r.manageable).map((r) => r.dst));
  const plan: Command[] = [];
  for (const r of current) {
    if (r.manageable && !want.has(r.dst)) plan.push([...ipRoute(r.dst), 'del', r.dst, 'dev', name]);
  }
  for (const dst of want) if (!present.has(dst)) plan.push([...ipRoute(dst), 'add', dst, 'dev', name]);
  return plan;
}

const ipRoute = (dst: string): Command => (dst.includes(':') ? ['ip', '-6', 'route'] : ['ip', 'route']);
