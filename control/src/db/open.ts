import type { Kysely } from 'kysely';
import { errorText, type Logger } from '../log.js';
import { type ChangeFeed, SqliteChangeFeed } from './change-feed.js';
import { isPostgresUrl, withoutPassword } from './location.js';
import { exclusively, openPostgresDatabase } from './postgres.js';
import { PostgresChangeFeed } from './postgres-change-feed.js';
import type { Database } from './schema.js';
import { openSqlite } from './sqlite.js';

// One place that turns the configured database (a SQLite file path, or a postgres:// URL) into a
// migrated connection and the change feed that goes with it, so callers never branch on the kind.

export interface OpenDatabase {
  db: Kysely<Database>;
  kind: 'sqlite' | 'postgres';
  /** The location without any password, for logs. */
  shown: string;
  /** A feed of other processes' (or replicas') commits; `pollMs` only matters for SQLite. */
  changeFeed(log: Logger, pollMs?: number): ChangeFeed;
  /** Runs a background job unless another replica runs it now (then false). */
  exclusive: RunExclusive;
}

export type RunExclusive = (job: string, fn: () => Promise<void>) => Promise<boolean>;

/**
 * Opens the database at `location`; on PostgreSQL every session this opens is named `session`
 * (a replica's: see replicaSessionName).
 */
export async function openDatabase(location: string, session?: string): Promise<OpenDatabase> {
  if (!isPostgresUrl(location)) {
    const { db, conn } = await openSqlite(location);
    return {
      db,
      kind: 'sqlite',
      shown: withoutPassword(location),
      changeFeed: (_log, pollMs) => new SqliteChangeFeed(conn, pollMs),
      // One server per SQLite file: nobody to share the job with.
      exclusive: async (_job, fn) => {
        await fn();
        return true;
      },
    };
  }
  const { db, ownBackends } = await openPostgresDatabase(location, undefined, session);
  return {
    db,
    kind: 'postgres',
    shown: withoutPassword(location),
    changeFeed: (log) =>
      new PostgresChangeFeed(location, session, ownBackends, (err) =>
        log.warn(`change feed: ${errorText(err)}; listening again`),
      ),
    exclusive: (job, fn) => exclusively(db, job, fn),
  };
}
