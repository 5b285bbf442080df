import { type Family, familyBits, mergeSpans, parsePrefix, prefixRange } from './ip.js';

// What an "exit route" is, defined once for every part: a prefix, or the prefixes of one request field
// taken together, covering more than 1/EXIT_ROUTE_SHARE of the IPv4 or the IPv6 address space. Such a
// set acts as a default route (0.0.0.0/1 + 128.0.0.0/1 is the whole space, the trick OpenVPN's def1
// uses), or, as a kill-switch exception, switches the kill switch off. Only the exit-node path may
// carry one.

/** A set of prefixes covering more than 1/64 of a family's space is an exit route (a /5 or wider). */
export const EXIT_ROUTE_SHARE = 64n;

/** The families in which `prefixes` together cover more than 1/EXIT_ROUTE_SHARE of the space. */
export function exitRouteFamilies(prefixes: readonly string[]): Family[] {
  const out: Family[] = [];
  for (const family of [4, 6] as const) {
    const spans = prefixes
      .map((text) => parsePrefix(text))
      .filter((p) => p !== null && p.addr.family === family)
      .map((p) => prefixRange(p as NonNullable<typeof p>));
    let covered = 0n;
    for (const s of mergeSpans(spans)) covered += s.last - s.first + 1n;
    if (covered * EXIT_ROUTE_SHARE > 1n << BigInt(familyBits(family))) out.push(family);
  }
  return out;
}

/** The wording for a refusal: which share of which family a field covers. */
export function describeExitRoute(families: readonly Family[]): string {
  const names = families.map((f) => (f === 4 ? 'IPv4' : 'IPv6')).join(' and ');
  return `covers more than 1/${EXIT_ROUTE_SHARE} of the ${names} address space, which makes it an exit route`;
}
