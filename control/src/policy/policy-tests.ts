import type { Addr } from '@weft/protocol';
import { formatAddr, parseAddr } from '@weft/protocol';
import type { PolicyIssue } from './errors.js';
import type { Tailnet, TailnetUser } from './tailnet.js';
import type { AclRule, Alias, AliasRef, GrantRule, Policy, PolicyTest, PortRange } from './types.js';

// The policy's own `tests`: "this source can (or cannot) reach that destination on that port".
// They are judged on identities, as the rules are written, so a test holds before any device of
// the user or tag exists. Addresses (an IP or host) stand for the node holding them.

const DEFAULT_PROTOS = [6, 17, 1, 58];
const TCP = 6;

/** Who sends or receives in a test: one user, one tag, or one address. */
type Party =
  | { kind: 'user'; user: TailnetUser }
  | { kind: 'tag'; tag: string }
  | { kind: 'addr'; addr: Addr };

interface Rule {
  src: AliasRef[];
  dst: { alias: AliasRef; ports: PortRange[] }[];
  protos: number[];
}

function rulesOf(policy: Policy): Rule[] {
  const fromAcl = (a: AclRule): Rule => ({ src: a.src, dst: a.dst, protos: a.protos ?? DEFAULT_PROTOS });
  const fromGrant = (g: GrantRule): Rule[] =>
    g.ip.map((spec) => ({
      src: g.src,
      dst: g.dst.map((alias) => ({ alias, ports: spec.ports })),
      protos: spec.protos ?? DEFAULT_PROTOS,
    }));
  return [...policy.acls.map(fromAcl), ...policy.grants.flatMap(fromGrant)];
}

class World {
  private readonly byAddr = new Map<string, { user?: TailnetUser; tags: string[] }>();
  private readonly nodes: { user?: TailnetUser; tags: string[]; addrs: Addr[] }[] = [];

  constructor(
    private readonly policy: Policy,
    private readonly tailnet: Tailnet,
  ) {
    for (const node of Object.values(tailnet.nodes)) {
      const user = node.tags.length === 0 ? tailnet.users.find((u) => u.name === node.user) : undefined;
      const addrs = [node.ipv4, node.ipv6].flatMap((s) => (s ? [parseAddr(s) as Addr] : []));
      const entry = { ...(user ? { user } : {}), tags: node.tags, addrs };
      this.nodes.push(entry);
      for (const a of addrs) this.byAddr.set(formatAddr(a), entry);
    }
  }

  usersOf(a: Alias): TailnetUser[] {
    const users = this.tailnet.users;
    if (a.kind === 'user') {
      return users.filter((u) => (a.email ? u.email?.toLowerCase() === a.email : u.name === a.name));
    }
    if (a.kind === 'userDomain') return users.filter((u) => u.email?.toLowerCase().endsWith(`@${a.domain}`));
    if (a.kind === 'group') {
      const listed = (this.policy.groups.get(a.name) ?? []).flatMap((m) => this.usersOf(m.alias));
      const fromProvider = users.filter((u) => u.groups?.includes(a.name) && !listed.includes(u));
      return [...listed, ...fromProvider];
    }
    return [];
  }

  /** The parties a test side stands for: a group is each of its users. */
  parties(ref: AliasRef): Party[] {
    const a = ref.alias;
    if (a.kind === 'tag') return [{ kind: 'tag', tag: a.name }];
    if (a.kind === 'ip' || a.kind === 'host') {
      const [r] = a.set.ranges();
      return r ? [{ kind: 'addr', addr: { family: r.family, value: r.first } }] : [];
    }
    return this.usersOf(a).map((user) => ({ kind: 'user', user }));
  }

  /** The identity behind a party: an address stands for its node's user or tags. */
  private identity(p: Party): { user?: TailnetUser; tags: string[] } | undefined {
    if (p.kind === 'user') return { user: p.user, tags: [] };
    if (p.kind === 'tag') return { tags: [p.tag] };
    return this.byAddr.get(formatAddr(p.addr));
  }

  private addrsOf(p: Party): Addr[] {
    if (p.kind === 'addr') return [p.addr];
    return this.nodes
      .filter((n) =>
        p.kind === 'user' ? n.tags.length === 0 && n.user?.name === p.user.name : n.tags.includes(p.tag),
      )
      .flatMap((n) => n.addrs);
  }

  matches(a: Alias, p: Party, srcParty?: Party): boolean {
    if (a.kind === 'wildcard') return true;
    if (a.kind === 'ip' || a.kind === 'host') {
      const addrs = this.addrsOf(p);
      return addrs.length > 0 && addrs.every((x) => a.set.containsAddr(x));
    }
    const id = this.identity(p);
    if (!id) return false;
    switch (a.kind) {
      case 'tag':
        return id.tags.includes(a.name);
      case 'user':
      case 'userDomain':
      case 'group':
        return id.user !== undefined && this.usersOf(a).some((u) => u.name === id.user?.name);
      case 'autogroup': {
        if (a.name === 'danger-all') return true;
        if (a.name === 'member') return id.tags.length === 0 && id.user !== undefined;
        if (a.name === 'tagged') return id.tags.length > 0;
        if (a.name === 'self') {
          const src = srcParty ? this.identity(srcParty) : undefined;
          return id.user !== undefined && src?.user?.name === id.user.name;
        }
        return false;
      }
    }
  }
}

function allows(world: World, rules: Rule[], src: Party, dst: Party, port: number, proto: number): boolean {
  return rules.some(
    (r) =>
      r.protos.includes(proto) &&
      r.src.some((s) => world.matches(s.alias, src)) &&
      r.dst.some(
        (d) =>
          d.ports.some((p) => p.first <= port && port <= p.last) && world.matches(d.alias.alias, dst, src),
      ),
  );
}

/** Runs the policy's tests; returns one issue per failed expectation. */
export function runPolicyTests(policy: Policy, tailnet: Tailnet): PolicyIssue[] {
  // No tests, nothing to run: building the world reads every node (most of checking a policy
  // against 10,000 nodes, which an admin's `policy set` waits for).
  if (policy.tests.length === 0) return [];
  const world = new World(policy, tailnet);
  const rules = rulesOf(policy);
  const issues: PolicyIssue[] = [];
  for (const test of policy.tests) issues.push(...runTest(world, rules, test));
  const at = (i: PolicyIssue) => (i.pos ? i.pos.line * 1e6 + i.pos.column : 0);
  return issues.sort((a, b) => at(a) - at(b));
}

function runTest(world: World, rules: Rule[], test: PolicyTest): PolicyIssue[] {
  const sources = world.parties(test.src);
  // An unknown user is reported by checkPolicy already; an empty group is worth its own message.
  if (sources.length === 0) {
    if (test.src.alias.kind === 'user') return [];
    return [
      { message: `test failed: src "${test.src.text}" names no user of the tailnet`, pos: test.src.pos },
    ];
  }
  const proto = test.proto ?? TCP;
  const issues: PolicyIssue[] = [];
  for (const [expect, dsts] of [
    [true, test.accept],
    [false, test.deny],
  ] as const) {
    for (const d of dsts) {
      const targets = world.parties(d.alias);
      if (targets.length === 0) continue; // an unknown user, reported by checkPolicy
      const wrong = sources.find((s) =>
        targets.some((t) => allows(world, rules, s, t, d.port, proto) !== expect),
      );
      if (wrong) {
        const who =
          wrong.kind === 'user' && test.src.alias.kind === 'group' ? ` (member ${wrong.user.name})` : '';
        issues.push({
          message: `test failed: "${test.src.text}"${who} ${expect ? 'cannot' : 'can'} reach "${d.alias.text}"${
            test.proto === undefined ? '' : ` over protocol ${proto}`
          }, but the test says it ${expect ? 'should' : 'should not'}`,
          pos: d.alias.pos,
        });
      }
    }
  }
  return issues;
}
