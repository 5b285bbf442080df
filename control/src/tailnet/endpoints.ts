import { parseEndpoint, parsePrefix, prefixContains } from '@weft/protocol';

// Which reported endpoints a node may hand its peers. A node must not be able to point its peers'
// WireGuard at their own loopback, link-local, unspecified or multicast addresses, or at an address
// inside the tailnet: those reach something on the peer's own machine or network, not the node.

const NEVER = [
  '0.0.0.0/8',
  '127.0.0.0/8',
  '169.254.0.0/16',
  '224.0.0.0/4',
  '255.255.255.255/32',
  '::/128',
  '::1/128',
  'fe80::/10',
  'ff00::/8',
  '::ffff:0:0/96',
].map((p) => parsePrefix(p) ?? never(p));

function never(p: string): never {
  throw new Error(`bad built-in prefix ${p}`);
}

/** `endpoints` without duplicates and without the ones no peer should be sent to. */
export function usableEndpoints(endpoints: readonly string[], tailnetRanges: readonly string[]): string[] {
  const internal = tailnetRanges.map((r) => parsePrefix(r) ?? never(r));
  return [...new Set(endpoints)].filter((text) => {
    const ep = parseEndpoint(text);
    return ep !== null && ![...NEVER, ...internal].some((p) => prefixContains(p, ep.addr));
  });
}
