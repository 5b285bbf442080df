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
