import { parseAddr } from '@weft/protocol';

/**
 * Whom a per-source limit counts an address against: its IPv4 address (IPv4-mapped IPv6
 * unmapped), or its IPv6 /64, the smallest block one host is commonly given (so one host cannot
 * multiply its share by using many of its addresses).
 */
export function sourceKey(address: string): string {
  const addr = parseAddr(address);
  if (addr === null) return address;
  if (addr.family === 6 && addr.value >> 32n !== 0xffffn) return `${(addr.value >> 64n).toString(16)}/64`;
  return `4:${addr.value & 0xffffffffn}`;
}
