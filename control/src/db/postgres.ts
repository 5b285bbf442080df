import { Kysely, PostgresDialect, type PostgresPool, type PostgresPoolClient, sql } from 'kysely';
import pg from 'pg';
import { errorText } from '../log.js';
import { NODE_ID_COLUMNS } from './change-feed.js';
import { withoutPassword } from './location.js';
import { migrate } from './migrations.js';
import type { Database } from './schema.js';
import { PREPARED_STATEMENTS } from './sqlite.js';

// The PostgreSQL flavour of the database, for several control replicas on one server. The schema is
// the same migration list as SQLite's; on top of it each table gets statement triggers that NOTIFY
// CHANNEL, so every writer (a replica, the admin CLI) wakes every other replica's change feed at
// commit, as SQLite's data_version does for the processes sharing its file. The notice names the
// table and, for the tables keyed by node, the changed nodes (changeNotice in change-feed.ts).

export const CHANGE_CHANNEL = 'weft_changes';
/** Written every few seconds by every replica and read by none but the reaper: no one needs waking. */
const QUIET_TABLES = ['replicas'];
/** Bytes of ids per notice, leaving room under PostgreSQL's 8000 for the rest of the JSON. */
const NOTICE_IDS_BYTES = 7000;
/** pg_advisory_xact_lock key under which the triggers are (re)installed: replicas may start at once. */
const TRIGGER_LOCK = 0x77656674;

export interface PostgresDatabase {
  db: Kysely<Database>;
  /** Backend PIDs of this pool's connections: notifications from them are our own commits. */
  ownBackends: ReadonlySet<number>;
}

/**
 * A migration added a column to a table that a prepared text selects `t.*` from (a newer replica's,
 * while this one still runs: a rolling upgrade). The statement must be prepared again.
 */
function resultTypeChanged(err: unknown): boolean {
  return (
    (err as { code?: unknown }).code === '0A000' &&
    /cached plan must not change result type/.test(errorText(err))
  );
}

/**
 * The pool as kysely's driver uses it, naming each SQL text so that pg prepares it once per pooled
 * connection instead of parsing and planning it at every run (a registration's statements ran 20-25%
 * faster). Only the first `capacity` texts are named: a chunked `in (…)` list has a text per length,
 * and each connection keeps every statement it prepared for as long as it lives.
 */
export function preparingOnce(pool: pg.Pool, capacity = PREPARED_STATEMENTS): PostgresPool {
  const names = new Map<string, string>();
  let issued = 0;
  const nameOf = (text: string): string | undefined => {
    let name = names.get(text);
    if (name === undefined && issued < capacity) {
      name = `weft_${issued++}`;
      names.set(text, name);
    }
    return name;
  };
  // kysely keys its connections by the client object: the same client must get the same wrapper.
  const wrappers = new WeakMap<pg.PoolClient, PostgresPoolClient>();
  const wrap = (client: pg.PoolClient): PostgresPoolClient => {
    let inTransaction = false;
    const run = async (text: string, values: unknown[]) => {
      const name = nameOf(text);
      if (name === undefined) return client.query(text, values);
      try {
        return await client.query({ name, text, values });
      } catch (err) {
        if (!resultTypeChanged(err)) throw err;
        // Under a new name the text is prepared again on each connection as it next runs there. Inside
        // a transaction the error has aborted it: the caller's next attempt gets the new statement.
        names.delete(text);
        if (inTransaction) throw err;
        const again = nameOf(text);
        return again === undefined ? client.query(text, values) : client.query({ name: again, text, values });
      }
    };
    const query = (textOrCursor: unknown, values: readonly unknown[] = []) => {
      if (typeof textOrCursor !== 'string') return client.query(textOrCursor as never);
      // kysely's own transaction statements (PostgresDriver): begin, start transaction …, commit, rollback.
      if (textOrCursor === 'begin' || textOrCursor.startsWith('start transaction')) inTransaction = true;
      else if (textOrCursor === 'commit' || textOrCursor === 'rollback') inTransaction = false;
      return run(textOrCursor, [...values]);
    };
    return {
      query: query as unknown as PostgresPoolClient['query'],
      release: (destroy) => client.release(destroy),
    };
  };
  return {
    connect: async () => {
      const client = await pool.connect();
      let wrapper = wrappers.get(client);
      if (wrapper === undefined) {
        wrapper = wrap(client);
        wrappers.set(client, wrapper);
      }
      return wrapper;
    },
    end: () => pool.end(),
  };
}

/**
 * Connects (a pool of up to `max` connections, each named `session` in pg_stat_activity when given),
 * brings the schema up to date and installs the triggers.
 */
export async function openPostgresDatabase(
  url: string,
  max = 10,
  session?: string,
): Promise<PostgresDatabase> {
  const ownBackends = new Set<number>();
  const pool = new pg.Pool({ connectionString: url, max, application_name: session });
  // An idle connection that the server drops (a restart, a failover) errors here and leaves the pool;
  // the next query opens a new one. Unhandled, the error would end the process.
  pool.on('error', () => {});
  // Our own backends, whose notices the change feed skips. A connection the pool closes (idle, or
  // dropped by the server) is forgotten: PostgreSQL hands its PID to later backends, another
  // replica's among them, whose notices must be heard.
  pool.on('connect', (client) => {
    const pid = backendPid(client);
    if (pid !== null) ownBackends.add(pid);
  });
  pool.on('remove', (client) => {
    const pid = backendPid(client);
    if (pid !== null) ownBackends.delete(pid);
  });
  const db = new Kysely<Database>({ dialect: new PostgresDialect({ pool: preparingOnce(pool) }) });
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
         begin perform pg_notify('${CHANGE_CHANNEL}', json_build_object('table', TG_TABLE_NAME)::text);
         return null; end $$`,
      )
      .execute(trx);
    // The statement's changed rows (a transition table, "changed") by the node id in column
    // TG_ARGV[0], split into notices of at most NOTICE_IDS_BYTES of ids: PostgreSQL refuses a
    // payload of 8000 bytes or more, and an error here would fail the writer's statement. A notice
    // that would still be too long (ids not ours) names the table only, which reloads every node.
    // A statement that changed no row notifies nothing.
    await sql
      .raw(
        `create or replace function weft_notify_nodes() returns trigger language plpgsql as $$
         begin
           perform pg_notify('${CHANGE_CHANNEL}', case when octet_length(notice) < 8000 then notice
             else json_build_object('table', TG_TABLE_NAME)::text end)
           from (select json_build_object('table', TG_TABLE_NAME, 'nodes', json_agg(id))::text as notice
                 from (select id, sum(octet_length(id) + 4) over (order by id) / ${NOTICE_IDS_BYTES} as part
                       from (select distinct to_jsonb(c) ->> TG_ARGV[0] as id from changed c) ids) parts
                 group by part) notices;
           return null;
         end $$`,
      )
      .execute(trx);
    const tables = await sql<{ tablename: string }>`
      select tablename from pg_tables
      where schemaname = current_schema() and tablename not like 'kysely\\_%'
        and tablename not in ${sql`(${sql.join(QUIET_TABLES)})`}`.execute(trx);
    for (const { tablename } of tables.rows) {
      const idColumn = NODE_ID_COLUMNS.get(tablename);
      if (idColumn === undefined) {
        await sql`create or replace trigger weft_notify_change
          after insert or update or delete or truncate on ${sql.table(tablename)}
          for each statement execute function weft_notify_change()`.execute(trx);
        continue;
      }
      // A trigger with a transition table may have only one event (PostgreSQL refuses more), and
      // truncate has none: it names the table.
      await sql`create or replace trigger weft_notify_change after truncate on ${sql.table(tablename)}
        for each statement execute function weft_notify_change()`.execute(trx);
      for (const [event, image] of [
        ['insert', 'new'],
        ['update', 'new'],
        ['delete', 'old'],
      ] as const) {
        await sql`create or replace trigger ${sql.raw(`weft_notify_${event}`)}
          after ${sql.raw(event)} on ${sql.table(tablename)}
          referencing ${sql.raw(image)} table as changed
          for each statement execute function weft_notify_nodes(${sql.lit(idColumn)})`.execute(trx);
      }
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

/**
 * The server process behind `client`: pg keeps it from the start-up's BackendKeyData (it cancels
 * queries with it) but does not type it.
 */
function backendPid(client: pg.PoolClient): number | null {
  const pid = (client as pg.PoolClient & { processID?: unknown }).processID;
  return typeof pid === 'number' ? pid : null;
}
