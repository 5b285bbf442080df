import { PolicyError, type PolicyIssue } from './errors.js';
import { parsePolicy } from './parse.js';
import { runPolicyTests } from './policy-tests.js';
import type { Tailnet } from './tailnet.js';
import type { AliasRef, Policy } from './types.js';

// The gate a policy passes before it is used: valid on its own (parsePolicy), naming only users
// the tailnet has, and passing its own tests. `policy check` and `policy set` run exactly this.

export type CheckResult =
  | { ok: true; policy: Policy; warnings: PolicyIssue[] }
  | { ok: false; issues: PolicyIssue[]; warnings: PolicyIssue[] };

function userIssues(refs: AliasRef[], tailnet: Tailnet, consequence: string): PolicyIssue[] {
  const emails = new Set(tailnet.users.flatMap((u) => (u.email ? [u.email.toLowerCase()] : [])));
  const names = new Set(tailnet.users.map((u) => u.name));
  return refs.flatMap((ref) => {
    const a = ref.alias;
    if (a.kind !== 'user') return [];
    const known = a.email ? emails.has(a.email) : names.has(a.name ?? '');
    return known
      ? []
      : [{ message: `unknown user "${ref.text}": no such user in the tailnet${consequence}`, pos: ref.pos }];
  });
}

/**
 * Users the policy names that the tailnet does not have. In rules and tests that is an error (a
 * typo must not silently grant nothing); in groups, tag owners and route approvers it is only a
 * warning, because naming people before they first sign in is how Tailscale policies are kept.
 */
export function unknownUsers(
  policy: Policy,
  tailnet: Tailnet,
): { errors: PolicyIssue[]; warnings: PolicyIssue[] } {
  const rules: AliasRef[] = [
    ...policy.acls.flatMap((a) => [...a.src, ...a.dst.map((d) => d.alias)]),
    ...policy.grants.flatMap((g) => [...g.src, ...g.dst]),
    ...policy.ssh.flatMap((s) => [...s.src, ...s.dst]),
    ...policy.tests.flatMap((t) => [t.src, ...t.accept.map((d) => d.alias), ...t.deny.map((d) => d.alias)]),
  ];
  const declarations: AliasRef[] = [
    ...[...policy.groups.values()].flat(),
    ...[...policy.tagOwners.values()].flat(),
    ...policy.autoApprovers.routes.flatMap((r) => r.approvers),
    ...policy.autoApprovers.exitNode,
  ];
  return {
    errors: userIssues(rules, tailnet, ''),
    warnings: userIssues(declarations, tailnet, ' yet'),
  };
}

export function checkPolicy(text: string, tailnet: Tailnet): CheckResult {
  let policy: Policy;
  try {
    policy = parsePolicy(text);
  } catch (e) {
    if (e instanceof PolicyError) return { ok: false, issues: e.issues, warnings: [] };
    throw e;
  }
  const users = unknownUsers(policy, tailnet);
  const warnings = [...users.warnings];
  if (policy.ssh.length > 0) {
    warnings.push({
      message: 'ssh rules are checked but not enforced: Weft does not run an SSH server',
      pos: policy.ssh[0]?.pos,
    });
  }
  const issues = [...users.errors, ...runPolicyTests(policy, tailnet)];
  return issues.length > 0 ? { ok: false, issues, warnings } : { ok: true, policy, warnings };
}
