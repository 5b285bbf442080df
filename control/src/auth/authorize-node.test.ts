import { join } from 'node:path';
import { generateKeyPair } from '@weft/protocol';
import BetterSqlite from 'better-sqlite3';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { openDatabase } from '../db/open.js';
import { Store } from '../db/store.js';
import { ipv6For } from '../tailnet/addresses.js';
import { cleanupAll, tempDir } from '../testing/harness.js';
import { testDatabaseKinds } from '../testing/postgres.js';
import { authorizeNode } from './authorize-node.js';

// Address allocation as registration does it, on both databases: the lowest free address, found
// with index reads (a registration used to read every node's address).

afterEach(() => {
  vi.restoreAllMocks();
  return cleanupAll();
});

const deps = { ulaPrefix: 'fd00:1:2::/48', nodeKeyExpiryMs: 3_600_000, now: () => new Date() };

/** Inserts, as another writer would, a node like `likeId` (owner, keys' shape) named `id` at `ipv4`. */
async function insertLike(store: Store, likeId: string, id: string, ipv4: string): Promise<void> {
  const like = await store.nodeById(likeId);
  if (like === undefined) throw new Error('registered node missing');
  await store.insertNode({
    ...like,
    id,
    name: id,
    machineKey: `m-${id}`,
    nodeKey: `k-${id}`,
    ipv4,
    ipv6: ipv6For(deps.ulaPrefix, ipv4),
  });
}

function register(store: Store, hostname: string): Promise<string> {
  const grant = {
    machineKey: generateKeyPair().publicKey,
    nodeKey: generateKeyPair().publicKey,
    hostname,
    os: 'linux',
    userId: null,
    tags: ['tag:server'],
    preauthKeyId: null,
    ephemeral: false,
  };
  return store.transaction((tx) => authorizeNode(tx, deps, grant));
}

for (const kind of await testDatabaseKinds()) {
  describe.skipIf(kind.skip !== null)(`address allocation on ${kind.kind}`, () => {
    it('hands out the lowest free address: a deleted node’s is given again, lowest first', async () => {
      const store = new Store((await openDatabase(await kind.create())).db);
      const ids: string[] = [];
      for (let i = 0; i < 6; i++) ids.push(await register(store, `h${i}`));
      const ipOf = async (id: string) => (await store.nodeById(id))?.ipv4;
      expect(await ipOf(ids[5] as string)).toBe('100.64.0.6');
      await store.deleteNode(ids[3] as string);
      await store.deleteNode(ids[1] as string);
      await store.deleteNode(ids[5] as string); // the highest: the next above the rest is .6 again
      expect(await ipOf(await register(store, 'a'))).toBe('100.64.0.2');
      expect(await ipOf(await register(store, 'b'))).toBe('100.64.0.4');
      expect(await ipOf(await register(store, 'c'))).toBe('100.64.0.6');
      expect(await ipOf(await register(store, 'd'))).toBe('100.64.0.7');
      await store.destroy();
    });

    it('skips a free address that a node was inserted with meanwhile (as a copy does)', async () => {
      const store = new Store((await openDatabase(await kind.create())).db);
      const ids: string[] = [];
      for (let i = 0; i < 3; i++) ids.push(await register(store, `h${i}`));
      await store.deleteNode(ids[0] as string);
      await insertLike(store, ids[1] as string, 'x', '100.64.0.1');
      expect((await store.nodeById(await register(store, 'a')))?.ipv4).toBe('100.64.0.4');
      await store.destroy();
    });

    it('does not hand out the address of a node an earlier version inserted (no offset recorded)', async () => {
      const { db } = await openDatabase(await kind.create());
      const store = new Store(db);
      const first = await register(store, 'h0');
      await insertLike(store, first, 'old', '100.64.0.2');
      await db.updateTable('nodes').set({ ipv4_offset: null }).where('id', '=', 'old').execute();
      expect((await store.nodeById(await register(store, 'a')))?.ipv4).toBe('100.64.0.3');
      expect(await store.highestIPv4Offset()).toBe(3);
      await store.destroy();
    });
  });
}

describe('address allocation reads', () => {
  it('a registration reads a few rows, not every node’s address', async () => {
    const store = new Store((await openDatabase(join(tempDir(), 'control.db'))).db);
    for (let i = 0; i < 200; i++) await register(store, `h${i}`);
    // Rows handed to JavaScript by every statement the registration runs.
    let rows = 0;
    const statement = Object.getPrototypeOf(new BetterSqlite(':memory:').prepare('select 1'));
    const all = statement.all as (...args: unknown[]) => unknown[];
    vi.spyOn(statement, 'all').mockImplementation(function (this: unknown, ...args: unknown[]) {
      const out = all.apply(this, args);
      rows += out.length;
      return out;
    });
    await register(store, 'new');
    expect(rows).toBeLessThan(10);
    await store.destroy();
  });
});
