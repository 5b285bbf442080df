import { CompiledQuery, type QueryId, type RootOperationNode, sql } from 'kysely';
import { afterEach, describe, expect, it } from 'vitest';
import { nameBase, nameStem, uniqueName } from '../tailnet/names.js';
import type { NewNode } from '../tailnet/records.js';
import { cleanupAll } from '../testing/harness.js';
import { testDatabaseKinds } from '../testing/postgres.js';
import { retryConflicts } from './errors.js';
import { openDatabase } from './open.js';
import { Store } from './store.js';

// The repository's statements on both databases it runs on: the same calls must give the same
// answers on SQLite and PostgreSQL (types of counts and flags, conflicts, cascades, races).

afterEach(cleanupAll);

const now = '2026-01-02T03:04:05.000Z';

function node(id: string, n: number, userId: string | null): NewNode {
  return {
    id,
    name: `host-${n}`,
    hostname: `host-${n}`,
    userId,
    preauthKeyId: null,
    tags: [],
    machineKey: `mkey:${id}`,
    nodeKey: `nodekey:${id}`,
    ipv4: `100.64.0.${n}`,
    ipv6: `fd00:1:2::${n}`,
    endpoints: ['198.51.100.7:41641'],
    os: 'linux',
    ephemeral: false,
    createdAt: now,
    lastSeen: null,
    keyExpiry: null,
    advertisedRoutes: [],
    approvedRoutes: [],
  };
}

for (const kind of await testDatabaseKinds()) {
  describe.skipIf(kind.skip !== null)(`the store on ${kind.kind}`, () => {
    async function open(): Promise<{ store: Store; location: string }> {
      const location = await kind.create();
      const store = new Store((await openDatabase(location)).db);
      return { store, location };
    }
    const alice = {
      id: 'u1',
      name: 'alice',
      email: 'alice@example.com',
      createdAt: now,
      provider: null,
      subject: null,
      displayName: null,
      groups: ['eng'],
    };

    it('opens twice (migrations are idempotent) and keeps settings, first writer winning', async () => {
      const { store, location } = await open();
      expect(await store.ensureSetting('k', () => 'first')).toBe('first');
      const again = new Store((await openDatabase(location)).db);
      expect(await again.ensureSetting('k', () => 'second')).toBe('first');
      expect(await again.setting('absent')).toBeUndefined();
      await again.destroy();
      await store.destroy();
    });

    it('stores users, keys and nodes and reads them back with the same types', async () => {
      const { store } = await open();
      await store.insertUser(alice);
      expect(await store.userByName('alice')).toEqual(alice);
      await store.insertPreauthKey({
        id: 'k1',
        keyHash: 'hash1',
        userId: 'u1',
        reusable: false,
        ephemeral: true,
        tags: ['tag:ci'],
        expiresAt: null,
        usedCount: 0,
        createdAt: now,
      });
      expect(await store.preauthKeyByHash('hash1')).toMatchObject({
        reusable: false,
        ephemeral: true,
        usedCount: 0,
      });
      // Single use: the second consume loses, in one statement.
      expect(await store.consumePreauthKey('k1')).toBe(true);
      expect(await store.consumePreauthKey('k1')).toBe(false);

      await store.insertNode(node('n1', 1, 'u1'));
      await store.insertNode({ ...node('n2', 2, null), tags: ['tag:server'], ephemeral: true });
      const n1 = await store.nodeByMachineKey('mkey:n1');
      expect(n1).toMatchObject({
        name: 'host-1',
        userName: 'alice',
        userGroups: ['eng'],
        ipv4: '100.64.0.1',
        endpoints: ['198.51.100.7:41641'],
        ephemeral: false,
        kind: 'weft',
        homeRelay: null,
      });
      await store.updateNode('n2', { endpoints: [], homeRelay: 3, kind: 'tailscale' });
      expect(await store.nodeByNodeKey('nodekey:n2')).toMatchObject({
        endpoints: [],
        homeRelay: 3,
        kind: 'tailscale',
        ephemeral: true,
        tags: ['tag:server'],
      });
      expect((await store.listNodes()).map((n) => n.name)).toEqual(['host-1', 'host-2']);
      expect((await store.namesLike('host', 'host')).sort()).toEqual(['host-1', 'host-2']);
      expect(await store.highestIPv4Offset()).toBe(2);
      // A second node on the same node key or address is refused by the schema.
      await expect(store.insertNode({ ...node('n3', 3, null), nodeKey: 'nodekey:n1' })).rejects.toThrow();
      await expect(store.insertNode({ ...node('n3', 3, null), ipv4: '100.64.0.1' })).rejects.toThrow();
      expect(await store.deleteNode('n2')).toBe(true);
      expect(await store.deleteNode('n2')).toBe(false);
      await store.destroy();
    });

    it('cascades: deleting a user deletes their nodes and keys', async () => {
      const { store, location } = await open();
      await store.insertUser(alice);
      await store.insertNode(node('n1', 1, 'u1'));
      const { db } = await openDatabase(location);
      await db.deleteFrom('users').where('id', '=', 'u1').execute();
      expect(await store.listNodes()).toEqual([]);
      await db.destroy();
      await store.destroy();
    });

    it('counts open logins, finishes one once, and hands an auth attempt out once', async () => {
      const { store } = await open();
      const login = (id: string, source: string) => ({
        id,
        machineKey: `m-${id}`,
        nodeKey: `n-${id}`,
        hostname: 'laptop',
        os: 'linux',
        status: 'pending' as const,
        nodeId: null,
        userName: null,
        createdAt: now,
        expiresAt: '2026-01-02T03:14:05.000Z',
        source,
      });
      await store.insertPendingLogin(login('l1', '192.0.2.1'));
      await store.insertPendingLogin(login('l2', '192.0.2.2'));
      expect(await store.countOpenLogins(new Date(now))).toBe(2);
      expect(await store.countOpenLogins(new Date(now), '192.0.2.1')).toBe(1);
      expect(await store.finishPendingLogin('l1', { status: 'cancelled' })).toBe(true);
      expect(await store.finishPendingLogin('l1', { status: 'cancelled' })).toBe(false);
      const attempt = (state: string, expiresAt: string) => ({
        state,
        loginId: 'l2',
        provider: 'oidc',
        nonce: 'n',
        codeVerifier: 'v',
        expiresAt,
        browserHash: state,
      });
      await store.insertAuthAttempt(attempt('s1', '2026-01-02T03:05:00.000Z'), 2);
      await store.insertAuthAttempt(attempt('s2', '2026-01-02T03:06:00.000Z'), 2);
      await store.insertAuthAttempt(attempt('s3', '2026-01-02T03:07:00.000Z'), 2);
      // Only the newest two are kept.
      expect(await store.takeAuthAttempt('s1')).toBeUndefined();
      const taken = await Promise.all([store.takeAuthAttempt('s3'), store.takeAuthAttempt('s3')]);
      expect(taken.filter((t) => t !== undefined)).toHaveLength(1);
      await store.destroy();
    });

    it('finds the names a new one could clash with by index lookups, not by reading every name', async () => {
      const { location } = await open();
      const { db } = await openDatabase(location);
      const queries: { node: RootOperationNode; queryId: QueryId }[] = [];
      const store = new Store(
        db.withPlugin({
          transformQuery: (args) => {
            queries.push(args);
            return args.node;
          },
          transformResult: async (args) => args.result,
        }),
      );
      const names = ['host', 'host-1', 'host-2', 'hostile', 'host-a', 'host-1-1', 'my-host-3'];
      for (const [i, name] of names.entries())
        await store.insertNode({ ...node(`n${i}`, i + 1, null), name });
      queries.length = 0;
      await store.namesLike('host', 'host');
      const lookup = queries[0];
      if (lookup === undefined) throw new Error('no query seen');
      const { sql: text, parameters } = db.getExecutor().compileQuery(lookup.node, lookup.queryId);
      const plan = await db.connection().execute(async (conn) => {
        if (kind.kind === 'sqlite') {
          const { rows } = await conn.executeQuery<{ detail: string }>(
            CompiledQuery.raw(`explain query plan ${text}`, [...parameters]),
          );
          return rows.map((r) => r.detail).join('\n');
        }
        // Tiny tables: without this PostgreSQL reads the table whatever indexes there are.
        await conn.executeQuery(CompiledQuery.raw('set enable_seqscan = off'));
        const { rows } = await conn.executeQuery<{ 'QUERY PLAN': string }>(
          CompiledQuery.raw(`explain ${text}`, [...parameters]),
        );
        await conn.executeQuery(CompiledQuery.raw('reset enable_seqscan'));
        return rows.map((r) => r['QUERY PLAN']).join('\n');
      });
      // Both sides of the OR are index conditions (SQLite's SEARCH, PostgreSQL's Index Cond), and
      // nothing reads every row (SCAN, Seq Scan) or tests rows one by one (Filter).
      expect(plan).toMatch(
        /SEARCH nodes USING INDEX nodes_name_base \(name_base=\?\)|Index Cond: \(name_base = /,
      );
      expect(plan).not.toMatch(/\bSCAN nodes\b|Seq Scan|Filter:/);

      const taken = async (hostname: string) => (await store.namesLike(hostname, nameStem(hostname))).sort();
      expect(await taken('host')).toEqual(['host', 'host-1', 'host-2']);
      expect(uniqueName('host', await taken('host'))).toBe('host-3');
      expect(await taken('host-1')).toEqual(['host-1', 'host-1-1']);
      expect(uniqueName('host-1', await taken('host-1'))).toBe('host-1-2');
      // A rename moves the name's base with it.
      await store.renameNode('n4', 'host-9');
      expect(await taken('host')).toEqual(['host', 'host-1', 'host-2', 'host-9']);

      await store.insertUser(alice);
      await store.insertUser({ ...alice, id: 'u2', name: 'alice-1', email: null });
      expect((await store.userNamesLike('alice', 'alice')).sort()).toEqual(['alice', 'alice-1']);
      await db.destroy();
    });

    it.skipIf(kind.kind === 'sqlite')(
      'keeps the base of names a replica of the version before it writes (a rolling upgrade)',
      async () => {
        const location = await kind.create();
        const { db } = await openDatabase(location);
        const store = new Store(db);
        const names = ['web', 'web-1', 'web-1-2', 'web-a', 'webs-12', '-5', 'a--3', 'x-0', 'd-1x'];
        for (const [i, name] of names.entries()) {
          await store.insertNode({ ...node(`n${i}`, i + 1, null), name });
          // As an older replica writes: the name alone, no base (an insert leaves it '').
          await sql`update nodes set name_base = '' where id = ${`n${i}`}`.execute(db);
          await sql`update nodes set name = ${name} where id = ${`n${i}`}`.execute(db);
        }
        const bases = await db.selectFrom('nodes').select(['name', 'name_base']).execute();
        for (const row of bases) expect(row.name_base).toBe(nameBase(row.name));
        // A rename by such a replica moves the base too, so its new name is found as a clash.
        await sql`update nodes set name = 'desk-1' where id = 'n0'`.execute(db);
        expect(await store.namesLike('desk', 'desk')).toEqual(['desk-1']);
        expect(uniqueName('desk', await store.namesLike('desk', 'desk'))).toBe('desk');
        await sql`insert into users (id, name, created_at) values ('u9', 'carol-4', ${now})`.execute(db);
        expect(await store.userNamesLike('carol', 'carol')).toEqual(['carol-4']);
        await db.destroy();
      },
    );

    it("deletes only a stream's own presence row: a node's newer stream keeps its row", async () => {
      const { store } = await open();
      await store.insertNode(node('n1', 1, null));
      await store.insertNode(node('n2', 2, null));
      await store.streamsConnected([{ nodeId: 'n1', stream: 1 }], 'A', new Date(now));
      // The node reconnected to A: its new stream's row is written before its old stream's end is.
      await store.streamsConnected([{ nodeId: 'n1', stream: 2 }], 'A', new Date(now));
      await store.nodeDisconnected('n1', 'A', 1, new Date(now));
      expect(await store.nodeById('n1')).toMatchObject({ streamedBy: 'A', lastSeen: now });
      await store.nodeDisconnected('n1', 'A', 2, new Date(now));
      expect((await store.nodeById('n1'))?.streamedBy).toBeNull();
      // Rows written again after a reap carry each stream's own number; releasing an older stream
      // leaves a node's newer row, releasing its own (or a newer one's) clears it, and no other node's.
      const held = [
        { nodeId: 'n1', stream: 3 },
        { nodeId: 'n2', stream: 4 },
      ];
      expect(await store.claimStreams(held, 'A', new Date(now))).toBe(2);
      await store.releaseStreams([{ nodeId: 'n1', stream: 2 }], 'A');
      expect(await store.streamCount('A')).toBe(2);
      await store.releaseStreams([{ nodeId: 'n1', stream: 5 }], 'A');
      expect((await store.nodeById('n1'))?.streamedBy).toBeNull();
      expect((await store.nodeById('n2'))?.streamedBy).toBe('A');
      await store.destroy();
    });

    it('numbers policy versions without gaps when two writers race', async () => {
      const { store, location } = await open();
      const other = new Store((await openDatabase(location)).db);
      const writes = [store, other, store, other].map((s, i) =>
        retryConflicts(() => s.insertPolicy(`{ /* ${i} */ }`, 'test', new Date(now))),
      );
      const versions = (await Promise.all(writes)).map((p) => p.version).sort();
      expect(versions).toEqual([1, 2, 3, 4]);
      expect(await other.policyVersion()).toBe(4);
      expect((await store.listPolicies()).map((p) => p.version)).toEqual([4, 3, 2, 1]);
      await other.destroy();
      await store.destroy();
    });
  });
}
