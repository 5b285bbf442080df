import type { JsonValue } from './hujson.js';
import { IPSet } from './ipset.js';
import type { AliasRef, NetSpec, Policy, PortRange } from './types.js';

// Policy → flat rules over matchers. ACLs become grants (as in Tailscale), groups are expanded
// to their users, and each rule knows which nodes it concerns by identity or address alone, so
// the engine can test one node against it without looking at any other node.

/** Which nodes (or addresses) one side of a rule covers. */
export interface Matcher {
  /** `*`: every node, and as a source also the tailnet's ranges and every approved subnet route. */
  wildcard: boolean;
  /** autogroup:danger-all: every address on the internet as well. */
  dangerAll: boolean;
  emails: Set<string>;
  userNames: Set<string>;
  domains: Set<string>;
  /** Policy groups named, for their members from the identity provider (listed members are expanded). */
  groups: Set<string>;
  tags: Set<string>;
  member: boolean;
  tagged: boolean;
  /** Literal IPs, CIDRs and hosts. */
  prefixes: IPSet;
  /** autogroup:internet: nodes offering approved exit routes. */
  internet: boolean;
}

export interface Target {
  match: Matcher;
  ports: PortRange[];
}

export type RuleKind = 'net' | 'via' | 'cap';

export interface CompiledRule {
  id: number;
  kind: RuleKind;
  /** autogroup:self: both sides are narrowed to one user's untagged nodes. */
  perUser: boolean;
  src: Matcher;
  /** The union of the destinations, for peer visibility. */
  dst: Matcher;
  /** net and via rules: destinations with their ports. */
  targets: Target[];
  protos?: number[];
  /** via rules: only routers carrying one of these tags get the rule and carry the traffic. */
  viaTags: string[];
  /** cap rules: capability name to values (null for a companion capability). */
  capMap?: Record<string, JsonValue[] | null>;
}

/** Capabilities that come with a reversed companion, as Tailscale sends them. */
const COMPANION_CAPS: Record<string, string> = {
  'tailscale.com/cap/drive': 'tailscale.com/cap/drive-sharer',
  'tailscale.com/cap/relay': 'tailscale.com/cap/relay-target',
};

function emptyMatcher(): Matcher {
  return {
    wildcard: false,
    dangerAll: false,
    emails: new Set(),
    userNames: new Set(),
    domains: new Set(),
    groups: new Set(),
    tags: new Set(),
    member: false,
    tagged: false,
    prefixes: IPSet.EMPTY,
    internet: false,
  };
}

function addAlias(m: Matcher, ref: AliasRef, policy: Policy): void {
  const a = ref.alias;
  switch (a.kind) {
    case 'wildcard':
      m.wildcard = true;
      return;
    case 'user':
      if (a.email) m.emails.add(a.email);
      if (a.name) m.userNames.add(a.name);
      return;
    case 'userDomain':
      m.domains.add(a.domain);
      return;
    case 'group':
      m.groups.add(a.name);
      for (const member of policy.groups.get(a.name) ?? []) addAlias(m, member, policy);
      return;
    case 'tag':
      m.tags.add(a.name);
      return;
    case 'host':
    case 'ip':
      m.prefixes = m.prefixes.union(a.set);
      return;
    case 'autogroup':
      if (a.name === 'member') m.member = true;
      else if (a.name === 'tagged') m.tagged = true;
      else if (a.name === 'internet') m.internet = true;
      else if (a.name === 'danger-all') m.dangerAll = true;
      // autogroup:self is a rule shape (perUser), not a set of nodes.
      return;
  }
}

export function matcherOf(refs: AliasRef[], policy: Policy): Matcher {
  const m = emptyMatcher();
  for (const ref of refs) addAlias(m, ref, policy);
  return m;
}

const isSelf = (ref: AliasRef) => ref.alias.kind === 'autogroup' && ref.alias.name === 'self';

function memberMatcher(): Matcher {
  return { ...emptyMatcher(), member: true };
}

/** Groups a grant's `ip` entries by protocol set: one FilterRule per protocol set. */
function byProtocols(specs: NetSpec[]): { protos?: number[]; ports: PortRange[] }[] {
  const groups = new Map<string, { protos?: number[]; ports: PortRange[] }>();
  for (const spec of specs) {
    const key = spec.protos?.join(',') ?? '';
    const g = groups.get(key) ?? { ...(spec.protos ? { protos: spec.protos } : {}), ports: [] };
    g.ports.push(...spec.ports);
    groups.set(key, g);
  }
  return [...groups.values()];
}

export function compileRules(policy: Policy): CompiledRule[] {
  const rules: CompiledRule[] = [];
  const push = (r: Omit<CompiledRule, 'id'>) => rules.push({ ...r, id: rules.length });

  const netRules = (src: AliasRef[], targets: { ref: AliasRef; ports: PortRange[] }[], protos?: number[]) => {
    const srcM = matcherOf(src, policy);
    const others = targets.filter((t) => !isSelf(t.ref));
    if (others.length > 0) {
      const ts = others.map((t) => ({ match: matcherOf([t.ref], policy), ports: t.ports }));
      push({
        kind: 'net',
        perUser: false,
        src: srcM,
        dst: matcherOf(
          others.map((t) => t.ref),
          policy,
        ),
        targets: ts,
        ...(protos ? { protos } : {}),
        viaTags: [],
      });
    }
    const self = targets.filter((t) => isSelf(t.ref));
    if (self.length > 0) {
      push({
        kind: 'net',
        perUser: true,
        src: srcM,
        dst: memberMatcher(),
        targets: [{ match: memberMatcher(), ports: self.flatMap((t) => t.ports) }],
        ...(protos ? { protos } : {}),
        viaTags: [],
      });
    }
  };

  for (const acl of policy.acls) {
    netRules(
      acl.src,
      acl.dst.map((d) => ({ ref: d.alias, ports: d.ports })),
      acl.protos,
    );
  }

  for (const grant of policy.grants) {
    const via = grant.via.map((v) => v.text);
    // An app-only via grant still makes the routers visible and routes through them.
    const specs = grant.ip.length === 0 && via.length > 0 ? [{ ports: [] }] : grant.ip;
    for (const group of byProtocols(specs)) {
      if (via.length > 0) {
        push({
          kind: 'via',
          perUser: false,
          src: matcherOf(grant.src, policy),
          dst: matcherOf(grant.dst, policy),
          targets: grant.dst.map((d) => ({ match: matcherOf([d], policy), ports: group.ports })),
          ...(group.protos ? { protos: group.protos } : {}),
          viaTags: via,
        });
      } else {
        netRules(
          grant.src,
          grant.dst.map((ref) => ({ ref, ports: group.ports })),
          group.protos,
        );
      }
    }
    // Capabilities through a via router are about the subnet, not a node: nothing to send.
    if (grant.app && via.length === 0) capRules(grant.src, grant.dst, grant.app, policy, push);
  }
  return rules;
}

function capRules(
  src: AliasRef[],
  dst: AliasRef[],
  app: Record<string, JsonValue[]>,
  policy: Policy,
  push: (r: Omit<CompiledRule, 'id'>) => void,
): void {
  const srcM = matcherOf(src, policy);
  const shapes: { perUser: boolean; dst: Matcher }[] = [];
  const others = dst.filter((d) => !isSelf(d));
  if (others.length > 0) shapes.push({ perUser: false, dst: matcherOf(others, policy) });
  if (dst.some(isSelf)) shapes.push({ perUser: true, dst: memberMatcher() });
  for (const shape of shapes) {
    const base = { kind: 'cap' as const, perUser: shape.perUser, targets: [], viaTags: [] };
    push({ ...base, src: srcM, dst: shape.dst, capMap: app });
    // A companion runs the other way: the destinations are granted it on the sources.
    for (const name of Object.keys(app).sort()) {
      const companion = COMPANION_CAPS[name];
      if (companion) push({ ...base, src: shape.dst, dst: srcM, capMap: { [companion]: null } });
    }
  }
}
