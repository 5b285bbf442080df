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
      where schemaname = current_schema() and tablename not like 'kysely\\_%'`.execute(trx);
    for (const { tablename } of tables.rows) {
      await sql`create or replace trigger weft_notify_change
        after insert or update or delete or truncate on ${sql.table(tablename)}
        for each statement execute function weft_notify_change()`.execute(trx);
    }
  });
}
