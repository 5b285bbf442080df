import type { NodeView } from '@weft/protocol';

/**
 * The WireGuard endpoint to configure for a peer, or undefined to wait for the peer to reach us
 * (WireGuard learns an endpoint from any authenticated packet). For now the first candidate;
 * path selection (direct candidates vs the loopback relay proxy) replaces this function alone.
 */
export function choosePeerEndpoint(peer: NodeView): string | undefined {
  return peer.endpoints[0];
}
