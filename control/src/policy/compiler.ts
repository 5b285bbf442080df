import {
  type Addr,
  type FilterRule,
  formatAddr,
  formatPrefix,
  type Prefix,
  parseAddr,
  parsePrefix,
} from '@weft/protocol';
import { IPSet } from './ipset.js';
import { type CompiledRule, compileRules, type Matcher, matcherOf } from './rules.js';
import type { Tailnet, TailnetNode, TailnetNodeInput, TailnetUser } from './tailnet.js';
import { TailnetNode as TailnetNodeSchema } from './tailnet.js';
import type { Policy, PortRange } from './types.js';

// The compiled policy over a live tailnet, kept up to date node by node.
//
// A node is tested against each rule by its own identity, addresses and routes alone. Nodes on
// exactly the same sides of the same rules form a class (in practice one per role: "members",
// "tag:server", "the 10.33/16 router", ...), and whether two nodes may see each other is a
// property of their two classes. So a node change costs one pass over the rules, a pass over
// the (few) classes when a new class appears, and then only the nodes it actually touches:
// there is no state or work per pair of nodes, even for `*` → `*`. autogroup:self rules relate
// nodes of one user only and are kept per user instead.

export interface NodePolicy {
  /** What the node's helper must accept from the tunnel; the rest is dropped. */
  packetFilter: FilterRule[];
  /** Names of the nodes this node may see (and only those go into its netmap). */
  peers: string[];
  /** For visible peers that route more than their own addresses: the routes this node sends them. */
  peerRoutes: Record<string, string[]>;
}

/** What one node change did to the other nodes' policies. */
export interface PolicyChange {
  /** Nodes whose peer set changed, and how. The changed node itself is listed in full. */
  peers: Map<string, { added: string[]; removed: string[] }>;
  /** Nodes whose packet filter may have changed. */
  filters: Set<string>;
  /** Nodes whose peerRoutes may have changed. */
  routes: Set<string>;
}

export interface CompileOptions {
  /**
   * The addresses `*` stands for as a source, besides approved subnet routes. Defaults to
   * Tailscale's: 100.64.0.0/10 without 100.115.92.0/23, and fd7a:115c:a1e0::/48. Control passes
   * its own tailnet ranges.
   */
  wildcardSources?: IPSet;
}

/** Parses a prefix already validated (by the tailnet schema or the policy parser). */
function prefixOf(text: string): Prefix {
  const p = parsePrefix(text, { strict: true });
  if (p === null) throw new Error(`invalid prefix ${text}`);
  return p;
}

const setOf = (prefixes: Iterable<string>) => IPSet.fromPrefixes([...prefixes].map(prefixOf));

export const TAILSCALE_WILDCARD_SOURCES = setOf(['100.64.0.0/10', 'fd7a:115c:a1e0::/48']).subtract(
  setOf(['100.115.92.0/23']),
);

const EXIT_ROUTES = new Set(['0.0.0.0/0', '::/0']);
/** The routes of a node that has none, shared by all such nodes (never written to). */
const NO_ROUTES: readonly string[] = [];
const NO_PRIMARIES: ReadonlySet<string> = new Set();
const NO_RULES: ReadonlySet<number> = new Set();

/**
 * What autogroup:internet stands for where an exit node forwards, as Tailscale sends it: all of
 * IPv4 but the private ranges (RFC 1918), shared address space (CGNAT, where the tailnet lives)
 * and link-local; and global unicast IPv6 (2000::/3, which holds no private, link-local or
 * tailnet address). Loopback, multicast and reserved IPv4 stay in, as in Tailscale's filters.
 */
const THE_INTERNET = setOf(['0.0.0.0/0', '2000::/3'])
  .subtract(setOf(['10.0.0.0/8', '100.64.0.0/10', '169.254.0.0/16', '172.16.0.0/12', '192.168.0.0/16']))
  .toStrings();
/** A wildcard destination's one IP. */
const WILDCARD_IP = ['*'];
/** Stands for "the internet" where a route is expected: what exit routes lead to. */
const INTERNET = 'internet';

interface NodeFacts {
  name: string;
  /** As given, to re-derive the facts when the user or its email changes. */
  input: TailnetNode;
  /** Registration order: among routers of one prefix the first is primary unless told otherwise. */
  order: number;
  user?: TailnetUser;
  tagged: boolean;
  tags: ReadonlySet<string>;
  addrs: Addr[];
  /** `addrs` as text (each node's filter names its own addresses). */
  addrText: string[];
  /**
   * `addrText` as a source key's part (see sourceText), made once per node: a policy change at
   * 10,000 nodes joined every member's addresses again for each key, a few times per node.
   */
  addrKey: string;
  addrSet: IPSet;
  /**
   * The addresses by which IP literals and prefixes in the policy name this node: its IPv4
   * address. Its tailnet IPv6 address is not, as in Tailscale's recorded decisions: a grant to a
   * node's IPv6 literal sends that node no rule and makes no peers.
   */
  literalSet: IPSet;
  subnetRoutes: readonly string[];
  subnetSet: IPSet;
  exitRoutes: readonly string[];
  declaredPrimary: ReadonlySet<string>;
  /** Class key: the rules this node is a source and a destination of. */
  sig: string;
  /** Shared by every node of the class (see Sides): never written to. */
  src: ReadonlySet<number>;
  dst: ReadonlySet<number>;
}

/** A class's key and its rules, made once per engine and class rather than once per node. */
interface Sides {
  sig: string;
  src: ReadonlySet<number>;
  dst: ReadonlySet<number>;
}

interface NodeClass {
  members: Set<string>;
  src: ReadonlySet<number>;
  dst: ReadonlySet<number>;
  /** Classes whose members this class's members may see (possibly itself). */
  adjacent: Set<string>;
}

/** A rule's SrcIPs as text, and what they are made of (its key: see sourceText). */
interface SourceText {
  key: string;
  text: string[];
}

interface PerUserState {
  srcByUser: Map<string, Set<string>>;
  dstByUser: Map<string, Set<string>>;
  /** Per user: the SrcIPs of their own nodes (see userSrcText), until one of them comes or goes. */
  srcText: Map<string, SourceText>;
}

function addToIndex(map: Map<string, Set<string>>, key: string, value: string): void {
  const set = map.get(key) ?? new Set<string>();
  set.add(value);
  map.set(key, set);
}

function removeFromIndex(map: Map<string, Set<string>>, key: string, value: string): void {
  const set = map.get(key);
  if (!set) return;
  set.delete(value);
  if (set.size === 0) map.delete(key);
}

export function compilePolicy(
  policy: Policy,
  tailnet: Tailnet,
  options: CompileOptions = {},
): CompiledPolicy {
  const engine = new CompiledPolicy(policy, tailnet.users, options);
  engine.addNodes(Object.entries(tailnet.nodes));
  return engine;
}

export class CompiledPolicy {
  private readonly rules: CompiledRule[];
  private readonly users = new Map<string, TailnetUser>();
  private readonly nodes = new Map<string, NodeFacts>();
  /** Node names by owner: a user's upsert visits their nodes, not every node. */
  private readonly nodesByUser = new Map<string, Set<string>>();
  private nextOrder = 0;
  private readonly classes = new Map<string, NodeClass>();
  /**
   * Every class key met, with its rules: a policy change at 10,000 nodes, on every replica, made
   * two sets and a key for each node, for a handful of classes.
   */
  private readonly sides = new Map<string, Sides>();
  private readonly perUser = new Map<number, PerUserState>();
  /** Per rule: sources matched by identity, whose addresses make up the rule's SrcIPs. */
  private readonly srcIdentity: Set<string>[];
  private readonly srcText = new Map<number, SourceText>();
  /**
   * The previous engine's SrcIPs texts by their key (see withPolicy): a policy change at 10,000
   * nodes spent a third of its filters' time, on every replica, working out again the same sources
   * (each person's devices, every member) in BigInt.
   */
  private carried: ReadonlyMap<string, string[]> = new Map();
  /** Approved subnet prefix to the routers carrying it. */
  private readonly routers = new Map<string, Set<string>>();
  /** Nodes with any approved route, subnet or exit. */
  private readonly routerNames = new Set<string>();
  /**
   * Per class and route: whether its members have traffic for the route, and the via tags that
   * steer it. Both depend only on which rules the class is on, so they never go stale.
   */
  private readonly routeNeeds = new Map<string, { uses: boolean; via: Set<string> | null }>();
  /** Route to its primary router when no via rule steers it; forgotten when its routers change. */
  private readonly primaries = new Map<string, string | undefined>();
  private readonly wildcardSources: IPSet;
  private readonly routeApprovers: { set: IPSet; match: Matcher }[];
  private readonly exitApprovers: Matcher;

  constructor(
    readonly policy: Policy,
    users: TailnetUser[],
    options: CompileOptions = {},
  ) {
    this.rules = compileRules(policy);
    this.srcIdentity = this.rules.map(() => new Set());
    for (const r of this.rules)
      if (r.perUser)
        this.perUser.set(r.id, { srcByUser: new Map(), dstByUser: new Map(), srcText: new Map() });
    for (const u of users) this.users.set(u.name, u);
    this.wildcardSources = options.wildcardSources ?? TAILSCALE_WILDCARD_SOURCES;
    this.routeApprovers = policy.autoApprovers.routes.map((r) => ({
      set: r.set,
      match: matcherOf(r.approvers, policy),
    }));
    this.exitApprovers = matcherOf(policy.autoApprovers.exitNode, policy);
  }

  nodeNames(): string[] {
    return [...this.nodes.keys()];
  }

  /** Adds or replaces a node. */
  upsertNode(name: string, input: TailnetNode | TailnetNodeInput): PolicyChange {
    const node = TailnetNodeSchema.parse(input);
    const old = this.nodes.get(name);
    const next = this.facts(name, old?.order ?? this.nextOrder++, node);
    return this.replace(name, old, next);
  }

  /**
   * Adds or replaces many nodes without working out what changed for the others: for building an
   * engine over a whole tailnet (a new policy, a server starting), where everyone is decided anew.
   */
  addNodes(nodes: Iterable<readonly [string, TailnetNode | TailnetNodeInput]>): void {
    this.addCheckedNodes(
      (function* () {
        for (const [name, input] of nodes) yield [name, TailnetNodeSchema.parse(input)] as const;
      })(),
    );
  }

  /**
   * addNodes for nodes already in the engine's shape, defaults filled in (control's own records, see
   * policyNode): not checked again. A first policy at 10,000 nodes spent 40% of its engine's build in
   * the schema's checks of nodes control had made itself.
   */
  addCheckedNodes(nodes: Iterable<readonly [string, TailnetNode]>): void {
    for (const [name, node] of nodes) {
      const old = this.nodes.get(name);
      if (old) this.detach(old);
      this.attach(this.facts(name, old?.order ?? this.nextOrder++, node));
    }
  }

  removeNode(name: string): PolicyChange {
    return this.replace(name, this.nodes.get(name), undefined);
  }

  /** Adds or replaces a user: an email change can move their nodes in and out of rules. */
  upsertUser(user: TailnetUser): PolicyChange {
    this.users.set(user.name, user);
    const change: PolicyChange = { peers: new Map(), filters: new Set(), routes: new Set() };
    // A copy: replacing a node takes it out of the index and puts it back.
    for (const name of [...(this.nodesByUser.get(user.name) ?? [])]) {
      const n = this.nodes.get(name) as NodeFacts;
      mergeChange(change, this.replace(n.name, n, this.facts(n.name, n.order, n.input)));
    }
    return change;
  }

  forNode(name: string): NodePolicy {
    return {
      packetFilter: this.packetFilter(name),
      peers: this.peers(name),
      peerRoutes: this.peerRoutes(name),
    };
  }

  all(): Record<string, NodePolicy> {
    return Object.fromEntries(this.nodeNames().map((n) => [n, this.forNode(n)]));
  }

  peers(name: string): string[] {
    return [...this.peerSet(this.node(name))].sort();
  }

  /** `peers`, unsorted: what control iterates to build a netmap. */
  visiblePeers(name: string): Set<string> {
    return this.peerSet(this.node(name));
  }

  /**
   * `visiblePeers` one at a time, each once, without building the set: a mass reconnect lists every
   * node's peers (a shared server's are the whole tailnet), and the sets were most of its garbage.
   * Valid while the engine does not change.
   */
  *eachVisiblePeer(name: string): Iterable<string> {
    const v = this.node(name);
    const adjacent = this.classes.get(v.sig)?.adjacent ?? new Set<string>();
    for (const sig of adjacent) {
      for (const m of this.classes.get(sig)?.members ?? []) if (m !== name) yield m;
    }
    // autogroup:self peers not already listed through their class.
    for (const m of this.selfPeers(v)) if (m !== name && !adjacent.has(this.node(m).sig)) yield m;
  }

  /**
   * Whether `name` may see a given peer, one peer at a time (no peer set is built). Valid until a
   * change lists `name` in its `peers`.
   */
  canSee(name: string): (peer: string) => boolean {
    const v = this.node(name);
    const adjacent = this.classes.get(v.sig)?.adjacent ?? new Set<string>();
    // Worked out at the first question that needs it: a policy change decides every node's
    // visibility, and most are then asked nothing.
    let self: Set<string> | undefined;
    return (peer) => {
      if (peer === name) return false;
      const p = this.nodes.get(peer);
      if (p === undefined) return false;
      if (adjacent.has(p.sig)) return true;
      self ??= this.selfPeers(v);
      return self.has(peer);
    };
  }

  /**
   * `name`'s class, when every member of it sees the same peers with the same routes (the member
   * itself aside): its key (the class's rules), and whether the class sees a node (its own members
   * included). Undefined when what it sees is its own: autogroup:self peers (an untagged node on a
   * self rule), or routes it is sent that depend on routes of its own (a router learns which router
   * of its own prefixes is primary, and is not sent its own). Valid while the engine does not change.
   */
  sharedClass(name: string): { key: string; canSee: (peer: string) => boolean } | undefined {
    const v = this.node(name);
    if (v.subnetRoutes.length > 0 || v.exitRoutes.length > 0) return undefined;
    if (!v.tagged && v.user !== undefined) {
      for (const r of this.perUser.keys()) if (v.src.has(r) || v.dst.has(r)) return undefined;
    }
    const adjacent = this.classes.get(v.sig)?.adjacent ?? new Set<string>();
    return {
      key: v.sig,
      canSee: (peer) => {
        const p = this.nodes.get(peer);
        return p !== undefined && adjacent.has(p.sig);
      },
    };
  }

  hasNode(name: string): boolean {
    return this.nodes.has(name);
  }

  /**
   * Nodes whose peers differ from what `before`, another policy's engine over the same nodes, gave
   * them: what a policy change must send peers to. Nodes on the same classes under both policies
   * share their peers but for autogroup:self, so the work is per pair of classes, not per node.
   */
  peersChangedFrom(before: CompiledPolicy): Set<string> {
    const out = new Set<string>();
    // By class before, then class now: no key is made per node.
    const groups = new Map<string, Map<string, string[]>>();
    for (const [name, v] of this.nodes) {
      const old = before.nodes.get(name);
      if (old === undefined) {
        out.add(name);
        continue;
      }
      let now = groups.get(old.sig);
      if (now === undefined) {
        now = new Map();
        groups.set(old.sig, now);
      }
      const group = now.get(v.sig);
      if (group) group.push(name);
      else now.set(v.sig, [name]);
    }
    const selfRules = this.perUser.size > 0 || before.perUser.size > 0;
    for (const names of [...groups.values()].flatMap((now) => [...now.values()])) {
      const rep = names[0] as string;
      if (!sameSet(before.classPeers(before.node(rep)), this.classPeers(this.node(rep)))) {
        // Most likely all moved, but a class that stops seeing itself leaves a lone member's peers
        // as they were: compare node by node.
        for (const n of names) {
          if (!sameSet(before.peerSet(before.node(n)), this.peerSet(this.node(n)))) out.add(n);
        }
        continue;
      }
      if (!selfRules) continue;
      // autogroup:self peers are the same for every node of one user on one class (its own
      // included): compared once per user, not per node (every replica does this for every node).
      const selfSame = new Map<string | undefined, boolean>();
      for (const n of names) {
        const [was, is] = [before.node(n), this.node(n)];
        const user = is.user?.name;
        let same = was.user?.name === user ? selfSame.get(user) : undefined;
        if (same === undefined) {
          same = sameSet(before.selfPeers(was), this.selfPeers(is));
          if (was.user?.name === user) selfSame.set(user, same);
        }
        if (same) continue;
        if (!sameSet(before.peerSet(was), this.peerSet(is))) out.add(n);
      }
    }
    return out;
  }

  /**
   * Nodes that do not see every other node: what a policy set over allow-all, or removed for it,
   * must send peers to. A node sees everyone when its class sees every class, its own included.
   */
  peersNotAll(): Set<string> {
    const out = new Set<string>();
    const sigs = [...this.classes.keys()];
    for (const c of this.classes.values()) {
      if (!sigs.every((sig) => c.adjacent.has(sig))) for (const m of c.members) out.add(m);
    }
    return out;
  }

  packetFilter(name: string): FilterRule[] {
    return this.filterFor(this.node(name));
  }

  peerRoutes(name: string): Record<string, string[]> {
    const v = this.node(name);
    const adjacent = this.classes.get(v.sig)?.adjacent ?? new Set<string>();
    const self = this.selfPeers(v);
    const out: Record<string, string[]> = {};
    for (const router of this.routerNames) {
      const p = this.node(router);
      if (p.name === v.name || !(adjacent.has(p.sig) || self.has(p.name))) continue;
      const routes = this.routesVia(v, p);
      if (routes.length > 0) out[p.name] = routes;
    }
    return out;
  }

  /**
   * The routes a node with these facts is approved for: those it advertises that an admin approved
   * (`approvedRoutes`) or autoApprovers cover. Needs no node in the engine (control asks before
   * telling the engine of a change).
   */
  approvedRoutesOf(input: TailnetNode | TailnetNodeInput): string[] {
    const node = TailnetNodeSchema.parse(input);
    const tagged = node.tags.length > 0;
    const user = tagged || !node.user ? undefined : (this.users.get(node.user) ?? { name: node.user });
    const identity = { tagged, tags: new Set(node.tags), ...(user ? { user } : {}) };
    const approved = new Set(node.approvedRoutes.map((r) => formatPrefix(prefixOf(r))));
    const advertised = [...new Set(node.advertisedRoutes.map((r) => formatPrefix(prefixOf(r))))];
    return advertised.filter((r) => approved.has(r) || this.autoApproved(r, identity));
  }

  private node(name: string): NodeFacts {
    const v = this.nodes.get(name);
    if (!v) throw new Error(`no node named "${name}" in the tailnet`);
    return v;
  }

  // --- node facts -------------------------------------------------------------------------

  /**
   * This engine's tailnet under another policy: a new engine over the same users and nodes, in the
   * same registration order. What does not depend on the policy (the checked node, its addresses)
   * is taken over rather than parsed again: a policy change at 10,000 nodes spent most of its
   * rebuild checking and parsing nodes that had not changed.
   */
  withPolicy(policy: Policy): CompiledPolicy {
    const next = new CompiledPolicy(policy, [...this.users.values()], {
      wildcardSources: this.wildcardSources,
    });
    next.nextOrder = this.nextOrder;
    for (const old of this.nodes.values()) next.attach(next.facts(old.name, old.order, old.input, old));
    // Only what is still valid here (a node change forgets what it touches), so no stale text is kept.
    const carried = new Map<string, string[]>();
    for (const { key, text } of this.srcText.values()) carried.set(key, text);
    for (const st of this.perUser.values())
      for (const { key, text } of st.srcText.values()) carried.set(key, text);
    next.carried = carried;
    return next;
  }

  private facts(
    name: string,
    order: number,
    node: TailnetNode,
    /** The node's facts in another engine, for what does not depend on the policy (the same input gives the same). */
    same?: Pick<NodeFacts, 'tags' | 'addrs' | 'addrText' | 'addrKey' | 'addrSet' | 'literalSet'>,
  ): NodeFacts {
    const addrs = same?.addrs ?? [node.ipv4, node.ipv6].flatMap((s) => (s ? [parseAddr(s) as Addr] : []));
    const tagged = node.tags.length > 0;
    const user = tagged || !node.user ? undefined : (this.users.get(node.user) ?? { name: node.user });
    const tags = same?.tags ?? new Set(node.tags);
    const addrText = same?.addrText ?? addrs.map(formatAddr);
    // Most nodes route nothing: a policy change at 10,000 nodes, on every replica, spent a third of
    // its rebuild making their empty route sets anew.
    let routes: readonly string[] = NO_ROUTES;
    if (node.advertisedRoutes.length > 0) {
      const approved = new Set(node.approvedRoutes.map((r) => formatPrefix(prefixOf(r))));
      const advertised = [...new Set(node.advertisedRoutes.map((r) => formatPrefix(prefixOf(r))))];
      const identity = user ? { tagged, tags, user } : { tagged, tags };
      routes = advertised.filter((r) => approved.has(r) || this.autoApproved(r, identity));
    }
    const subnetRoutes = routes.length === 0 ? NO_ROUTES : routes.filter((r) => !EXIT_ROUTES.has(r));
    const primaries = node.primaryRoutes ?? NO_ROUTES;
    const facts: NodeFacts = {
      name,
      input: node,
      order,
      tagged,
      tags,
      addrs,
      addrText,
      addrKey: same?.addrKey ?? ` ${addrText.join(',')}`,
      addrSet: same?.addrSet ?? IPSet.fromAddrs(addrs),
      literalSet: same?.literalSet ?? IPSet.fromAddrs(addrs.filter((a) => a.family === 4)),
      subnetRoutes,
      subnetSet: subnetRoutes.length === 0 ? IPSet.EMPTY : setOf(subnetRoutes),
      exitRoutes: routes.length === 0 ? NO_ROUTES : routes.filter((r) => EXIT_ROUTES.has(r)),
      declaredPrimary:
        primaries.length === 0 ? NO_PRIMARIES : new Set(primaries.map((r) => formatPrefix(prefixOf(r)))),
      sig: '',
      src: NO_RULES,
      dst: NO_RULES,
    };
    if (user) facts.user = user;
    let src = '';
    let dst = '';
    for (const r of this.rules) {
      if (this.inSrc(r, facts)) src += src === '' ? `${r.id}` : `,${r.id}`;
      if (this.inDst(r, facts)) dst += dst === '' ? `${r.id}` : `,${r.id}`;
    }
    const sig = `${src}|${dst}`;
    let sides = this.sides.get(sig);
    if (sides === undefined) {
      const ids = (list: string) => new Set(list === '' ? [] : list.split(',').map(Number));
      sides = { sig, src: ids(src), dst: ids(dst) };
      this.sides.set(sig, sides);
    }
    facts.sig = sides.sig;
    facts.src = sides.src;
    facts.dst = sides.dst;
    return facts;
  }

  /**
   * autoApprovers: an exit route needs `exitNode`; a subnet route needs a `routes` entry that
   * contains it (as Tailscale: a 0.0.0.0/0 entry under `routes` does not approve exit nodes).
   */
  private autoApproved(route: string, n: Pick<NodeFacts, 'tagged' | 'tags' | 'user'>): boolean {
    if (EXIT_ROUTES.has(route)) return identityMatch(this.exitApprovers, n);
    const set = setOf([route]);
    return this.routeApprovers.some((a) => a.set.intersect(set).equals(set) && identityMatch(a.match, n));
  }

  // --- membership -------------------------------------------------------------------------

  private inSrc(r: CompiledRule, n: NodeFacts): boolean {
    if (r.perUser && (n.tagged || !n.user)) return false;
    return sideMatch(r.src, n, false);
  }

  private inDst(r: CompiledRule, n: NodeFacts): boolean {
    if (r.perUser) return !n.tagged && n.user !== undefined;
    if (r.kind === 'via') {
      if (!r.viaTags.some((t) => n.tags.has(t))) return false;
      return r.dst.prefixes.overlaps(n.subnetSet) || (r.dst.internet && n.exitRoutes.length > 0);
    }
    if (r.kind === 'cap') {
      return r.dst.wildcard || identityMatch(r.dst, n) || r.dst.prefixes.overlaps(n.literalSet);
    }
    return sideMatch(r.dst, n, true);
  }

  // --- peers ------------------------------------------------------------------------------

  /** Classes see each other through rules other than autogroup:self ones (those relate one user). */
  private adjacent(a: Pick<NodeClass, 'src' | 'dst'>, b: Pick<NodeClass, 'src' | 'dst'>): boolean {
    for (const r of a.src) if (b.dst.has(r) && !this.perUser.has(r)) return true;
    for (const r of b.src) if (a.dst.has(r) && !this.perUser.has(r)) return true;
    return false;
  }

  private joinClass(n: NodeFacts): void {
    let c = this.classes.get(n.sig);
    if (!c) {
      c = { members: new Set(), src: n.src, dst: n.dst, adjacent: new Set() };
      this.classes.set(n.sig, c);
      for (const [sig, other] of this.classes) {
        if (!this.adjacent(c, other)) continue;
        c.adjacent.add(sig);
        other.adjacent.add(n.sig);
      }
    }
    c.members.add(n.name);
  }

  private leaveClass(n: NodeFacts): void {
    const c = this.classes.get(n.sig);
    if (!c) return;
    c.members.delete(n.name);
    if (c.members.size > 0) return;
    this.classes.delete(n.sig);
    for (const sig of c.adjacent) this.classes.get(sig)?.adjacent.delete(n.sig);
    for (const key of this.routeNeeds.keys()) if (key.startsWith(`${n.sig} `)) this.routeNeeds.delete(key);
  }

  private peerSet(v: NodeFacts): Set<string> {
    const out = this.classPeers(v);
    for (const m of this.selfPeers(v)) out.add(m);
    out.delete(v.name);
    return out;
  }

  /** Members of the classes `v`'s class sees (its own class too, if it sees itself). */
  private classPeers(v: NodeFacts): Set<string> {
    const out = new Set<string>();
    for (const sig of this.classes.get(v.sig)?.adjacent ?? []) {
      for (const m of this.classes.get(sig)?.members ?? []) out.add(m);
    }
    return out;
  }

  /** autogroup:self: nodes of `v`'s own user on the other side of a self rule. */
  private selfPeers(v: NodeFacts): Set<string> {
    const out = new Set<string>();
    const user = v.user?.name;
    if (user === undefined || v.tagged) return out;
    for (const r of this.rules) {
      const st = this.perUser.get(r.id);
      if (!st) continue;
      if (v.src.has(r.id)) for (const m of st.dstByUser.get(user) ?? []) out.add(m);
      if (v.dst.has(r.id)) for (const m of st.srcByUser.get(user) ?? []) out.add(m);
    }
    return out;
  }

  // --- changes ----------------------------------------------------------------------------

  private attach(n: NodeFacts): void {
    this.nodes.set(n.name, n);
    if (n.user !== undefined) addToIndex(this.nodesByUser, n.user.name, n.name);
    this.joinClass(n);
    for (const r of this.rules) {
      const st = this.perUser.get(r.id);
      const user = n.user?.name;
      if (st && user !== undefined) {
        if (n.src.has(r.id)) {
          addToIndex(st.srcByUser, user, n.name);
          st.srcText.delete(user);
        }
        if (n.dst.has(r.id)) addToIndex(st.dstByUser, user, n.name);
      }
      if (!r.perUser && n.src.has(r.id) && identityMatch(r.src, n)) {
        (this.srcIdentity[r.id] as Set<string>).add(n.name);
        this.srcText.delete(r.id);
      }
    }
    for (const route of n.subnetRoutes) {
      addToIndex(this.routers, route, n.name);
      this.primaries.delete(route);
    }
    if (n.subnetRoutes.length > 0 || n.exitRoutes.length > 0) this.routerNames.add(n.name);
    this.forgetWildcardSources(n);
  }

  /** `*` as a source includes every approved subnet route: a router's arrival or exit changes it. */
  private forgetWildcardSources(n: NodeFacts): void {
    if (n.subnetRoutes.length === 0) return;
    for (const r of this.rules) if (r.src.wildcard) this.srcText.delete(r.id);
  }

  private detach(n: NodeFacts): void {
    for (const r of this.rules) {
      const st = this.perUser.get(r.id);
      const user = n.user?.name;
      if (st && user !== undefined) {
        removeFromIndex(st.srcByUser, user, n.name);
        removeFromIndex(st.dstByUser, user, n.name);
        st.srcText.delete(user);
      }
      if ((this.srcIdentity[r.id] as Set<string>).delete(n.name)) this.srcText.delete(r.id);
    }
    for (const route of n.subnetRoutes) {
      removeFromIndex(this.routers, route, n.name);
      this.primaries.delete(route);
    }
    this.routerNames.delete(n.name);
    this.forgetWildcardSources(n);
    this.leaveClass(n);
    this.nodes.delete(n.name);
    if (n.user !== undefined) removeFromIndex(this.nodesByUser, n.user.name, n.name);
  }

  /** Nodes whose filter carries `n`'s addresses as sources, or depends on its routes. */
  private filterDependents(n: NodeFacts, out: Set<string>): void {
    for (const r of this.rules) {
      const st = this.perUser.get(r.id);
      if (st) {
        if (n.user && n.src.has(r.id)) for (const m of st.dstByUser.get(n.user.name) ?? []) out.add(m);
        continue;
      }
      const carries = (this.srcIdentity[r.id] as Set<string>).has(n.name);
      const routes = r.src.wildcard && n.subnetRoutes.length > 0;
      if (carries || routes) for (const m of this.membersOf((c) => c.dst.has(r.id))) out.add(m);
    }
  }

  private *membersOf(pick: (c: NodeClass) => boolean): Iterable<string> {
    for (const c of this.classes.values()) if (pick(c)) yield* c.members;
  }

  /** Nodes whose peerRoutes can depend on `n`: its peers, and everyone who sees a router of its prefixes. */
  private routeDependents(n: NodeFacts, out: Set<string>): void {
    if (n.subnetRoutes.length === 0 && n.exitRoutes.length === 0) return;
    for (const p of this.peerSet(n)) out.add(p);
    for (const route of n.subnetRoutes) {
      for (const router of this.routers.get(route) ?? []) {
        out.add(router);
        for (const p of this.peerSet(this.node(router))) out.add(p);
      }
    }
  }

  private replace(name: string, old: NodeFacts | undefined, next: NodeFacts | undefined): PolicyChange {
    const change: PolicyChange = { peers: new Map(), filters: new Set([name]), routes: new Set([name]) };
    const before = old ? this.peerSet(old) : new Set<string>();
    if (old) {
      this.filterDependents(old, change.filters);
      this.routeDependents(old, change.routes);
      this.detach(old);
    }
    if (next) {
      this.attach(next);
      this.filterDependents(next, change.filters);
      this.routeDependents(next, change.routes);
    } else {
      change.filters.delete(name);
      change.routes.delete(name);
    }
    const after = next ? this.peerSet(next) : new Set<string>();
    const added = [...after].filter((p) => !before.has(p));
    const removed = [...before].filter((p) => !after.has(p));
    if (next) change.peers.set(name, { added, removed });
    for (const p of added) change.peers.set(p, { added: [name], removed: [] });
    for (const p of removed) change.peers.set(p, { added: [], removed: [name] });
    // Which routes a node is sent depends on whom it may see.
    for (const p of [...added, ...removed]) change.routes.add(p);
    return change;
  }

  // --- packet filter ----------------------------------------------------------------------

  private ruleSrcText(r: CompiledRule): string[] {
    const cached = this.srcText.get(r.id);
    if (cached) return cached.text;
    if (r.src.dangerAll) return ['*'];
    const prefixes = r.src.prefixes.toStrings().join(',');
    const source = r.src.wildcard
      ? this.sourceText(
          this.srcIdentity[r.id] as Set<string>,
          `${prefixes} * ${[...this.routers.keys()].join(',')}`,
          () => [r.src.prefixes, this.wildcardSources, setOf(this.routers.keys())],
        )
      : this.sourceText(this.srcIdentity[r.id] as Set<string>, prefixes, () => [r.src.prefixes]);
    this.srcText.set(r.id, source);
    return source.text;
  }

  /** autogroup:self: the sources are the destination user's own nodes that the rule admits. */
  private userSrcText(r: CompiledRule, user: string): string[] {
    const st = this.perUser.get(r.id);
    const cached = st?.srcText.get(user);
    if (cached) return cached.text;
    const source = this.sourceText(st?.srcByUser.get(user) ?? [], '', () => []);
    // Each of the user's nodes asks the same: worked out once per user (a policy change asks all).
    st?.srcText.set(user, source);
    return source.text;
  }

  /**
   * The union of `members`' addresses and `more` as SrcIPs text, keyed by what makes it up:
   * `moreKey` (standing for `more`) and each member's addresses, so a key names one text whatever
   * the engine. The previous engine's text for the key is taken over (see `carried`).
   */
  private sourceText(members: Iterable<string>, moreKey: string, more: () => IPSet[]): SourceText {
    const facts = [...members].map((m) => this.node(m));
    let key = moreKey;
    for (const n of facts) key += n.addrKey;
    const text =
      this.carried.get(key) ?? IPSet.unionAll([...more(), ...facts.map((n) => n.addrSet)]).toStrings();
    return { key, text };
  }

  private filterFor(v: NodeFacts): FilterRule[] {
    const out: FilterRule[] = [];
    const own = v.addrText;
    // Only a destination with prefixes needs the node's address space: a policy change at 10,000
    // nodes spent a tenth of its filters making it for every node.
    let space: IPSet | undefined;
    /** The parts of a destination's prefixes that reach into `within`, as written. */
    const touching = (set: IPSet, within: IPSet) =>
      IPSet.fromRanges(set.ranges().filter((x) => IPSet.fromRanges([x]).overlaps(within))).toStrings();
    for (const r of this.rules) {
      if (!v.dst.has(r.id)) continue;
      const srcIPs = r.perUser ? this.userSrcText(r, v.user?.name ?? '') : this.ruleSrcText(r);
      if (srcIPs.length === 0) continue;
      if (r.kind === 'cap') {
        const whole = r.perUser || r.dst.wildcard || identityMatch(r.dst, v);
        const dsts = whole ? v.addrSet : v.literalSet.intersect(r.dst.prefixes);
        out.push({
          SrcIPs: srcIPs,
          CapGrant: [{ Dsts: dsts.prefixes().map(formatPrefix), CapMap: r.capMap }],
        });
        continue;
      }
      const dstPorts: DstPort[] = [];
      for (const t of r.targets) {
        if (r.kind === 'via') {
          const internet = t.match.internet && v.exitRoutes.length > 0 ? THE_INTERNET : [];
          pushPorts(dstPorts, [...internet, ...touching(t.match.prefixes, v.subnetSet)], t.ports);
        } else if (r.perUser) pushPorts(dstPorts, own, t.ports);
        else if (t.match.wildcard) pushPorts(dstPorts, WILDCARD_IP, t.ports);
        else {
          const ips = identityMatch(t.match, v) ? [...own] : [];
          // An exit node forwards to the internet what such a rule allows (as Tailscale sends them).
          if (t.match.internet && v.exitRoutes.length > 0) ips.push(...THE_INTERNET);
          if (!t.match.prefixes.isEmpty) {
            space ??= v.literalSet.union(v.subnetSet);
            ips.push(...touching(t.match.prefixes, space));
          }
          pushPorts(dstPorts, ips, t.ports);
        }
      }
      if (dstPorts.length > 0)
        out.push({ SrcIPs: srcIPs, DstPorts: dstPorts, ...(r.protos ? { IPProto: r.protos } : {}) });
    }
    return out;
  }

  // --- routes -----------------------------------------------------------------------------

  /**
   * The routes `v` sends to peer `p`: the subnets `p` is the chosen router for, and its exit
   * routes, each only when `v` has traffic for it: `v` may send to it, or must answer sources in it.
   */
  private routesVia(v: NodeFacts, p: NodeFacts): string[] {
    const out = p.subnetRoutes.filter(
      (route) =>
        this.chosenRouter(v, route) === p.name &&
        // A standby router of the same prefix always learns which router is primary.
        (v.subnetRoutes.includes(route) || this.needs(v, route).uses),
    );
    if (p.exitRoutes.length > 0 && this.exitAllowed(v, p) && this.needs(v, INTERNET).uses) {
      out.push(...p.exitRoutes);
    }
    return out;
  }

  private needs(v: NodeFacts, route: string): { uses: boolean; via: Set<string> | null } {
    const key = `${v.sig} ${route}`;
    let need = this.routeNeeds.get(key);
    if (!need) {
      const internet = route === INTERNET;
      const set = internet ? IPSet.EMPTY : setOf([route]);
      need = { uses: this.usesRoute(v, set, internet), via: this.steering(v, set, internet) };
      this.routeNeeds.set(key, need);
    }
    return need;
  }

  /**
   * Whether any rule makes `v` send into `set` (a subnet) or to the internet (exit routes):
   * `v` is a source of a rule reaching it, or a destination of a rule whose sources lie in it.
   * `*` as a source covers every approved subnet route but not the internet; under
   * autogroup:self the sources are one user's nodes, never a subnet.
   */
  private usesRoute(v: NodeFacts, set: IPSet, internet: boolean): boolean {
    return this.rules.some((r) => {
      if (v.src.has(r.id) && (r.dst.wildcard || (internet ? r.dst.internet : r.dst.prefixes.overlaps(set)))) {
        return true;
      }
      if (internet || r.perUser || !v.dst.has(r.id)) return false;
      return r.src.wildcard || r.src.dangerAll || r.src.prefixes.overlaps(set);
    });
  }

  /**
   * The via tags steering `v`'s traffic for `set` (or the internet), or null when no via rule
   * applies or a plain rule already opens the same destination, so any router may carry it.
   */
  private steering(v: NodeFacts, set: IPSet, internet: boolean): Set<string> | null {
    const viaTags = new Set<string>();
    for (const r of this.rules) {
      if (r.perUser || !v.src.has(r.id)) continue;
      const touches = r.dst.wildcard || r.dst.prefixes.overlaps(set) || (internet && r.dst.internet);
      if (!touches) continue;
      if (r.kind === 'net') return null;
      if (r.kind === 'via') for (const t of r.viaTags) viaTags.add(t);
    }
    return viaTags.size > 0 ? viaTags : null;
  }

  /** The primary router of `route` for `v`: among the via routers steering it, else all routers. */
  private chosenRouter(v: NodeFacts, route: string): string | undefined {
    const viaTags = this.needs(v, route).via;
    if (!viaTags && this.primaries.has(route)) return this.primaries.get(route);
    const all = [...(this.routers.get(route) ?? [])].map((n) => this.node(n));
    const steered = viaTags ? all.filter((n) => [...viaTags].some((t) => n.tags.has(t))) : [];
    const chosen = electPrimary(route, steered.length > 0 ? steered : all);
    if (!viaTags) this.primaries.set(route, chosen);
    return chosen;
  }

  private exitAllowed(v: NodeFacts, p: NodeFacts): boolean {
    const viaTags = this.needs(v, INTERNET).via;
    return !viaTags || [...viaTags].some((t) => p.tags.has(t));
  }
}

type DstPort = NonNullable<FilterRule['DstPorts']>[number];

/**
 * Adds each of `ips` on each of `ranges` to `out`: in loops, as flatMap's calls and arrays were a
 * third of a policy change's filters at 10,000 nodes (every node's is asked again).
 */
function pushPorts(out: DstPort[], ips: readonly string[], ranges: readonly PortRange[]): void {
  for (const ip of ips) for (const p of ranges) out.push({ IP: ip, Ports: { First: p.first, Last: p.last } });
}

/** Control's elected primary if it declared one, else the first router to have registered. */
function electPrimary(route: string, candidates: NodeFacts[]): string | undefined {
  const declared = candidates.find((n) => n.declaredPrimary.has(route));
  if (declared) return declared.name;
  let first: NodeFacts | undefined;
  for (const n of candidates) if (!first || n.order < first.order) first = n;
  return first?.name;
}

function sameSet(a: ReadonlySet<string>, b: ReadonlySet<string>): boolean {
  if (a.size !== b.size) return false;
  for (const x of a) if (!b.has(x)) return false;
  return true;
}

function mergeChange(into: PolicyChange, from: PolicyChange): void {
  for (const [node, delta] of from.peers) {
    const d = into.peers.get(node) ?? { added: [], removed: [] };
    d.added.push(...delta.added);
    d.removed.push(...delta.removed);
    into.peers.set(node, d);
  }
  for (const f of from.filters) into.filters.add(f);
  for (const r of from.routes) into.routes.add(r);
}

function identityMatch(m: Matcher, n: Pick<NodeFacts, 'tagged' | 'tags' | 'user'>): boolean {
  if (n.tagged) return m.tagged || [...n.tags].some((t) => m.tags.has(t));
  const u = n.user;
  if (!u) return false;
  if (m.member || m.userNames.has(u.name)) return true;
  if (u.groups?.some((g) => m.groups.has(g))) return true;
  const email = u.email?.toLowerCase();
  if (!email) return false;
  return m.emails.has(email) || m.domains.has(email.slice(email.lastIndexOf('@') + 1));
}

/** A node is on a side by identity, by its IPv4 address (see `literalSet`), or by a subnet it routes. */
function sideMatch(m: Matcher, n: NodeFacts, dst: boolean): boolean {
  if (m.wildcard || m.dangerAll || identityMatch(m, n)) return true;
  if (m.prefixes.overlaps(n.literalSet) || m.prefixes.overlaps(n.subnetSet)) return true;
  return dst && m.internet && n.exitRoutes.length > 0;
}
