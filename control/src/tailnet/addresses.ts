import { randomBytes } from 'node:crypto';
import { formatAddr, parseIPv4, parsePrefix } from '@weft/protocol';

// Address allocation. IPv4 comes from the shared-address space 100.64.0.0/10 (lowest free first, so
// addresses stay short and predictable); IPv6 is the tailnet's own ULA /48 with the IPv4 address in
// the low 32 bits, so it is unique and stable exactly when the IPv4 address is.

export const TAILNET_IPV4_RANGE = '100.64.0.0/10';

const V4_FIRST = Number(parseIPv4('100.64.0.0'));
const V4_SIZE = 1 << 22;
/** The range's network and broadcast addresses, and 100.100.100.100, kept for a future MagicDNS resolver. */
const RESERVED_V4 = new Set([0, V4_SIZE - 1, Number(parseIPv4('100.100.100.100')) - V4_FIRST]);

/**
 * `ip`'s place in 100.64.0.0/10 (nodes are indexed by it), or -1 when it is not a dotted quad
 * there. Plain character work: a migration runs it over every node.
 */
export function ipv4Offset(ip: string): number {
  let value = 0;
  let octet = -1;
  let dots = 0;
  for (let i = 0; i <= ip.length; i++) {
    const c = i < ip.length ? ip.charCodeAt(i) : 46; // a '.' closes the last octet
    if (c === 46) {
      if (octet < 0 || octet > 255 || dots > 3) return -1;
      value = value * 256 + octet;
      octet = -1;
      dots++;
    } else if (c >= 48 && c <= 57) {
      if (octet === 0) return -1; // no leading zeros
      octet = (octet < 0 ? 0 : octet * 10) + (c - 48);
    } else return -1;
  }
  const offset = value - V4_FIRST;
  return dots === 4 && offset >= 0 && offset < V4_SIZE ? offset : -1;
}

/** The first address at or above `offset` that may be handed out (the reserved ones are skipped). */
export function ipv4From(offset: number): string {
  let at = Math.max(offset, 0);
  while (RESERVED_V4.has(at)) at++;
  if (at >= V4_SIZE) throw new Error(`the tailnet's address range ${TAILNET_IPV4_RANGE} is full`);
  return formatAddr({ family: 4, value: BigInt(V4_FIRST + at) });
}

/** Offsets below the highest of `used` that no node has and that may be handed out: the free list. */
export function unusedIPv4Offsets(used: Iterable<number>): number[] {
  const taken = new Set(used);
  let top = 0;
  for (const offset of taken) top = Math.max(top, offset);
  const free: number[] = [];
  for (let offset = 1; offset < top; offset++)
    if (!taken.has(offset) && !RESERVED_V4.has(offset)) free.push(offset);
  return free;
}

export function ipv6For(ulaPrefix: string, ipv4: string): string {
  const prefix = parsePrefix(ulaPrefix, { strict: true });
  const v4 = parseIPv4(ipv4);
  if (prefix === null || prefix.addr.family !== 6 || prefix.bits > 96 || v4 === null) {
    throw new Error(`cannot derive an IPv6 address from ${ulaPrefix} and ${ipv4}`);
  }
  return formatAddr({ family: 6, value: prefix.addr.value | v4 });
}

/** A random RFC 4193 unique local /48: fd00::/8 plus a 40-bit random global ID. */
export function randomUlaPrefix(): string {
  let value = 0xfdn;
  for (const byte of randomBytes(5)) value = (value << 8n) | BigInt(byte);
  return `${formatAddr({ family: 6, value: value << 80n })}/48`;
}
