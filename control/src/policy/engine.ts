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

// The compiled policy over a live tailnet. Every rule keeps the set of nodes on each of its
// sides; a node is tested against a rule by its own identity, addresses and routes alone, so
// adding, changing or removing a node costs one pass over the rules plus its counterparts in
// them, never a pass over all pairs of nodes. Peer visibility is kept as reference counts of
// (rule, source, destination) witnesses, so it too changes by exactly what the node touches.
// Filters and routes for a node are assembled on demand from those sets.

export interface NodePolicy {
  /** What the node's helper must accept from the tunnel; the rest is dropped. */
  packetFilter: FilterRule[];
  /** Names of the nodes this node may see (and only those go into its netmap). */
  peers: string[];
  /** For visible peers that route more than their own addresses: the routes this node sends them. */
  peerRoutes: Record<string, string[]>;
}

export interface EngineOptions {
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

interface NodeFacts {
  name: string;
  /** Registration order: among routers of one prefix the first is primary unless told otherwise. */
  order: number;
  user?: TailnetUser;
  tagged: boolean;
  tags: Set<string>;
  addrs: Addr[];
  addrSet: IPSet;
  subnetRoutes: string[];
  subnetSet: IPSet;
  exitRoutes: string[];
  declaredPrimary: Set<string>;
}

interface RuleState {
  src: Set<string>;
  dst: Set<string>;
  /** Sources matched by identity: their addresses are the rule's SrcIPs. */
  srcIdentity: Set<string>;
  /** autogroup:self rules: members of each side, by user name. */
  srcByUser: Map<string, Set<string>>;
  dstByUser: Map<string, Set<string>>;
  srcText?: string[];
}

function canonical(prefix: string): string {
  return formatPrefix(prefixOf(prefix));
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

export function compilePolicy(policy: Policy, tailnet: Tailnet, options: EngineOptions = {}): PolicyEngine {
  const engine = new PolicyEngine(policy, tailnet.users, options);
  for (const [name, node] of Object.entries(tailnet.nodes)) engine.upsertNode(name, node);
  return engine;
}

export class PolicyEngine {
  private readonly rules: CompiledRule[];
  private readonly state: RuleState[];
  private readonly users = new Map<string, TailnetUser>();
  private readonly nodes = new Map<string, NodeFacts>();
  private nextOrder = 0;
  private readonly peerRefs = new Map<string, Map<string, number>>();
  /** Approved subnet prefix to the routers carrying it. */
  private readonly routers = new Map<string, Set<string>>();
  private readonly wildcardSources: IPSet;
  private readonly routeApprovers: { set: IPSet; match: Matcher }[];
  private readonly exitApprovers: Matcher;

  constructor(
    readonly policy: Policy,
    users: TailnetUser[],
    options: EngineOptions = {},
  ) {
    this.rules = compileRules(policy);
    this.state = this.rules.map(() => ({
      src: new Set(),
      dst: new Set(),
      srcIdentity: new Set(),
      srcByUser: new Map(),
      dstByUser: new Map(),
    }));
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

  /** Adds or replaces a node; returns the nodes whose NodePolicy may have changed. */
  upsertNode(name: string, input: TailnetNode | TailnetNodeInput): Set<string> {
    const node = TailnetNodeSchema.parse(input);
    const affected = new Set<string>([name]);
    const old = this.nodes.get(name);
    const order = old?.order ?? this.nextOrder++;
    if (old) this.detach(old, affected, false);
    this.attach(this.facts(name, order, node), affected, old);
    return affected;
  }

  /** Removes a node; returns the nodes whose NodePolicy may have changed. */
  removeNode(name: string): Set<string> {
    const affected = new Set<string>();
    const old = this.nodes.get(name);
    if (old) this.detach(old, affected, true);
    return affected;
  }

  /** Adds or replaces a user (an email change moves their nodes in and out of rules). */
  upsertUser(user: TailnetUser, nodesOfUser: Record<string, TailnetNode>): Set<string> {
    this.users.set(user.name, user);
    const affected = new Set<string>();
    for (const [name, node] of Object.entries(nodesOfUser)) {
      for (const a of this.upsertNode(name, node)) affected.add(a);
    }
    return affected;
  }

  forNode(name: string): NodePolicy {
    const v = this.nodes.get(name);
    if (!v) throw new Error(`no node named "${name}" in the tailnet`);
    const peers = [...(this.peerRefs.get(name)?.keys() ?? [])].sort();
    const peerRoutes: Record<string, string[]> = {};
    for (const p of peers) {
      const routes = this.routesVia(v, this.nodes.get(p) as NodeFacts);
      if (routes.length > 0) peerRoutes[p] = routes;
    }
    return { packetFilter: this.filterFor(v), peers, peerRoutes };
  }

  all(): Record<string, NodePolicy> {
    return Object.fromEntries(this.nodeNames().map((n) => [n, this.forNode(n)]));
  }

  // --- node facts -------------------------------------------------------------------------

  private facts(name: string, order: number, node: TailnetNode): NodeFacts {
    const addrs = [node.ipv4, node.ipv6].flatMap((s) => (s ? [parseAddr(s) as Addr] : []));
    const tagged = node.tags.length > 0;
    const user = tagged || !node.user ? undefined : (this.users.get(node.user) ?? { name: node.user });
    const partial = { tagged, tags: new Set(node.tags), ...(user ? { user } : {}) };
    const approved = new Set(node.approvedRoutes.map(canonical));
    const active = node.advertisedRoutes.map(canonical).filter((r, i, all) => all.indexOf(r) === i);
    const routes = active.filter((r) => approved.has(r) || this.autoApproved(r, partial));
    const subnetRoutes = routes.filter((r) => !EXIT_ROUTES.has(r));
    return {
      name,
      order,
      ...partial,
      addrs,
      addrSet: IPSet.fromAddrs(addrs),
      subnetRoutes,
      subnetSet: setOf(subnetRoutes),
      exitRoutes: routes.filter((r) => EXIT_ROUTES.has(r)),
      declaredPrimary: new Set((node.primaryRoutes ?? []).map(canonical)),
    };
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
      return r.dst.wildcard || identityMatch(r.dst, n) || r.dst.prefixes.overlaps(n.addrSet);
    }
    return sideMatch(r.dst, n, true);
  }

  private attach(n: NodeFacts, affected: Set<string>, old: NodeFacts | undefined): void {
    this.nodes.set(n.name, n);
    for (const r of this.rules) {
      const st = this.state[r.id] as RuleState;
      const inSrc = this.inSrc(r, n);
      const inDst = this.inDst(r, n);
      const key = n.user?.name ?? '';
      const srcPeers = r.perUser ? st.srcByUser.get(key) : st.src;
      const dstPeers = r.perUser ? st.dstByUser.get(key) : st.dst;
      if (inSrc) for (const y of dstPeers ?? []) if (y !== n.name) this.link(n.name, y, 1, affected);
      if (inDst) for (const y of srcPeers ?? []) if (y !== n.name) this.link(y, n.name, 1, affected);
      if (inSrc) {
        st.src.add(n.name);
        if (r.perUser) addToIndex(st.srcByUser, key, n.name);
        if (identityMatch(r.src, n)) {
          st.srcIdentity.add(n.name);
          st.srcText = undefined;
        }
      }
      if (inDst) {
        st.dst.add(n.name);
        if (r.perUser) addToIndex(st.dstByUser, key, n.name);
      }
    }
    for (const route of n.subnetRoutes) addToIndex(this.routers, route, n.name);
    this.routesChanged(old, n, affected);
  }

  /** `final`: the node leaves; otherwise it is about to be attached again with new facts. */
  private detach(n: NodeFacts, affected: Set<string>, final: boolean): void {
    for (const p of this.peerRefs.get(n.name)?.keys() ?? []) affected.add(p);
    for (const r of this.rules) {
      const st = this.state[r.id] as RuleState;
      const inSrc = st.src.delete(n.name);
      const inDst = st.dst.delete(n.name);
      const key = n.user?.name ?? '';
      if (r.perUser) {
        removeFromIndex(st.srcByUser, key, n.name);
        removeFromIndex(st.dstByUser, key, n.name);
      }
      if (st.srcIdentity.delete(n.name)) st.srcText = undefined;
      const srcPeers = r.perUser ? st.srcByUser.get(key) : st.src;
      const dstPeers = r.perUser ? st.dstByUser.get(key) : st.dst;
      if (inSrc) for (const y of dstPeers ?? []) this.link(n.name, y, -1, affected);
      if (inDst) for (const y of srcPeers ?? []) this.link(y, n.name, -1, affected);
    }
    for (const route of n.subnetRoutes) removeFromIndex(this.routers, route, n.name);
    this.nodes.delete(n.name);
    if (final) this.routesChanged(n, undefined, affected);
  }

  /** Counts one witness that `a` may reach `b`; visibility is symmetric. */
  private link(a: string, b: string, delta: number, affected: Set<string>): void {
    for (const [x, y] of [
      [a, b],
      [b, a],
    ] as const) {
      const refs = this.peerRefs.get(x) ?? new Map<string, number>();
      const count = (refs.get(y) ?? 0) + delta;
      if (count > 0) refs.set(y, count);
      else refs.delete(y);
      if (refs.size > 0) this.peerRefs.set(x, refs);
      else this.peerRefs.delete(x);
      affected.add(x);
    }
  }

  /**
   * Routes reach beyond a node's own rules: `*` as a source includes every approved subnet
   * route, and which router is primary for a prefix is visible to every peer of its routers.
   */
  private routesChanged(
    before: NodeFacts | undefined,
    after: NodeFacts | undefined,
    affected: Set<string>,
  ): void {
    const b = new Set([...(before?.subnetRoutes ?? []), ...(before?.exitRoutes ?? [])]);
    const a = new Set([...(after?.subnetRoutes ?? []), ...(after?.exitRoutes ?? [])]);
    const changed = [...b, ...a].filter((r) => !(a.has(r) && b.has(r)));
    if (changed.length === 0) return;
    for (const r of this.rules) {
      if (r.src.wildcard) {
        (this.state[r.id] as RuleState).srcText = undefined;
        for (const d of (this.state[r.id] as RuleState).dst) affected.add(d);
      }
    }
    const name = (after ?? before)?.name;
    for (const p of name ? (this.peerRefs.get(name)?.keys() ?? []) : []) affected.add(p);
    for (const route of changed) {
      for (const router of this.routers.get(route) ?? []) {
        affected.add(router);
        for (const p of this.peerRefs.get(router)?.keys() ?? []) affected.add(p);
      }
    }
  }

  // --- packet filter ----------------------------------------------------------------------

  private srcText(r: CompiledRule): string[] {
    const st = this.state[r.id] as RuleState;
    if (st.srcText) return st.srcText;
    if (r.src.dangerAll) return ['*'];
    const sets = [
      r.src.prefixes,
      ...[...st.srcIdentity].map((n) => (this.nodes.get(n) as NodeFacts).addrSet),
    ];
    if (r.src.wildcard) {
      sets.push(this.wildcardSources);
      sets.push(setOf(this.routers.keys()));
    }
    st.srcText = IPSet.unionAll(sets).toStrings();
    return st.srcText;
  }

  /** autogroup:self: the sources are the destination user's own nodes that the rule admits. */
  private userSrcText(r: CompiledRule, user: string): string[] {
    const members = (this.state[r.id] as RuleState).srcByUser.get(user) ?? new Set<string>();
    return IPSet.unionAll([...members].map((m) => (this.nodes.get(m) as NodeFacts).addrSet)).toStrings();
  }

  private filterFor(v: NodeFacts): FilterRule[] {
    const out: FilterRule[] = [];
    const own = v.addrs.map(formatAddr);
    const space = v.addrSet.union(v.subnetSet);
    const ports = (ips: string[], rs: PortRange[]) =>
      ips.flatMap((ip) => rs.map((p) => ({ IP: ip, Ports: { First: p.first, Last: p.last } })));
    for (const r of this.rules) {
      if (!(this.state[r.id] as RuleState).dst.has(v.name)) continue;
      const srcIPs = r.perUser ? this.userSrcText(r, v.user?.name ?? '') : this.srcText(r);
      if (srcIPs.length === 0) continue;
      const proto = r.protos ? { IPProto: r.protos } : {};
      if (r.kind === 'cap') {
        const dsts =
          r.perUser || r.dst.wildcard || identityMatch(r.dst, v)
            ? v.addrSet
            : v.addrSet.intersect(r.dst.prefixes);
        const prefixes = dsts.prefixes().map(formatPrefix);
        out.push({ SrcIPs: srcIPs, CapGrant: [{ Dsts: prefixes, CapMap: r.capMap }] });
        continue;
      }
      const dstPorts = r.targets.flatMap((t) => {
        if (r.kind === 'via') {
          const exits = t.match.internet ? v.exitRoutes : [];
          const subnets = t.match.prefixes
            .ranges()
            .filter((x) => IPSet.fromRanges([x]).overlaps(v.subnetSet));
          return ports([...exits, ...IPSet.fromRanges(subnets).toStrings()], t.ports);
        }
        if (r.perUser) return ports(own, t.ports);
        if (t.match.wildcard) return ports(['*'], t.ports);
        const ips = identityMatch(t.match, v) ? [...own] : [];
        const pieces = t.match.prefixes.ranges().filter((x) => IPSet.fromRanges([x]).overlaps(space));
        ips.push(...IPSet.fromRanges(pieces).toStrings());
        return ports(ips, t.ports);
      });
      if (dstPorts.length > 0) out.push({ SrcIPs: srcIPs, DstPorts: dstPorts, ...proto });
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
        (v.subnetRoutes.includes(route) || this.usesRoute(v, setOf([route]), false)),
    );
    if (p.exitRoutes.length > 0 && this.exitAllowed(v, p) && this.usesRoute(v, IPSet.EMPTY, true)) {
      out.push(...p.exitRoutes);
    }
    return out;
  }

  /**
   * Whether any rule makes `v` send into `set` (a subnet) or to the internet (exit routes):
   * `v` is a source of a rule reaching it, or a destination of a rule whose sources lie in it.
   * `*` as a source covers every approved subnet route but not the internet; under
   * autogroup:self the sources are one user's nodes, never a subnet.
   */
  private usesRoute(v: NodeFacts, set: IPSet, internet: boolean): boolean {
    return this.rules.some((r) => {
      const st = this.state[r.id] as RuleState;
      if (st.src.has(v.name)) {
        if (r.dst.wildcard || (internet ? r.dst.internet : r.dst.prefixes.overlaps(set))) return true;
      }
      if (st.dst.has(v.name) && !internet && !r.perUser) {
        if (r.src.wildcard || r.src.dangerAll || r.src.prefixes.overlaps(set)) return true;
      }
      return false;
    });
  }

  /** Via rules steering `v`'s traffic for `set`, unless a plain rule already opens it. */
  private steering(v: NodeFacts, set: IPSet, internet: boolean): Set<string> | null {
    const viaTags = new Set<string>();
    for (const r of this.rules) {
      if (!(this.state[r.id] as RuleState).src.has(v.name)) continue;
      const touches = r.dst.wildcard || r.dst.prefixes.overlaps(set) || (internet && r.dst.internet);
      if (!touches) continue;
      if (r.kind === 'net' && !r.perUser) return null;
      if (r.kind === 'via') for (const t of r.viaTags) viaTags.add(t);
    }
    return viaTags.size > 0 ? viaTags : null;
  }

  private chosenRouter(v: NodeFacts, route: string): string | undefined {
    const all = [...(this.routers.get(route) ?? [])].map((n) => this.nodes.get(n) as NodeFacts);
    const set = setOf([route]);
    const viaTags = this.steering(v, set, false);
    const steered = viaTags ? all.filter((n) => [...viaTags].some((t) => n.tags.has(t))) : [];
    const candidates = steered.length > 0 ? steered : all;
    const declared = candidates.find((n) => n.declaredPrimary.has(route));
    if (declared) return declared.name;
    return candidates.reduce<NodeFacts | undefined>(
      (best, n) => (!best || n.order < best.order ? n : best),
      undefined,
    )?.name;
  }

  private exitAllowed(v: NodeFacts, p: NodeFacts): boolean {
    const viaTags = this.steering(v, IPSet.EMPTY, true);
    return !viaTags || [...viaTags].some((t) => p.tags.has(t));
  }
}

function identityMatch(m: Matcher, n: Pick<NodeFacts, 'tagged' | 'tags' | 'user'>): boolean {
  if (n.tagged) return m.tagged || [...n.tags].some((t) => m.tags.has(t));
  const u = n.user;
  if (!u) return false;
  if (m.member || m.userNames.has(u.name)) return true;
  const email = u.email?.toLowerCase();
  if (!email) return false;
  return m.emails.has(email) || m.domains.has(email.slice(email.lastIndexOf('@') + 1));
}

/** A node is on a side by identity, by its addresses, or by a subnet it routes. */
function sideMatch(m: Matcher, n: NodeFacts, dst: boolean): boolean {
  if (m.wildcard || m.dangerAll || identityMatch(m, n)) return true;
  if (m.prefixes.overlaps(n.addrSet) || m.prefixes.overlaps(n.subnetSet)) return true;
  return dst && m.internet && n.exitRoutes.length > 0;
}
