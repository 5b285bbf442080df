import { randomBytes } from 'node:crypto';
import { formatAddr, parseIPv4, parsePrefix } from '@weft/protocol';

// Address allocation. IPv4 comes from the shared-address space 100.64.0.0/10 (lowest free first, so
// addresses stay short and predictable); IPv6 is the tailnet's own ULA /48 with the IPv4 address in
// the low 32 bits, so it is unique and stable exactly when the IPv4 address is.

export const TAILNET_IPV4_RANGE = '100.64.0.0/10';

const V4_FIRST = parseIPv4('100.64.0.0') as bigint;
const V4_SIZE = 1n << 22n;
/** The range's network and broadcast addresses, and 100.100.100.100, kept for a future MagicDNS resolver. */
const RESERVED_V4 = new Set([V4_FIRST, V4_FIRST + V4_SIZE - 1n, parseIPv4('100.100.100.100') as bigint]);

export function lowestFreeIPv4(used: Iterable<string>): string {
  const taken = new Set<bigint>();
  for (const ip of used) {
    const v = parseIPv4(ip);
    if (v !== null) taken.add(v);
  }
  for (let v = V4_FIRST; v < V4_FIRST + V4_SIZE; v++) {
    if (!taken.has(v) && !RESERVED_V4.has(v)) return formatAddr({ family: 4, value: v });
  }
  throw new Error(`the tailnet's address range ${TAILNET_IPV4_RANGE} is full`);
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
