import { join } from 'node:path';
import BetterSqlite from 'better-sqlite3';
import { Kysely, SqliteDialect, sql } from 'kysely';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { cleanupAll, onCleanup, tempDir } from '../testing/harness.js';
import type { Database } from './schema.js';
import { openSqlite, openSqliteConnection, preparingOnce } from './sqlite.js';
import { Store } from './store.js';

afterEach(() => {
  vi.restoreAllMocks();
  return cleanupAll();
});

describe('SQLite statements', () => {
  it('the store prepares a statement once, however often it runs', async () => {
    const { db } = await openSqlite(join(tempDir(), 'control.db'));
    onCleanup(() => db.destroy());
    const store = new Store(db);
    const prepare = vi.spyOn(BetterSqlite.prototype, 'prepare');
    for (let i = 0; i < 5; i++) await store.nodeByMachineKey(`mkey:${i}`);
    expect(prepare).toHaveBeenCalledTimes(1);
  });

  it('keeps the most recently used texts, up to its capacity', async () => {
    const conn = openSqliteConnection(join(tempDir(), 'control.db'));
    const db = new Kysely<Database>({ dialect: new SqliteDialect({ database: preparingOnce(conn, 2) }) });
    onCleanup(() => db.destroy());
    const prepare = vi.spyOn(conn, 'prepare');
    const run = (n: number) => sql`select ${sql.lit(n)} as n`.execute(db);
    await run(1);
    await run(2);
    await run(1); // kept; 2 is now the least recently used
    await run(3); // 2 goes
    await run(1);
    expect(prepare).toHaveBeenCalledTimes(3);
    await run(2);
    expect(prepare).toHaveBeenCalledTimes(4);
  });

  it('prepares another statement while the kept one is still being iterated', async () => {
    const conn = openSqliteConnection(join(tempDir(), 'control.db'));
    const cached = preparingOnce(conn);
    onCleanup(() => cached.close());
    const text = 'select value from json_each(?)';
    const outer = cached.prepare(text).iterate(['[1,2]']);
    outer.next();
    expect(cached.prepare(text).all(['[3]'])).toEqual([{ value: 3 }]);
    expect([...outer]).toEqual([{ value: 2 }]);
  });
});
