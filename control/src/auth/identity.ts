import type { AllowRules } from '../config/config.js';
import { retryConflicts } from '../db/errors.js';
import type { Store } from '../db/store.js';
import { newId } from '../tailnet/ids.js';
import { nameStem, uniqueName } from '../tailnet/names.js';
import type { UserRecord } from '../tailnet/records.js';

// Who signed in, as any identity provider reports it, and what control does with it: check it
// against the allow rules, then find or create the user. The identity is the provider plus its
// subject (never the email, which people change and providers recycle).

export interface Identity {
  /** The OIDC issuer URL, or `github`. */
  provider: string;
  /** The provider's stable id for the person. */
  subject: string;
  email: string | null;
  /** Whether the provider vouches for the email; domain and user rules only trust verified ones. */
  emailVerified: boolean;
  displayName: string | null;
  /** A login name to fall back on when there is no email (GitHub login, preferred_username). */
  username: string | null;
  groups: string[];
}

/** Why the allow rules refuse `identity`, or null when they let it in. Every configured rule must pass. */
export function refusal(identity: Identity, allow: AllowRules): string | null {
  const email = identity.emailVerified ? identity.email?.toLowerCase() : undefined;
  const shown = identity.email ?? identity.username ?? identity.subject;
  if (allow.domains.length > 0) {
    const domain = email?.split('@')[1];
    if (domain === undefined || !allow.domains.includes(domain)) {
      return email === undefined
        ? `${shown} has no verified email address, and this tailnet only admits ${allow.domains.join(', ')} addresses.`
        : `${email} is not in an allowed domain (${allow.domains.join(', ')}).`;
    }
  }
  if (allow.users.length > 0 && (email === undefined || !allow.users.includes(email))) {
    return `${shown} is not on this tailnet’s list of allowed users.`;
  }
  if (allow.groups.length > 0 && !identity.groups.some((g) => allow.groups.includes(g))) {
    return `${shown} is not in any of the allowed groups (${allow.groups.join(', ')}).`;
  }
  return null;
}

const LOGIN_NAME = /^[A-Za-z0-9][A-Za-z0-9._@+-]{0,127}$/;

/**
 * The user for `identity`, created on first sign-in and refreshed (email, name, groups) on every
 * later one. The login name is the email when there is one, else the provider's user name.
 */
export async function signInUser(store: Store, identity: Identity, now = new Date()): Promise<UserRecord> {
  const claims = {
    provider: identity.provider,
    subject: identity.subject,
    email: identity.email,
    displayName: identity.displayName,
    groups: identity.groups,
  };
  return retryConflicts(() =>
    store.transaction(async (tx) => {
      const known = await tx.userByIdentity(identity.provider, identity.subject);
      if (known) {
        await tx.updateUserClaims(known.id, claims);
        return { ...known, ...claims };
      }
      const wanted = loginNameFor(identity);
      // A user an admin created under this (verified) email, before anyone signed in as it, is
      // this person: keys and nodes made for them stay theirs.
      const reserved = wanted === verifiedEmail(identity) ? await tx.userByName(wanted) : undefined;
      if (reserved && reserved.provider === null) {
        await tx.updateUserClaims(reserved.id, claims);
        return { ...reserved, ...claims };
      }
      const name = uniqueName(wanted, await tx.userNamesLike(wanted, nameStem(wanted)));
      const user: UserRecord = { id: newId('u'), name, createdAt: now.toISOString(), ...claims };
      await tx.insertUser(user);
      return user;
    }),
  );
}

function verifiedEmail(identity: Identity): string | null {
  return identity.emailVerified && identity.email ? identity.email.toLowerCase() : null;
}

function loginNameFor(identity: Identity): string {
  const candidates = [
    verifiedEmail(identity),
    identity.provider === 'github' && identity.username ? `${identity.username}@github` : identity.username,
  ];
  for (const c of candidates) if (c && LOGIN_NAME.test(c)) return c.toLowerCase();
  return `user-${identity.subject.replace(/[^A-Za-z0-9]/g, '').slice(0, 32) || 'unknown'}`;
}
