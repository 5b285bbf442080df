import { sql } from 'kysely';
import pg from 'pg';
import { afterEach, describe, expect, it } from 'vitest';
import { cleanupAll, onCleanup } from '../testing/harness.js';
import { postgresAbsence, tempPostgres } from '../testing/postgres.js';
import { storeWithNode } from '../testing/store.js';
import { openPostgresDatabase, preparingOnce } from './postgres.js';
import { Store } from './store.js';

// Statements on PostgreSQL are prepared once per pooled connection (named), as SQLite's are once
// per text; and a rolling upgrade's migration does not break a replica still running the old version.

afterEach(cleanupAll);

const noPostgres = await postgresAbsence();

/** A node `n1` in a fresh database, and a store on it over a single connection. */
async function oneConnection(): Promise<{
  db: Awaited<ReturnType<typeof openPostgresDatabase>>['db'];
  store: Store;
}> {
  const url = await tempPostgres();
  await storeWithNode(url);
  const { db } = await openPostgresDatabase(url, 1);
  onCleanup(() => db.destroy());
  return { db, store: new Store(db) };
}

describe.skipIf(noPostgres !== null)('statements on PostgreSQL', () => {
  it('are prepared once per connection', async () => {
    const { db, store } = await oneConnection();
    expect((await store.nodeById('n1'))?.id).toBe('n1');
    expect(await store.nodeById('n2')).toBeUndefined();
    const { rows } = await sql<{ statement: string }>`select statement from pg_prepared_statements`.execute(
      db,
    );
    expect(rows.filter((r) => r.statement.includes('"nodes"."id" = $1'))).toHaveLength(1);
  });

  it('are named up to a capacity, the rest run unnamed, and a client keeps its wrapper', async () => {
    const pool = new pg.Pool({ connectionString: await tempPostgres(), max: 1 });
    onCleanup(() => pool.end());
    const prepared = preparingOnce(pool, 2);
    const client = await prepared.connect();
    for (const text of ['select 1', 'select 2', 'select 3', 'select 1']) await client.query(text, []);
    const { rows } = await client.query<{ n: number }>(
      'select count(*)::int as n from pg_prepared_statements',
      [],
    );
    expect(rows[0]?.n).toBe(2);
    client.release();
    expect(await prepared.connect()).toBe(client);
    client.release();
  });

  it('are prepared again after a migration adds a column to a table they read all of', async () => {
    const { db, store } = await oneConnection();
    expect((await store.nodeById('n1'))?.id).toBe('n1');
    // A newer replica's migration, while this one runs (a rolling upgrade).
    await sql`alter table nodes add column later text`.execute(db);
    expect((await store.nodeById('n1'))?.id).toBe('n1');
    // Inside a transaction the error has aborted it: that attempt fails, the next one works.
    await sql`alter table nodes add column later2 text`.execute(db);
    await expect(store.transaction((tx) => tx.nodeById('n1'))).rejects.toThrow(/cached plan/);
    expect((await store.transaction((tx) => tx.nodeById('n1')))?.id).toBe('n1');
  });
});

// A replica's start and clean stop take one lock (store.ts, REPLICA_LIFE_LOCK), so that of two
// replicas stopping together exactly one is the last, and a replica starting as the last one stops
// is either seen running or sees the hold. Each case races several rounds (one alone may happen to
// run in turn), on a database whose default isolation is READ COMMITTED and on one whose default
// would give each transaction a snapshot from before the lock.
describe.skipIf(noPostgres !== null)("a replica's own backends (whose notices its change feed skips)", () => {
  it('are the pool connections open now: one the server ended is forgotten, as its PID may be reused', async () => {
    const url = await tempPostgres();
    const { db, ownBackends } = await openPostgresDatabase(url);
    onCleanup(() => db.destroy());
    const pidNow = async () =>
      (await sql<{ pid: number }>`select pg_backend_pid() as pid`.execute(db)).rows[0]?.pid;
    const first = await pidNow();
    expect([...ownBackends]).toEqual([first]);
    const other = new pg.Client({ connectionString: url });
    await other.connect();
    onCleanup(() => other.end());
    await other.query('select pg_terminate_backend($1)', [first]);
    // The pool drops the ended connection (its error, or the next query's) and opens another.
    await expect
      .poll(async () => (await pidNow().catch(() => undefined)) ?? first, { timeout: 5_000 })
      .not.toBe(first);
    const second = await pidNow();
    expect([...ownBackends]).toEqual([second]);
  });
});

describe.skipIf(noPostgres !== null)("a replica's start and clean stop on PostgreSQL", () => {
  const ROUNDS = 20;
  /** A store on a fresh database whose transactions default to `isolation` (another pool). */
  async function storeWith(isolation: string): Promise<Store> {
    const url = await tempPostgres();
    await storeWithNode(url);
    const name = new URL(url).pathname.slice(1);
    const admin = await openPostgresDatabase(url, 1);
    await sql`alter database ${sql.id(name)} set default_transaction_isolation = ${sql.lit(isolation)}`.execute(
      admin.db,
    );
    await admin.db.destroy();
    const { db } = await openPostgresDatabase(url);
    onCleanup(() => db.destroy());
    return new Store(db);
  }
  const since = () => new Date(Date.now() - 10_000);
  /**
   * Every replica started so far counts as up (none is still coming up), the one started beside a
   * stop included: its start time is taken after this, by as much as a busy event loop lets pass.
   */
  const up = () => new Date(Date.now() + 60_000);

  it.each(['read committed', 'repeatable read'])(
    'two replicas stopping together: exactly one holds, and it holds both (default %s)',
    async (isolation) => {
      const store = await storeWith(isolation);
      for (let round = 0; round < ROUNDS; round++) {
        const [a, b] = [`a${round}`, `b${round}`];
        await store.replicaStarted(a, new Date());
        await store.replicaStarted(b, new Date());
        const held = await Promise.all([
          store.replicaStopped(a, new Date(), since(), up()),
          store.replicaStopped(b, new Date(), since(), up()),
        ]);
        expect(held.filter(Boolean)).toHaveLength(1);
        expect(await store.heldReplicas()).toHaveLength(2);
        await store.dropHeldReplicas(await store.heldReplicas());
      }
    },
  );

  it.each(['read committed', 'repeatable read'])(
    'a replica starting as the last one stops: the stop sees it running, or it sees the hold (default %s)',
    async (isolation) => {
      const store = await storeWith(isolation);
      for (let round = 0; round < ROUNDS; round++) {
        const [last, next] = [`last${round}`, `next${round}`];
        await store.replicaStarted(last, new Date());
        // As Presence.start does: the first heartbeat, then a look for held rows.
        const [held, seen] = await Promise.all([
          store.replicaStopped(last, new Date(), since(), up()),
          store.replicaStarted(next, new Date()).then(async () => (await store.heldReplicas()).length),
        ]);
        expect(held ? seen : 1).toBeGreaterThan(0);
        expect(await store.replicaStopped(next, new Date(), since(), up())).toBe(true);
        await store.dropHeldReplicas(await store.heldReplicas());
      }
    },
  );
});
