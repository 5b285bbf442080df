import { type FilterRule, parsePrefix } from '@weft/protocol';
import type { PolicyChange } from '../policy/compiler.js';
import {
  CompiledPolicy,
  IPSet,
  type Policy,
  type Tailnet,
  type TailnetNode,
  type TailnetUser,
} from '../policy/index.js';
import { policyGroupsOf } from '../tailnet/groups.js';
import type { NodeRecord, UserRecord } from '../tailnet/records.js';
import { adminApprovedRoutes } from '../tailnet/routes.js';
import { allowAll, type Visibility, type VisibilityPolicy } from './visibility.js';

// The policy compiler as the hub's VisibilityPolicy. Engine node names are node ids. The hub tells
// it of every node that joins, leaves or changes identity (affectedBy), which it passes on as one
// incremental engine update each, answering with exactly the nodes whose peers or filter moved. A
// new policy is a new engine over the nodes it already mirrors. Without a policy it is allowAll,
// so a tailnet behaves as before until an admin sets one.

/** What the engine knows of a user: name, email, and their provider groups as `group:NAME`s. */
export function policyUser(
  user: Pick<UserRecord, 'name' | 'email' | 'groups'>,
): TailnetUser & { groups: string[] } {
  return {
    name: user.name,
    ...(user.email ? { email: user.email } : {}),
    groups: policyGroupsOf({ groups: user.groups }),
  };
}

function ownerOf(node: NodeRecord): (TailnetUser & { groups: string[] }) | undefined {
  if (node.userName === null) return undefined;
  return policyUser({ name: node.userName, email: node.userEmail ?? null, groups: node.userGroups ?? [] });
}

export function policyNode(node: NodeRecord): TailnetNode {
  // Assigned, not spread: a first policy makes this for every node (the spread was a sixth of it).
  const out: TailnetNode = {
    tags: node.tags,
    ipv4: node.ipv4,
    ipv6: node.ipv6,
    advertisedRoutes: node.advertisedRoutes,
    approvedRoutes: node.approvedRoutes,
  };
  // Tagged nodes belong to their tags: the engine ignores their user.
  if (node.tags.length === 0 && node.userName !== null) out.user = node.userName;
  return out;
}

/** The tailnet as `checkPolicy` wants it, to check a policy against the database before storing it. */
export function policyTailnet(users: readonly UserRecord[], nodes: readonly NodeRecord[]): Tailnet {
  return {
    users: users.map(policyUser),
    nodes: Object.fromEntries(nodes.map((n) => [n.name, policyNode(n)])),
  };
}

/** The tailnet's own ranges as the engine's `*` source. */
export function wildcardSourcesOf(tailnetRanges: readonly string[]): IPSet {
  return IPSet.fromPrefixes(
    tailnetRanges.map((r) => {
      const p = parsePrefix(r, { strict: true });
      if (p === null) throw new Error(`invalid tailnet range ${r}`);
      return p;
    }),
  );
}

/** A change to more nodes than this (and a quarter of the tailnet) rebuilds the engine. */
const BULK_CHANGE = 64;

export class PolicyVisibility implements VisibilityPolicy {
  private policy: Policy | null = null;
  private engine: CompiledPolicy | null = null;
  /**
   * Counts engines: in a class's shared key (see Visibility.shared), so classes of two engines (two
   * policies, or one rebuilt) never share a record.
   */
  private generation = 0;
  /** Every node the hub has told us of, to build a new policy's engine from. */
  private readonly records = new Map<string, NodeRecord>();
  /** What the engine was last told of each user, as JSON, to tell it only of real changes. */
  private readonly users = new Map<string, string>();
  /**
   * Each node's packet filter as last worked out, until a change the engine names as one that may
   * move it (PolicyChange.filters): a shared server's join gives every member a peer, not a filter,
   * and working out 9,800 unchanged filters was a fifth of that join's time at 10,000 nodes. The
   * same array comes back, so the hub knows without comparing that it did not move.
   */
  private readonly filters = new Map<string, FilterRule[]>();

  constructor(private readonly wildcardSources: IPSet) {}

  /** Whether a policy is in force (otherwise every node sees every node). */
  get active(): boolean {
    return this.engine !== null;
  }

  /**
   * Puts `policy` in force (null: allow all again) over the nodes known so far, and returns the
   * nodes whose peers it moved, for the hub (NetmapHub.policyChanged) to send them what changed.
   */
  setPolicy(policy: Policy | null): ReadonlySet<string> {
    const before = this.engine;
    this.policy = policy;
    // The engine mirrors every known node (see affectedBy): the new one takes them over from it.
    this.filters.clear();
    if (before !== null && policy !== null) {
      this.engine = before.withPolicy(policy);
      this.generation++;
    } else this.rebuild();
    if (before !== null && this.engine !== null) return this.engine.peersChangedFrom(before);
    // From or to allow-all: those that do not see everyone under the one engine there is.
    return (this.engine ?? before)?.peersNotAll() ?? new Set();
  }

  /** A new engine over every known node, built in one pass (no per-node change is worked out). */
  private rebuild(): void {
    this.users.clear();
    this.filters.clear();
    this.engine = null;
    if (this.policy === null) return;
    const owners = new Map<string, TailnetUser>();
    for (const node of this.records.values()) {
      const owner = node.tags.length === 0 ? ownerOf(node) : undefined;
      if (owner !== undefined) owners.set(owner.name, owner);
    }
    for (const [name, owner] of owners) this.users.set(name, JSON.stringify(owner));
    const engine = new CompiledPolicy(this.policy, [...owners.values()], {
      wildcardSources: this.wildcardSources,
    });
    engine.addCheckedNodes([...this.records.values()].map((n) => [n.id, policyNode(n)] as const));
    this.engine = engine;
    this.generation++;
  }

  visibilityOf(node: NodeRecord, nodes: ReadonlyMap<string, NodeRecord>): Visibility {
    const engine = this.engine;
    if (engine === null) return allowAll.visibilityOf(node, nodes);
    if (!engine.hasNode(node.id)) {
      this.records.set(node.id, node);
      this.tell(engine, node);
    }
    const canSee = engine.canSee(node.id);
    const shared = engine.sharedClass(node.id);
    let packetFilter = this.filters.get(node.id);
    if (packetFilter === undefined) {
      packetFilter = engine.packetFilter(node.id);
      this.filters.set(node.id, packetFilter);
    }
    let routes: Record<string, string[]> | undefined;
    const visibility: Visibility = {
      canSee: (peer) => canSee(peer.id),
      peerIds: () => engine.eachVisiblePeer(node.id),
      packetFilter,
      // Decided again with the visibility whenever a change names this node in `routes`.
      routesOf: (peer) => {
        routes ??= engine.peerRoutes(node.id);
        return routes[peer.id] ?? [];
      },
    };
    // Set, not spread in: a policy change makes one for every stream.
    if (shared)
      visibility.shared = {
        key: `${this.generation} ${shared.key}`,
        canSee: (peer) => shared.canSee(peer.id),
      };
    return visibility;
  }

  approvedRoutes(node: NodeRecord): string[] {
    return this.engine ? this.engine.approvedRoutesOf(policyNode(node)) : adminApprovedRoutes(node);
  }

  affectedBy(
    changed: readonly NodeRecord[],
    nodes: ReadonlyMap<string, NodeRecord>,
  ): ReadonlySet<string> | 'all' {
    for (const n of changed) {
      const current = nodes.get(n.id);
      if (current === undefined) this.records.delete(n.id);
      else this.records.set(n.id, current);
    }
    const engine = this.engine;
    if (engine === null) return new Set();
    // Many changes at once (a server starting, a bulk re-tag): cheaper to build anew and decide all.
    if (changed.length > Math.max(BULK_CHANGE, nodes.size / 4)) {
      this.rebuild();
      return 'all';
    }
    const affected = new Set<string>();
    for (const n of changed) {
      const current = nodes.get(n.id);
      if (current !== undefined) this.tell(engine, current, affected);
      else {
        this.filters.delete(n.id);
        if (engine.hasNode(n.id)) this.told(engine.removeNode(n.id), affected);
      }
    }
    return affected;
  }

  /** Upserts a node, and its owner first when what policy sees of the owner changed. */
  private tell(engine: CompiledPolicy, node: NodeRecord, affected?: Set<string>): void {
    const owner = node.tags.length === 0 ? ownerOf(node) : undefined;
    if (owner !== undefined) {
      const json = JSON.stringify(owner);
      if (this.users.get(owner.name) !== json) {
        this.users.set(owner.name, json);
        this.told(engine.upsertUser(owner), affected);
      }
    }
    this.told(engine.upsertNode(node.id, policyNode(node)), affected);
  }

  /**
   * Forgets the filters `change` may have moved (whoever asks next is given a new one), and adds the
   * nodes whose peers, packet filter or routes it moved to `affected`.
   */
  private told(change: PolicyChange, affected: Set<string> | undefined): void {
    for (const id of change.filters) this.filters.delete(id);
    if (affected === undefined) return;
    for (const id of change.peers.keys()) affected.add(id);
    for (const id of change.filters) affected.add(id);
    for (const id of change.routes) affected.add(id);
  }
}
