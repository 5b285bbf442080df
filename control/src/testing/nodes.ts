import { NetmapHub, type StreamSession } from '../netmap/hub.js';
import { PolicyVisibility, wildcardSourcesOf } from '../netmap/policy-visibility.js';
import { parsePolicy } from '../policy/index.js';
import type { NodeRecord } from '../tailnet/records.js';

// Simulated tailnets for control's netmap tests and the policy benchmark: node records as the
// store would return them, and a hub under the policy compiler with every node connected.

/** An all-zero WireGuard key: the hub never checks keys. */
export const TEST_KEY = 'AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=';
/** The tailnet's address ranges (IPv4 CGNAT and a ULA /48). */
export const TEST_RANGES = ['100.64.0.0/10', 'fd00:1:2::/48'];

/** A node's owner; the user ID is derived from the name. */
export interface TestOwner {
  name: string;
  email?: string;
  groups?: string[];
}

/**
 * Node `i` (id `n{i}`, name `node{i}`, addresses from `i` inside TEST_RANGES), owned by `owner` or
 * untagged and ownerless when null; a linux node with no tags, endpoints or routes unless `extra`
 * says otherwise.
 */
export function testNode(i: number, owner: TestOwner | null, extra: Partial<NodeRecord> = {}): NodeRecord {
  return {
    id: `n${i}`,
    name: `node${i}`,
    hostname: `node${i}`,
    userId: owner ? `u-${owner.name}` : null,
    userName: owner?.name ?? null,
    userEmail: owner?.email ?? null,
    userGroups: owner?.groups ?? [],
    preauthKeyId: null,
    tags: [],
    machineKey: TEST_KEY,
    nodeKey: TEST_KEY,
    ipv4: `100.${64 + Math.floor(i / 65536)}.${Math.floor(i / 256) % 256}.${i % 256}`,
    ipv6: `fd00:1:2::6440:${i.toString(16)}`,
    endpoints: [],
    os: 'linux',
    ephemeral: false,
    createdAt: '2026-01-01T00:00:00.000Z',
    lastSeen: null,
    keyExpiry: null,
    advertisedRoutes: [],
    approvedRoutes: [],
    kind: 'weft',
    clientVersion: null,
    discoKey: null,
    homeRelay: null,
    ...extra,
  };
}

/**
 * A hub over TEST_RANGES under the policy compiler, with `policy` in force (none when null), that
 * knows `nodes` and has each of them connected through a session from `session`.
 */
export function connectedHub<S extends StreamSession>(
  nodes: readonly NodeRecord[],
  policy: string | null,
  session: (nodeId: string) => S,
) {
  const visibility = new PolicyVisibility(wildcardSourcesOf(TEST_RANGES));
  const hub = new NetmapHub(visibility, TEST_RANGES);
  if (policy !== null) visibility.setPolicy(parsePolicy(policy));
  hub.update(nodes);
  const sessions = new Map(
    nodes.map((n) => {
      const s = session(n.id);
      hub.connect(s);
      return [n.id, s] as const;
    }),
  );
  return { hub, visibility, sessions };
}
