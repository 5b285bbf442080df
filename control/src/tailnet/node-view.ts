import type { NodeView } from '@weft/protocol';
import type { NodeRecord } from './records.js';

/** How a node appears on the wire, to itself and to its peers. */
export function toNodeView(node: NodeRecord, online: boolean): NodeView {
  const own = [`${node.ipv4}/32`, `${node.ipv6}/128`];
  return {
    id: node.id,
    name: node.name,
    // Tagged nodes belong to their tags, not to the person who registered them.
    user: node.tags.length > 0 ? null : node.userName,
    tags: node.tags,
    nodeKey: node.nodeKey,
    addresses: own,
    allowedIPs: [...own, ...node.approvedRoutes],
    endpoints: node.endpoints,
    online,
    lastSeen: node.lastSeen,
    keyExpiry: node.keyExpiry,
    os: node.os,
  };
}
