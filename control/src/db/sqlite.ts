import { closeSync, mkdirSync, openSync } from 'node:fs';
import { dirname } from 'node:path';
import SqliteDatabase from 'better-sqlite3';
import { Kysely, type SqliteDatabase as KyselySqlite, SqliteDialect } from 'kysely';
import { migrate } from './migrations.js';
import type { Database } from './schema.js';

// The SQLite flavour of the database: one file, shared by the server and the admin CLI, which may
// run at the same time. WAL lets readers go on while one writes; busy_timeout makes a writer wait for
// the other process's lock instead of failing at once.

const BUSY_TIMEOUT_MS = 5_000;
/**
 * Statements kept prepared, the least recently used going first: control runs a few dozen texts,
 * and a chunked `in (…)` list has a text per length.
 */
export const PREPARED_STATEMENTS = 256;

/** Opens a better-sqlite3 connection with the settings every connection to the file must share. */
export function openSqliteConnection(path: string): SqliteDatabase.Database {
  mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
  // The file holds control's private key: create it owner-only. SQLite gives the -wal and -shm files
  // the same mode as the database file.
  closeSync(openSync(path, 'a', 0o600));
  const conn = new SqliteDatabase(path);
  conn.pragma(`busy_timeout = ${BUSY_TIMEOUT_MS}`);
  conn.pragma('journal_mode = WAL');
  conn.pragma('synchronous = NORMAL');
  conn.pragma('foreign_keys = ON');
  return conn;
}

/**
 * The connection as kysely's driver uses it, preparing each SQL text once: the driver prepares every
 * query it runs anew, and at 10,000 nodes reconnecting, preparing was half of control's SQLite time.
 */
export function preparingOnce(conn: SqliteDatabase.Database, capacity = PREPARED_STATEMENTS): KyselySqlite {
  const prepared = new Map<string, SqliteDatabase.Statement>();
  return {
    close: () => conn.close(),
    prepare(sql) {
      const kept = prepared.get(sql);
      prepared.delete(sql);
      // One still being iterated cannot run again meanwhile (kysely's streamed queries).
      const statement = kept !== undefined && !kept.busy ? kept : conn.prepare(sql);
      prepared.set(sql, statement);
      if (prepared.size > capacity) prepared.delete(prepared.keys().next().value as string);
      return statement;
    },
  };
}

/** Opens the database file (creating it if needed) and brings its schema up to date. */
export async function openSqliteDatabase(path: string): Promise<Kysely<Database>> {
  return (await openSqlite(path)).db;
}

/** As openSqliteDatabase, with the connection under it (the change feed polls it). */
export async function openSqlite(
  path: string,
): Promise<{ db: Kysely<Database>; conn: SqliteDatabase.Database }> {
  const conn = openSqliteConnection(path);
  const db = new Kysely<Database>({ dialect: new SqliteDialect({ database: preparingOnce(conn) }) });
  try {
    await migrate(db);
  } catch (err) {
    await db.destroy();
    throw err;
  }
  return { db, conn };
}
