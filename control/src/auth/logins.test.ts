import { join } from 'node:path';
import { generateKeyPair } from '@weft/protocol';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { openSqliteDatabase } from '../db/sqlite.js';
import { Store } from '../db/store.js';
import { cleanupAll, tempDir } from '../testing/harness.js';
import { signInUser } from './identity.js';
import { LoginService } from './logins.js';
import type { LoginRequest } from './register.js';

// A held registration sleeps until the event that ends it; it does not poll the database.

afterEach(cleanupAll);

function service(store: Store, waitMs: number): LoginService {
  return new LoginService({
    store,
    publicUrl: () => 'https://control.test',
    loginExpiryMs: 600_000,
    waitMs,
    ulaPrefix: 'fd00:1:2::/48',
    nodeKeyExpiryMs: 86_400_000,
    now: () => new Date(),
    maxPendingPerSource: 16,
    maxPendingTotal: 10_000,
  });
}

describe('a held registration', () => {
  it('reads the database once, then wakes on the change that authorizes it (another replica)', async () => {
    const path = join(tempDir(), 'control.db');
    const here = new Store(await openSqliteDatabase(path));
    const replica = new Store(await openSqliteDatabase(path));
    const waiting = service(here, 60_000);
    const elsewhere = service(replica, 60_000);
    const request: LoginRequest = {
      machineKey: generateKeyPair().publicKey,
      nodeKey: generateKeyPair().publicKey,
      hostname: 'laptop',
      os: 'linux',
      source: '192.0.2.7',
    };
    const { authUrl } = await waiting.begin(request);
    const reads = vi.spyOn(here, 'latestLoginOf');
    const held = waiting.wait(request);
    // Long enough for the old one-second re-read to have happened at least twice.
    await new Promise((r) => setTimeout(r, 2_200));
    expect(reads).toHaveBeenCalledTimes(1);

    const user = await signInUser(replica, {
      provider: 'https://idp.test',
      subject: 'alice',
      email: 'alice@example.com',
      emailVerified: true,
      displayName: null,
      groups: [],
    });
    await elsewhere.complete(authUrl.split('/').pop() as string, user);
    waiting.recheck(); // what the change feed does when another connection commits
    expect(await held).toMatchObject({ status: 'authorized' });
    expect(reads).toHaveBeenCalledTimes(2);
    await here.destroy();
    await replica.destroy();
  });
});
