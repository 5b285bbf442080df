import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { openSqliteDatabase } from '../db/sqlite.js';
import { Store } from '../db/store.js';
import { cleanupAll, tempDir } from '../testing/harness.js';
import { type Identity, refusal, signInUser } from './identity.js';

// Which claims may name a person: only a verified email, else the provider's stable subject.

afterEach(cleanupAll);

const allowAll = { domains: [], users: [], groups: [] };
const allowDomain = { domains: ['example.com'], users: [], groups: [] };

function identity(over: Partial<Identity>): Identity {
  return {
    provider: 'https://idp.example.net/realms/x',
    subject: 'u-123',
    email: 'alice@example.com',
    emailVerified: true,
    displayName: 'Alice',
    groups: [],
    ...over,
  };
}

async function store(): Promise<Store> {
  const s = new Store(await openSqliteDatabase(join(tempDir(), 'control.db')));
  return s;
}

describe('login names from identity claims', () => {
  it('uses a verified email as the login name', async () => {
    const s = await store();
    expect((await signInUser(s, identity({}))).name).toBe('alice@example.com');
    await s.destroy();
  });

  it('never names a person by an unverified email or a chosen user name', async () => {
    const s = await store();
    // preferred_username is something the person picked: passing it must change nothing.
    const unverified = { ...identity({ emailVerified: false }), username: 'alice' } as Identity;
    const user = await signInUser(s, unverified);
    expect(user.name).toBe('u-123@idp.example.net');
    expect(refusal(unverified, allowDomain)).toMatch(/no verified email/);
    expect(refusal(identity({}), allowDomain)).toBeNull();
    expect(refusal(unverified, allowAll)).toBeNull();
    await s.destroy();
  });

  it('names a GitHub person without a verified email by the numeric id', async () => {
    const s = await store();
    const gh = { ...identity({ provider: 'github', subject: '583231', email: null, emailVerified: false }) };
    expect((await signInUser(s, { ...gh, username: 'octocat' } as Identity)).name).toBe('583231@github');
    await s.destroy();
  });
});
