import { networkInterfaces } from 'node:os';
import { formatEndpoint, parseAddr, parsePrefix, prefixContains } from '@weft/protocol';

// The LAN candidates a node reports for its WireGuard socket: every address the host has that a
// peer could send to. Reflected (public) mappings join these in the NAT-traversal work.

/** Addresses no peer can use: loopback, link-local (they need a zone), and unspecified. */
const UNUSABLE = ['127.0.0.0/8', '169.254.0.0/16', '0.0.0.0/32', '::1/128', 'fe80::/10', '::/128'].flatMap(
  (p) => {
    const prefix = parsePrefix(p, { strict: true });
    return prefix ? [prefix] : [];
  },
);

export type AddressSource = () => Array<{ iface: string; address: string }>;

export const osAddresses: AddressSource = () =>
  Object.entries(networkInterfaces()).flatMap(([iface, addrs]) =>
    (addrs ?? []).filter((a) => !a.internal).map((a) => ({ iface, address: a.address })),
  );

/**
 * Candidate endpoints `ip:port` for `listenPort`, skipping our own tunnel interface (its
 * addresses are only reachable through the tunnel itself). Sorted so equal sets compare equal.
 */
export function localEndpoints(source: AddressSource, tunnelInterface: string, listenPort: number): string[] {
  const out = new Set<string>();
  for (const { iface, address } of source()) {
    if (iface === tunnelInterface) continue;
    const addr = parseAddr(address);
    if (!addr || UNUSABLE.some((p) => prefixContains(p, addr))) continue;
    out.add(formatEndpoint(addr, listenPort));
  }
  return [...out].sort();
}
