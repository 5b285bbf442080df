import { randomBytes } from 'node:crypto';
import { userInfo } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { onCleanup, tempDir } from './harness.js';

// Test support: a throw-away PostgreSQL database per test, on the server scripts/setup.sh starts
// (reached as this OS user over the local socket) or the one WEFT_TEST_POSTGRES_URL names. A test
// file asks `postgresAbsence()` once at load: when no server answers, its PostgreSQL cases are
// skipped with that reason, except in CI, where PostgreSQL must be there and the cases fail.

const adminUrl =
  process.env.WEFT_TEST_POSTGRES_URL ??
  `postgres://${encodeURIComponent(userInfo().username)}@localhost/postgres?host=/var/run/postgresql`;

async function withAdmin<T>(fn: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: adminUrl, connectionTimeoutMillis: 5_000 });
  await client.connect();
  try {
    return await fn(client);
  } finally {
    await client.end();
  }
}

/** Why PostgreSQL cases cannot run here, or null when they can. Never a reason in CI. */
export async function postgresAbsence(): Promise<string | null> {
  try {
    await withAdmin((c) => c.query('select 1'));
    return null;
  } catch (err) {
    if (process.env.CI) return null; // let the cases run and fail with the real error
    return `no PostgreSQL at ${adminUrl} (${err instanceof Error ? err.message : err}); run scripts/setup.sh`;
  }
}

/** Creates an empty database with a random name, dropped (with any open connection) at cleanup. */
export async function tempPostgres(): Promise<string> {
  const name = `weft_test_${randomBytes(6).toString('hex')}`;
  await withAdmin((c) => c.query(`create database ${name}`));
  onCleanup(() => withAdmin((c) => dropDatabase(c, name)));
  const url = new URL(adminUrl);
  url.pathname = `/${name}`;
  return url.toString();
}

/** PostgreSQL's insufficient_privilege: what a forced drop says of a backend it may not terminate. */
const INSUFFICIENT_PRIVILEGE = '42501';
const DROP_TRIES = 50;
const DROP_RETRY_MS = 100;

/**
 * Drops database `name`, closing its connections. An autovacuum worker may have just entered it, and
 * a role that is not a superuser (the local test role is not) may not terminate it: the forced drop
 * then fails although the worker leaves within moments. That is retried, bounded; anything else
 * is thrown at once.
 */
export async function dropDatabase(
  client: Pick<pg.Client, 'query'>,
  name: string,
  retryMs = DROP_RETRY_MS,
): Promise<void> {
  for (let attempt = 1; ; attempt++) {
    try {
      await client.query(`drop database if exists ${name} with (force)`);
      return;
    } catch (err) {
      const code = (err as { code?: unknown }).code;
      if (code !== INSUFFICIENT_PRIVILEGE || attempt >= DROP_TRIES) throw err;
      await new Promise((resolve) => setTimeout(resolve, retryMs));
    }
  }
}

export interface TestDatabaseKind {
  kind: 'sqlite' | 'postgres';
  /** Why this kind's cases are skipped here; null: they run. */
  skip: string | null;
  /** A fresh, empty database of this kind (removed at cleanup). */
  create(): Promise<string>;
}

/** Both kinds a store runs on, for `for (const k of await testDatabaseKinds()) describe.skipIf(k.skip)(…)`. */
export async function testDatabaseKinds(): Promise<TestDatabaseKind[]> {
  const skip = await postgresAbsence();
  if (skip !== null) console.warn(`skipping the PostgreSQL cases: ${skip}`);
  return [
    { kind: 'sqlite', skip: null, create: async () => join(tempDir(), 'control.db') },
    { kind: 'postgres', skip, create: tempPostgres },
  ];
}
