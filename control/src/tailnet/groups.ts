import type { UserRecord } from './records.js';

// Identity-provider groups as the policy file names them: `group:NAME`. Providers spell groups
// freely (Keycloak "/engineering/platform", Okta "Engineering Team", Entra ID object ids), while a
// policy group name is letters, digits, `.`, `_` and `-`: a leading `/` is dropped and every
// other character becomes `-`, so "/engineering/platform" is group:engineering-platform.

export function policyGroupName(raw: string): string | null {
  const name = raw
    .replace(/^\/+/, '')
    .replace(/[^A-Za-z0-9._-]/g, '-')
    .replace(/^[^A-Za-z0-9]+/, '');
  return name === '' ? null : `group:${name}`;
}

/** The `group:NAME`s a user belongs to through their identity provider. */
export function policyGroupsOf(user: Pick<UserRecord, 'groups'>): string[] {
  const names = user.groups.map(policyGroupName).filter((g): g is string => g !== null);
  return [...new Set(names)].sort();
}
