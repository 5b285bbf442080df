import type { SourcePos } from './errors.js';
import type { JsonValue } from './hujson.js';
import type { IPSet } from './ipset.js';

// The typed policy: what a valid policy file says, with every alias already classified and
// every reference checked against the file itself. Positions stay attached so that checks made
// later (against the tailnet, or the policy's own tests) can still name a line and column.

export const AUTOGROUPS = ['member', 'tagged', 'self', 'internet', 'danger-all'] as const;
export type AutogroupName = (typeof AUTOGROUPS)[number];

export type Alias =
  | { kind: 'wildcard' }
  /** `alice@example.com` matches by email; `alice@` (no domain) matches the user named alice. */
  | { kind: 'user'; email?: string; name?: string }
  /** `user:*@example.com`: every user whose email is in the domain. */
  | { kind: 'userDomain'; domain: string }
  | { kind: 'group'; name: string }
  | { kind: 'tag'; name: string }
  | { kind: 'host'; name: string; set: IPSet }
  | { kind: 'ip'; set: IPSet }
  | { kind: 'autogroup'; name: AutogroupName };

export interface AliasRef {
  alias: Alias;
  /** As written, for messages. */
  text: string;
  pos: SourcePos;
}

export interface PortRange {
  first: number;
  last: number;
}

export const ALL_PORTS: PortRange = { first: 0, last: 65535 };

/** One `ip` entry of a grant, or an ACL's `proto` with one destination's ports. */
export interface NetSpec {
  /** Absent: TCP, UDP, ICMPv4 and ICMPv6, as in a FilterRule without IPProto. */
  protos?: number[];
  ports: PortRange[];
}

export interface AclRule {
  src: AliasRef[];
  dst: { alias: AliasRef; ports: PortRange[] }[];
  protos?: number[];
  pos: SourcePos;
}

export interface GrantRule {
  src: AliasRef[];
  dst: AliasRef[];
  ip: NetSpec[];
  /** Capability name to its values, verbatim. */
  app?: Record<string, JsonValue[]>;
  /** Tags of the routers that traffic to `dst` must go through. */
  via: AliasRef[];
  pos: SourcePos;
}

export interface RouteApprover {
  prefix: string;
  set: IPSet;
  approvers: AliasRef[];
  pos: SourcePos;
}

export interface TestDestination {
  alias: AliasRef;
  port: number;
}

export interface PolicyTest {
  src: AliasRef;
  accept: TestDestination[];
  deny: TestDestination[];
  /** Absent: TCP. */
  proto?: number;
  pos: SourcePos;
}

export interface SshRule {
  action: 'accept' | 'check';
  src: AliasRef[];
  dst: AliasRef[];
  users: string[];
  pos: SourcePos;
}

export interface Policy {
  /** `group:name` to its members (user aliases). */
  groups: Map<string, AliasRef[]>;
  /** Host name to its address or prefix. */
  hosts: Map<string, IPSet>;
  /** `tag:name` to its owners. */
  tagOwners: Map<string, AliasRef[]>;
  acls: AclRule[];
  grants: GrantRule[];
  autoApprovers: { routes: RouteApprover[]; exitNode: AliasRef[] };
  tests: PolicyTest[];
  ssh: SshRule[];
}
