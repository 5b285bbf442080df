import { type Prefix, parsePrefix, prefixContains } from '@weft/protocol';

// Ranges the kernel looks after itself. The helper neither assigns nor routes them, and ignores them
// when it reads the interface back, so requests for them are refused rather than never converging.

const prefixes = (...texts: string[]): Prefix[] => texts.map((t) => parsePrefix(t) as Prefix);

/** Addresses the kernel manages itself or refuses on an interface. */
export const UNASSIGNABLE = prefixes(
  '0.0.0.0/8',
  '127.0.0.0/8',
  '224.0.0.0/4',
  '255.255.255.255/32',
  '::/128',
  '::1/128',
  'fe80::/10',
  'ff00::/8',
);

/** Link-local and multicast prefixes, which the kernel routes on every interface by itself. */
export const UNROUTABLE = prefixes('224.0.0.0/4', 'fe80::/10', 'ff00::/8');

/** True when prefix `p` lies inside one of `ranges`. */
export function inAny(p: Prefix, ranges: readonly Prefix[]): boolean {
  return ranges.some((r) => p.bits >= r.bits && prefixContains(r, p.addr));
}
