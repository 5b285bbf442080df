import { ALLOW_ALL, type FilterRule } from '@weft/protocol';
import type { NodeRecord } from '../tailnet/records.js';

// The one place that decides who sees whom and what each node's packet filter is. Today everyone
// sees everyone and accepts everything; the policy compiler will provide another VisibilityPolicy.

/** What one node may see and the filter it must enforce, decided against a snapshot of the tailnet. */
export interface Visibility {
  canSee(peer: NodeRecord): boolean;
  /**
   * Every node id it may see, when the policy can list them cheaper than asking of each node: each
   * once, never the node's own.
   */
  peerIds?(): Iterable<string>;
  packetFilter: FilterRule[];
  /**
   * The approved routes of `peer` this node is sent (in the peer's allowedIPs). Absent: every
   * approved exit route, and the subnets the peer is the primary router of.
   */
  routesOf?(peer: NodeRecord): string[];
  /**
   * Given: every node whose visibility carries the same `key` sees the same peers (itself aside),
   * each with the same view (the same routes), so the hub keeps one record of what they were sent
   * for all of them, not one each. `canSee` answers as the class sees a peer, its own members
   * included (no "not itself"). Absent: what this node sees is its own (autogroup:self peers).
   */
  shared?: SharedVisibility;
}

export interface SharedVisibility {
  key: string;
  canSee(peer: NodeRecord): boolean;
}

export interface VisibilityPolicy {
  /** The decision for `node` given every node in the tailnet. */
  visibilityOf(node: NodeRecord, nodes: ReadonlyMap<string, NodeRecord>): Visibility;
  /**
   * Which nodes' decisions may have changed because `changed` nodes joined, left, or changed what a
   * policy can refer to (owner, tags, addresses, routes). The changed nodes themselves are always
   * recomputed; this names the others, or 'all' when the policy cannot narrow it down. It is what
   * keeps a join from costing a recompute over every pair of nodes. Whether one node sees another
   * depends on those two nodes only, so a named node is asked again about the changed nodes alone.
   */
  affectedBy(
    changed: readonly NodeRecord[],
    nodes: ReadonlyMap<string, NodeRecord>,
  ): ReadonlySet<string> | 'all';
  /**
   * The routes `node` is approved for: advertised, and approved by an admin or (with a policy) its
   * autoApprovers. Absent: those an admin approved.
   */
  approvedRoutes?(node: NodeRecord): string[];
}

const everything: Visibility = {
  canSee: () => true,
  packetFilter: ALLOW_ALL,
  shared: { key: 'everyone', canSee: () => true },
};

/** Until a policy is set: every node sees every other node and accepts all traffic from them. */
export const allowAll: VisibilityPolicy = {
  visibilityOf: () => everything,
  affectedBy: () => new Set(),
};
