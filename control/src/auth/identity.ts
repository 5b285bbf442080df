import { z } from 'zod';
import type { AllowRules } from '../config/config.js';
import { retryConflicts } from '../db/errors.js';
import type { Store } from '../db/store.js';
import { newId } from '../tailnet/ids.js';
import { nameStem, uniqueName } from '../tailnet/names.js';
import type { UserRecord } from '../tailnet/records.js';

// Who signed in, as any identity provider reports it, and what control does with it: check it
// against the allow rules, then find or create the user. The identity is the provider plus its
// subject (never the email, which people change and providers recycle).

/** Kept as JSON between the provider's answer and the person's Connect (login_confirmations). */
export const Identity = z.strictObject({
  /** The OIDC issuer URL, or `github`. */
  provider: z.string(),
  /** The provider's stable id for the person. */
  subject: z.string(),
  email: z.string().nullable(),
  /**
   * Whether the provider vouches for the email (OIDC `email_verified: true`, Entra `xms_edov`,
   * GitHub's verified primary). Only a verified email names a person or passes the allow rules.
   */
  emailVerified: z.boolean(),
  displayName: z.string().nullable(),
  groups: z.array(z.string()),
});
export type Identity = z.infer<typeof Identity>;

/** Which kind of provider vouched for `identity`: a metric label from a fixed set (an issuer URL is not). */
export function providerKind(identity: Identity): 'oidc' | 'github' {
  return identity.provider === 'github' ? 'github' : 'oidc';
}

/** Why the allow rules refuse `identity`, or null when they let it in. Every configured rule must pass. */
export function refusal(identity: Identity, allow: AllowRules): string | null {
  const email = identity.emailVerified ? identity.email?.toLowerCase() : undefined;
  const shown = identity.email ?? identity.displayName ?? identity.subject;
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
 * later one. The login name is the verified email, else the provider's stable subject
 * (SUBJECT@issuer-host, ID@github): an unverified email or a self-chosen user name
 * (preferred_username, a GitHub login) could name someone else and match their policy.
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

/** The login name for `identity`: see signInUser. */
export function loginNameFor(identity: Identity): string {
  const email = verifiedEmail(identity);
  if (email !== null && LOGIN_NAME.test(email)) return email;
  const host = identity.provider === 'github' ? 'github' : issuerHost(identity.provider);
  const subject = identity.subject.replace(/[^A-Za-z0-9._+-]/g, '').slice(0, 64) || 'unknown';
  return `${subject}@${host}`.toLowerCase().replace(/^[^A-Za-z0-9]+/, '');
}

function issuerHost(issuer: string): string {
  try {
    return new URL(issuer).hostname;
  } catch {
    return 'oidc';
  }
}
