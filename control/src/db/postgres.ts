import { CompiledQuery, Kysely, PostgresDialect, sql } from 'kysely';
import pg from 'pg';
import { errorText } from '../log.js';
import { withoutPassword } from './location.js';
import { migrate } from './migrations.js';
import type { Database } from './schema.js';

// The PostgreSQL flavour of the database, for several control replicas on one server. The schema is
// the same migration list as SQLite's; on top of it each table gets a statement trigger that
// NOTIFYs CHANNEL, so every writer (a replica, the admin CLI) wakes every other replica's change
// feed at commit, as SQLite's data_version does for the processes sharing its file.

export const CHANGE_CHANNEL = 'weft_changes';
/** Written every few seconds by every replica and read by none but the reaper: no one needs waking. */
const QUIET_TABLES = ['replicas'];
/** pg_advisory_xact_lock key under which the triggers are (re)installed: replicas may start at once. */
const TRIGGER_LOCK = 0x77656674;

export interface PostgresDatabase {
  db: Kysely<Database>;
  /** Backend PIDs of this pool's connections: notifications from them are our own commits. */
  ownBackends: ReadonlySet<number>;
}

/** Connects (a pool of up to `max` connections), brings the schema up to date and installs the triggers. */
export async function openPostgresDatabase(url: string, max = 10): Promise<PostgresDatabase> {
  const ownBackends = new Set<number>();
  const pool = new pg.Pool({ connectionString: url, max });
  // An idle connection that the server drops (a restart, a failover) errors here and leaves the pool;
  // the next query opens a new one. Unhandled, the error would end the process.
  pool.on('error', () => {});
  const db = new Kysely<Database>({
    dialect: new PostgresDialect({
      pool,
      onCreateConnection: async (conn) => {
        const { rows } = await conn.executeQuery<{ pid: number }>(
          CompiledQuery.raw('select pg_backend_pid() as pid'),
        );
        if (rows[0]) ownBackends.add(rows[0].pid);
      },
    }),
  });
  try {
    try {
      await sql`select 1`.execute(db);
    } catch (err) {
      throw new Error(`cannot reach PostgreSQL at ${withoutPassword(url)}: ${errorText(err)}`);
    }
    await migrate(db);
    await installChangeTriggers(db);
  } catch (err) {
    await db.destroy();
    throw err;
  }
  return { db, ownBackends };
}

async function installChangeTriggers(db: Kysely<Database>): Promise<void> {
  await db.transaction().execute(async (trx) => {
    await sql`select pg_advisory_xact_lock(${TRIGGER_LOCK})`.execute(trx);
    await sql
      .raw(
        `create or replace function weft_notify_change() returns trigger language plpgsql as $$
         begin perform pg_notify('${CHANGE_CHANNEL}', ''); return null; end $$`,
      )
      .execute(trx);
    const tables = await sql<{ tablename: string }>`
      select tablename from pg_tables
      where schemaname = current_schema() and tablename not like 'kysely\\_%'
        and tablename not in ${sql`(${sql.join(QUIET_TABLES)})`}`.execute(trx);
    for (const { tablename } of tables.rows) {
      await sql`create or replace trigger weft_notify_change
        after insert or update or delete or truncate on ${sql.table(tablename)}
        for each statement execute function weft_notify_change()`.execute(trx);
    }
  });
}

/**
 * Runs `fn` only if no other replica is running the job `job` right now (a session advisory lock on
 * a connection held for the duration); false when another one is.
 */
export async function exclusively(
  db: Kysely<Database>,
  job: string,
  fn: () => Promise<void>,
): Promise<boolean> {
  return db.connection().execute(async (conn) => {
    const { rows } = await sql<{
      got: boolean;
    }>`select pg_try_advisory_lock(hashtext(${job})) as got`.execute(conn);
    if (rows[0]?.got !== true) return false;
    try {
      await fn();
    } finally {
      await sql`select pg_advisory_unlock(hashtext(${job}))`.execute(conn);
    }
    return true;
  });
}
