import { readFile } from 'node:fs/promises';
import { formatAddr } from '@weft/protocol';

// The gateway that port mapping asks: the IPv4 default route's next hop, read from
// /proc/net/route (no privileges, no `ip` process).

const RTF_GATEWAY = 0x2;
const HEX32 = /^[0-9A-Fa-f]{8}$/;
const FLAGS = /^[0-9A-Fa-f]{1,8}$/;

/**
 * The default route's gateway in a /proc/net/route table, or null when there is none. The kernel
 * prints addresses as host-order (little-endian) hex.
 */
export function parseDefaultGateway(table: string): string | null {
  for (const line of table.split('\n').slice(1)) {
    const [, destination, gateway, flags, , , , mask] = line.trim().split(/\s+/);
    if (!destination || !gateway || !flags || !mask) continue;
    if (!HEX32.test(destination) || !HEX32.test(gateway) || !HEX32.test(mask) || !FLAGS.test(flags)) continue;
    if (Number.parseInt(destination, 16) !== 0 || Number.parseInt(mask, 16) !== 0) continue;
    if ((Number.parseInt(flags, 16) & RTF_GATEWAY) === 0) continue;
    const value = Buffer.from(gateway, 'hex').readUInt32LE(0);
    if (value === 0) continue;
    return formatAddr({ family: 4, value: BigInt(value) });
  }
  return null;
}

export async function defaultGateway(): Promise<string | null> {
  try {
    return parseDefaultGateway(await readFile('/proc/net/route', 'utf8'));
  } catch {
    return null; // not Linux, or /proc not mounted: no port mapping
  }
}
