import {
  type AliasScope,
  classifyAlias,
  isGroupName,
  isHostName,
  isTagName,
  parseIPAlias,
  parsePorts,
  parseProto,
  parseProtoPorts,
  type Result,
  splitAliasPorts,
} from './alias.js';
import { PolicyError, type PolicyIssue, type SourcePos } from './errors.js';
import { type JsonEntry, type JsonNode, type JsonValue, parseHuJson, toPlain } from './hujson.js';
import type { IPSet } from './ipset.js';
import type {
  AclRule,
  Alias,
  AliasRef,
  GrantRule,
  NetSpec,
  Policy,
  PolicyTest,
  RouteApprover,
  SshRule,
  TestDestination,
} from './types.js';

// Text → typed Policy. Structure, references and values are all checked here, against the
// file alone; every problem found is reported (not just the first), each with line and column.

const TOP_KEYS = ['groups', 'hosts', 'tagOwners', 'acls', 'grants', 'autoApprovers', 'tests', 'ssh'];
/** Keys Tailscale accepts that Weft does not implement: refused by name rather than ignored. */
const UNSUPPORTED_TAILSCALE_KEYS = [
  'nodeAttrs',
  'postures',
  'defaultSrcPosture',
  'ipsets',
  'sshTests',
  'derpMap',
  'disableIPv4',
  'OneCGNATRoute',
  'randomizeClientPort',
  'attrConfig',
];

/** The only tailscale.com capabilities that a grant may carry; the domain is otherwise reserved. */
const ALLOWED_TAILSCALE_CAPS = new Set([
  'tailscale.com/cap/drive',
  'tailscale.com/cap/relay',
  'tailscale.com/cap/kubernetes',
  'tailscale.com/cap/webui',
  'tailscale.com/cap/tsidp',
]);

const CAP_NAME = /^[a-z0-9.-]+\.[a-z]{2,}\/[A-Za-z0-9._~/-]+$/;

type Side = 'src' | 'dst';

// `null` reads as left out, as Tailscale's policy decoder reads it: an empty list or object.
class Reader {
  readonly issues: PolicyIssue[] = [];

  error(message: string, pos: SourcePos): void {
    this.issues.push({ message, pos });
  }

  object(node: JsonNode, what: string): JsonEntry[] | null {
    if (node.kind === 'object') return node.entries;
    if (node.kind === 'null') return [];
    this.error(`${what} must be an object`, node.pos);
    return null;
  }

  array(node: JsonNode, what: string): JsonNode[] | null {
    if (node.kind === 'array') return node.items;
    if (node.kind === 'null') return [];
    this.error(`${what} must be a list`, node.pos);
    return null;
  }

  string(node: JsonNode, what: string): string | null {
    if (node.kind === 'string') return node.value;
    this.error(`${what} must be a string`, node.pos);
    return null;
  }

  strings(node: JsonNode, what: string): { text: string; pos: SourcePos }[] {
    const items = this.array(node, what) ?? [];
    return items.flatMap((item) => {
      const text = this.string(item, `each entry of ${what}`);
      return text === null ? [] : [{ text, pos: item.pos }];
    });
  }

  /** Splits an object into its known fields, refusing the rest by name. */
  fields(entries: JsonEntry[], allowed: readonly string[], where: string): Map<string, JsonEntry> {
    const out = new Map<string, JsonEntry>();
    for (const e of entries) {
      if (allowed.includes(e.key)) out.set(e.key, e);
      else this.error(`unknown key "${e.key}" in ${where} (allowed: ${allowed.join(', ')})`, e.keyPos);
    }
    return out;
  }

  /** A field that is there and not `null` (which reads as left out). */
  given(fields: Map<string, JsonEntry>, key: string): JsonEntry | undefined {
    const e = fields.get(key);
    return e && e.value.kind !== 'null' ? e : undefined;
  }

  /** `proto`: a protocol name or number; left out, `null` or `""` mean the default set. */
  proto(fields: Map<string, JsonEntry>, what: string): number | undefined {
    const e = this.given(fields, 'proto');
    const text = e ? this.string(e.value, `${what} "proto"`) : null;
    if (!e || text === null || text === '') return undefined;
    return this.take(parseProto(text), e.value.pos, `${what} proto`) ?? undefined;
  }

  required(fields: Map<string, JsonEntry>, key: string, where: string, pos: SourcePos): JsonEntry | null {
    const e = fields.get(key);
    if (!e) this.error(`${where} needs "${key}"`, pos);
    return e ?? null;
  }

  take<T>(r: Result<T>, pos: SourcePos, context?: string): T | null {
    if (r.ok) return r.value;
    this.error(context ? `${context}: ${r.error}` : r.error, pos);
    return null;
  }
}

export function parsePolicy(text: string): Policy {
  const root = parseHuJson(text);
  const r = new Reader();
  const policy: Policy = {
    groups: new Map(),
    hosts: new Map(),
    tagOwners: new Map(),
    acls: [],
    grants: [],
    autoApprovers: { routes: [], exitNode: [] },
    tests: [],
    ssh: [],
  };
  const top = r.object(root, 'the policy');
  if (top === null) throw new PolicyError(r.issues);
  for (const e of top) {
    if (UNSUPPORTED_TAILSCALE_KEYS.includes(e.key)) {
      r.error(`"${e.key}" is a Tailscale policy key that Weft does not support`, e.keyPos);
    }
  }
  const fields = r.fields(
    top.filter((e) => !UNSUPPORTED_TAILSCALE_KEYS.includes(e.key)),
    TOP_KEYS,
    'the policy',
  );

  // Declarations first, so that references resolve whatever order the sections come in.
  const hostsNode = fields.get('hosts')?.value;
  if (hostsNode) readHosts(r, hostsNode, policy);
  const groupsNode = fields.get('groups')?.value;
  const tagOwnersNode = fields.get('tagOwners')?.value;
  const scope: AliasScope = {
    hosts: policy.hosts,
    groups: new Set(declaredKeys(r, groupsNode, 'groups', isGroupName, 'group name (group:name)')),
    tags: new Set(declaredKeys(r, tagOwnersNode, 'tagOwners', isTagName, 'tag name (tag:name)')),
  };
  if (groupsNode) readGroups(r, groupsNode, scope, policy);
  if (tagOwnersNode) readTagOwners(r, tagOwnersNode, scope, policy);

  const section = (key: string, read: (node: JsonNode) => void) => {
    const node = fields.get(key)?.value;
    if (node) read(node);
  };
  section('acls', (n) => {
    for (const item of r.array(n, '"acls"') ?? []) {
      const acl = readAcl(r, item, scope);
      if (acl) policy.acls.push(acl);
    }
  });
  section('grants', (n) => {
    for (const item of r.array(n, '"grants"') ?? []) {
      const grant = readGrant(r, item, scope);
      if (grant) policy.grants.push(grant);
    }
  });
  section('autoApprovers', (n) => readAutoApprovers(r, n, scope, policy));
  section('tests', (n) => {
    for (const item of r.array(n, '"tests"') ?? []) {
      const test = readTest(r, item, scope);
      if (test) policy.tests.push(test);
    }
  });
  section('ssh', (n) => {
    for (const item of r.array(n, '"ssh"') ?? []) {
      const rule = readSsh(r, item, scope);
      if (rule) policy.ssh.push(rule);
    }
  });

  if (r.issues.length > 0) throw new PolicyError(inTextOrder(r.issues));
  return policy;
}

function inTextOrder(issues: PolicyIssue[]): PolicyIssue[] {
  const at = (i: PolicyIssue) => (i.pos ? [i.pos.line, i.pos.column] : [0, 0]);
  return [...issues].sort((a, b) => {
    const [la, ca] = at(a) as [number, number];
    const [lb, cb] = at(b) as [number, number];
    return la - lb || ca - cb;
  });
}

function declaredKeys(
  r: Reader,
  node: JsonNode | undefined,
  what: string,
  valid: (key: string) => boolean,
  expected: string,
): string[] {
  if (!node) return [];
  const entries = r.object(node, `"${what}"`) ?? [];
  for (const e of entries)
    if (!valid(e.key)) r.error(`"${e.key}" in "${what}" is not a valid ${expected}`, e.keyPos);
  return entries.map((e) => e.key);
}

function readHosts(r: Reader, node: JsonNode, policy: Policy): void {
  for (const e of r.object(node, '"hosts"') ?? []) {
    if (!isHostName(e.key)) {
      r.error(
        `host name "${e.key}" must start with a letter and hold only letters, digits, ".", "_", "-"`,
        e.keyPos,
      );
      continue;
    }
    const value = r.string(e.value, `host "${e.key}"`);
    if (value === null) continue;
    const set = r.take(parseIPAlias(value), e.value.pos, `host "${e.key}"`);
    if (set) policy.hosts.set(e.key, set);
  }
}

function aliasRef(
  r: Reader,
  text: string,
  pos: SourcePos,
  scope: AliasScope,
  context: string,
): AliasRef | null {
  const alias = r.take(classifyAlias(text, scope), pos, context);
  return alias ? { alias, text, pos } : null;
}

/** Users, groups and tags: what may own a tag or approve a route. */
function readOwners(r: Reader, node: JsonNode, scope: AliasScope, what: string): AliasRef[] {
  return r.strings(node, what).flatMap(({ text, pos }) => {
    const ref = aliasRef(r, text, pos, scope, what);
    if (!ref) return [];
    const kind = ref.alias.kind;
    if (kind === 'user' || kind === 'group' || kind === 'tag') return [ref];
    if (ref.alias.kind === 'autogroup' && ref.alias.name === 'member') return [ref];
    r.error(`${what}: "${text}" cannot be an owner or approver (use a user, group or tag)`, pos);
    return [];
  });
}

function readGroups(r: Reader, node: JsonNode, scope: AliasScope, policy: Policy): void {
  for (const e of r.object(node, '"groups"') ?? []) {
    const members = r.strings(e.value, `group "${e.key}"`).flatMap(({ text, pos }) => {
      const ref = aliasRef(r, text, pos, scope, `group "${e.key}"`);
      if (ref && ref.alias.kind !== 'user') {
        r.error(`group "${e.key}": "${text}" is not a user; groups hold users only`, pos);
        return [];
      }
      return ref ? [ref] : [];
    });
    policy.groups.set(e.key, members);
  }
}

function readTagOwners(r: Reader, node: JsonNode, scope: AliasScope, policy: Policy): void {
  for (const e of r.object(node, '"tagOwners"') ?? []) {
    policy.tagOwners.set(e.key, readOwners(r, e.value, scope, `owners of "${e.key}"`));
  }
}

/** Where each alias may appear; Tailscale's refusals, with our wording. */
function checkSide(r: Reader, ref: AliasRef, side: Side, grant: boolean): boolean {
  const a = ref.alias;
  if (a.kind === 'autogroup') {
    if (side === 'src' && (a.name === 'self' || a.name === 'internet')) {
      r.error(`"${ref.text}" is not valid on the src side of a rule`, ref.pos);
      return false;
    }
    if (side === 'dst' && a.name === 'danger-all') {
      r.error('"autogroup:danger-all" cannot be used as a dst (it would match every address)', ref.pos);
      return false;
    }
  }
  if (grant && side === 'dst' && a.kind === 'ip' && a.set.ranges().some((x) => x.first === 0n && isFull(x))) {
    r.error(`dst "${ref.text}": to allow all IP addresses, use "*" or "autogroup:internet"`, ref.pos);
    return false;
  }
  return true;
}

function isFull(x: { family: 4 | 6; last: bigint }): boolean {
  return x.last === (x.family === 4 ? (1n << 32n) - 1n : (1n << 128n) - 1n);
}

function readAliases(r: Reader, node: JsonNode, scope: AliasScope, side: Side, grant: boolean): AliasRef[] {
  return r.strings(node, `"${side}"`).flatMap(({ text, pos }) => {
    const ref = aliasRef(r, text, pos, scope, side);
    return ref && checkSide(r, ref, side, grant) ? [ref] : [];
  });
}

/**
 * autogroup:self means "the destination's own user", so every source must be something that
 * has a user: users, groups, autogroup:member (and, in ACLs only, `*`, read as every user).
 */
function checkSelf(r: Reader, src: AliasRef[], dst: AliasRef[], allowWildcard: boolean): void {
  const self = dst.find((d) => d.alias.kind === 'autogroup' && d.alias.name === 'self');
  if (!self) return;
  const bad = src.find((s) => {
    const a = s.alias;
    if (a.kind === 'user' || a.kind === 'group' || a.kind === 'userDomain') return false;
    if (a.kind === 'autogroup' && a.name === 'member') return false;
    return !(a.kind === 'wildcard' && allowWildcard);
  });
  if (bad) {
    r.error(
      `autogroup:self can only be used with users, groups or autogroup:member as sources, not "${bad.text}"`,
      bad.pos,
    );
  }
}

function readAcl(r: Reader, node: JsonNode, scope: AliasScope): AclRule | null {
  const entries = r.object(node, 'an ACL');
  if (!entries) return null;
  const f = r.fields(entries, ['action', 'src', 'dst', 'proto'], 'an ACL');
  const action = r.required(f, 'action', 'an ACL', node.pos);
  const srcE = r.required(f, 'src', 'an ACL', node.pos);
  const dstE = r.required(f, 'dst', 'an ACL', node.pos);
  if (action) {
    const value = r.string(action.value, '"action"');
    if (value !== null && value !== 'accept') {
      r.error(
        `action "${value}" is not supported: rules only accept, everything else is denied`,
        action.value.pos,
      );
    }
  }
  const proto = r.proto(f, 'ACL');
  const protos = proto === undefined ? undefined : [proto];
  const src = srcE ? readAliases(r, srcE.value, scope, 'src', false) : [];
  const dst: AclRule['dst'] = [];
  for (const { text, pos } of dstE ? r.strings(dstE.value, '"dst"') : []) {
    const split = r.take(splitAliasPorts(text), pos, 'dst');
    if (!split) continue;
    const ports = r.take(parsePorts(split.ports), pos, `dst "${text}"`);
    const ref = aliasRef(r, split.alias, pos, scope, `dst "${text}"`);
    if (ports && ref && checkSide(r, ref, 'dst', false)) dst.push({ alias: { ...ref, text }, ports });
  }
  checkSelf(
    r,
    src,
    dst.map((d) => d.alias),
    true,
  );
  return { src, dst, ...(protos ? { protos } : {}), pos: node.pos };
}

function readNetSpec(r: Reader, text: string, pos: SourcePos): NetSpec | null {
  return r.take(parseProtoPorts(text), pos, `ip "${text}"`);
}

function readApp(r: Reader, node: JsonNode): Record<string, JsonValue[]> | undefined {
  const entries = r.object(node, '"app"');
  if (!entries) return undefined;
  const app: Record<string, JsonValue[]> = {};
  for (const e of entries) {
    if (!CAP_NAME.test(e.key)) {
      r.error(`capability name "${e.key}" must look like example.com/cap/name`, e.keyPos);
      continue;
    }
    if (e.key.startsWith('tailscale.com/') && !ALLOWED_TAILSCALE_CAPS.has(e.key)) {
      r.error(`capability "${e.key}": names in the tailscale.com domain are reserved`, e.keyPos);
      continue;
    }
    const values = r.array(e.value, `capability "${e.key}"`);
    if (!values) continue;
    for (const v of values) if (v.kind !== 'object') r.error(`values of "${e.key}" must be objects`, v.pos);
    app[e.key] = values.map(toPlain);
  }
  return app;
}

function readGrant(r: Reader, node: JsonNode, scope: AliasScope): GrantRule | null {
  const entries = r.object(node, 'a grant');
  if (!entries) return null;
  const f = r.fields(entries, ['src', 'dst', 'ip', 'app', 'via'], 'a grant');
  const srcE = r.required(f, 'src', 'a grant', node.pos);
  const dstE = r.required(f, 'dst', 'a grant', node.pos);
  const src = srcE ? readAliases(r, srcE.value, scope, 'src', true) : [];
  const dst = dstE ? readAliases(r, dstE.value, scope, 'dst', true) : [];
  const ipE = r.given(f, 'ip');
  const ipTexts = ipE ? r.strings(ipE.value, '"ip"') : [];
  const ip = ipTexts.flatMap(({ text, pos }) => readNetSpec(r, text, pos) ?? []);
  const appE = r.given(f, 'app');
  const app = appE ? readApp(r, appE.value) : undefined;
  const hasApp = appE?.value.kind === 'object' && appE.value.entries.length > 0;
  if (ipTexts.length === 0 && !hasApp) {
    r.error('a grant needs "ip" (network access) or "app" (capabilities); both are empty', node.pos);
  }
  // Capabilities are granted on nodes; the internet has none to grant them on.
  const internet = dst.find((d) => d.alias.kind === 'autogroup' && d.alias.name === 'internet');
  if (hasApp && internet) {
    r.error(
      '"app" capabilities cannot be granted on autogroup:internet (use "ip" for network access)',
      internet.pos,
    );
  }
  const via: AliasRef[] = [];
  const viaE = r.given(f, 'via');
  for (const { text, pos } of viaE ? r.strings(viaE.value, '"via"') : []) {
    if (!text.startsWith('tag:')) {
      r.error(`via "${text}": via can only name tags (the routers to go through)`, pos);
      continue;
    }
    const ref = aliasRef(r, text, pos, scope, 'via');
    if (ref) via.push(ref);
  }
  if (via.length > 0) {
    for (const d of dst) {
      const a = d.alias;
      if (a.kind !== 'ip' && a.kind !== 'host' && !(a.kind === 'autogroup' && a.name === 'internet')) {
        r.error(
          `dst "${d.text}": a grant with via routes to IP prefixes, hosts or autogroup:internet only`,
          d.pos,
        );
      }
    }
  }
  checkSelf(r, src, dst, false);
  return { src, dst, ip, ...(app ? { app } : {}), via, pos: node.pos };
}

function readAutoApprovers(r: Reader, node: JsonNode, scope: AliasScope, policy: Policy): void {
  const entries = r.object(node, '"autoApprovers"');
  if (!entries) return;
  const f = r.fields(entries, ['routes', 'exitNode'], '"autoApprovers"');
  const routes = f.get('routes');
  for (const e of routes ? (r.object(routes.value, '"routes"') ?? []) : []) {
    const set = r.take(parseIPAlias(e.key), e.keyPos, 'autoApprovers route');
    if (!set || !e.key.includes('/')) {
      if (set) r.error(`autoApprovers route "${e.key}" must be a CIDR prefix`, e.keyPos);
      continue;
    }
    const approver: RouteApprover = {
      prefix: e.key,
      set,
      approvers: readOwners(r, e.value, scope, `approvers of "${e.key}"`),
      pos: e.keyPos,
    };
    policy.autoApprovers.routes.push(approver);
  }
  const exit = f.get('exitNode');
  if (exit) policy.autoApprovers.exitNode = readOwners(r, exit.value, scope, 'exitNode approvers');
}

/** Test sources: one identity (user, group, tag) or one address (IP or host). */
function readTestSource(r: Reader, text: string, pos: SourcePos, scope: AliasScope): AliasRef | null {
  const ref = aliasRef(r, text, pos, scope, 'test src');
  if (!ref) return null;
  const a = ref.alias;
  if (a.kind === 'user' || a.kind === 'group' || a.kind === 'tag') return ref;
  if ((a.kind === 'ip' || a.kind === 'host') && singleAddress(a)) return ref;
  r.error(`test src "${text}" must be a user, group, tag, host or single IP address`, pos);
  return null;
}

function singleAddress(a: Alias & { set: IPSet }): boolean {
  const [only, ...rest] = a.set.ranges();
  return only !== undefined && rest.length === 0 && only.first === only.last;
}

function readTestDestination(
  r: Reader,
  text: string,
  pos: SourcePos,
  scope: AliasScope,
): TestDestination | null {
  const split = r.take(splitAliasPorts(text), pos, 'test destination');
  if (!split) return null;
  if (!/^[1-9][0-9]{0,4}$/.test(split.ports) || Number(split.ports) > 65535) {
    r.error(`test destination "${text}": the port must be one number from 1 to 65535`, pos);
    return null;
  }
  if (split.alias.includes('/')) {
    r.error(`test destination "${text}": name one address (an IP without a /prefix, or a host)`, pos);
    return null;
  }
  const ref = aliasRef(r, split.alias, pos, scope, `test destination "${text}"`);
  if (!ref) return null;
  const a = ref.alias;
  const single = (a.kind === 'ip' || a.kind === 'host') && singleAddress(a);
  if (!(a.kind === 'user' || a.kind === 'tag' || single)) {
    r.error(`test destination "${text}" must be a user, tag, host or single IP address with one port`, pos);
    return null;
  }
  return { alias: { ...ref, text }, port: Number(split.ports) };
}

function readTest(r: Reader, node: JsonNode, scope: AliasScope): PolicyTest | null {
  const entries = r.object(node, 'a test');
  if (!entries) return null;
  const f = r.fields(entries, ['src', 'accept', 'deny', 'proto'], 'a test');
  const srcE = r.required(f, 'src', 'a test', node.pos);
  const srcText = srcE ? r.string(srcE.value, 'test "src"') : null;
  const src = srcE && srcText !== null ? readTestSource(r, srcText, srcE.value.pos, scope) : null;
  const dsts = (key: string) => {
    const e = r.given(f, key);
    return e
      ? r.strings(e.value, `test "${key}"`).flatMap((d) => readTestDestination(r, d.text, d.pos, scope) ?? [])
      : [];
  };
  const accept = dsts('accept');
  const deny = dsts('deny');
  // Left out, null or empty: a test must check something (a non-list is reported by itself).
  const listed = (key: string) => {
    const e = r.given(f, key);
    return e?.value.kind === 'array' ? e.value.items.length : e ? 1 : 0;
  };
  if (listed('accept') + listed('deny') === 0) {
    r.error('a test needs "accept" or "deny" destinations', node.pos);
  }
  const proto = r.proto(f, 'test');
  if (!src) return null;
  return { src, accept, deny, ...(proto !== undefined ? { proto } : {}), pos: node.pos };
}

function readSsh(r: Reader, node: JsonNode, scope: AliasScope): SshRule | null {
  const entries = r.object(node, 'an ssh rule');
  if (!entries) return null;
  const f = r.fields(entries, ['action', 'src', 'dst', 'users', 'checkPeriod', 'acceptEnv'], 'an ssh rule');
  const actionE = r.required(f, 'action', 'an ssh rule', node.pos);
  const action = actionE ? r.string(actionE.value, 'ssh "action"') : null;
  if (actionE && action !== null && action !== 'accept' && action !== 'check') {
    r.error(`ssh action "${action}" must be "accept" or "check"`, actionE.value.pos);
  }
  const srcE = r.required(f, 'src', 'an ssh rule', node.pos);
  const dstE = r.required(f, 'dst', 'an ssh rule', node.pos);
  const usersE = r.required(f, 'users', 'an ssh rule', node.pos);
  const src = srcE ? readAliases(r, srcE.value, scope, 'src', false) : [];
  const dst = dstE ? readAliases(r, dstE.value, scope, 'dst', false) : [];
  const users = usersE ? r.strings(usersE.value, 'ssh "users"').map((u) => u.text) : [];
  if (action !== 'accept' && action !== 'check') return null;
  return { action, src, dst, users, pos: node.pos };
}
