import type { NodeView } from '@weft/protocol';
import type { NodeRecord } from './records.js';
import { adminApprovedRoutes, isExitRoute } from './routes.js';

/**
 * How a node appears on the wire, to itself and to its peers. `routes` are the approved routes the
 * viewer is sent (to itself: all of them); a peer whose routes include an exit route is marked
 * `exitNodeOption` (never the node itself).
 */
export function toNodeView(
  node: NodeRecord,
  online: boolean,
  routes: readonly string[] = adminApprovedRoutes(node),
  asPeer = false,
): NodeView {
  const own = [`${node.ipv4}/32`, `${node.ipv6}/128`];
  return {
    id: node.id,
    name: node.name,
    // Tagged nodes belong to their tags, not to the person who registered them.
    user: node.tags.length > 0 ? null : node.userName,
    tags: node.tags,
    nodeKey: node.nodeKey,
    addresses: own,
    allowedIPs: [...own, ...routes],
    endpoints: node.endpoints,
    online,
    // When it was last seen, once it is offline. Online it is seen now: the time its last stream
    // ended says nothing, and a clean shutdown writes it for every node while their rows keep them
    // online, which would move every view and cost each reconnect its resume (see NetmapHub.connect).
    lastSeen: online ? null : node.lastSeen,
    keyExpiry: node.keyExpiry,
    os: node.os,
    ...(asPeer && routes.some(isExitRoute) ? { exitNodeOption: true } : {}),
    ...(node.kind === 'tailscale' ? { kind: 'tailscale' as const } : {}),
    ...(node.clientVersion !== null ? { clientVersion: node.clientVersion } : {}),
    ...(node.discoKey !== null ? { discoKey: node.discoKey } : {}),
    ...(node.homeRelay !== null && node.homeRelay > 0 ? { homeRelay: node.homeRelay } : {}),
  };
}
