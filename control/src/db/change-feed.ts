import type SqliteDatabase from 'better-sqlite3';
import { z } from 'zod';
import type { Database } from './schema.js';

// How the server learns that the database changed under it: the admin CLI (another process) or, with
// PostgreSQL, another replica wrote. With SQLite we poll `PRAGMA data_version` on the server's own
// connection, which changes whenever any other connection commits and never for its own commits:
// the server already applied those, and hearing them would reload every node after each write (at
// 10,000 nodes, a reload per poll for as long as nodes register). PostgreSQL's feed LISTENs on a
// channel that writers NOTIFY (postgres-change-feed.ts), behind the same interface. SQLite's poll
// cannot tell what changed; PostgreSQL's notices name the table and, for the tables keyed by node,
// the nodes, so that another replica's registration or stream costs a read of those nodes rather
// than a reload of every node (at 10,000 nodes, seconds of a blocked event loop each).

/** What other connections' commits changed. */
export interface DatabaseChange {
  /** Tables changed in rows not named (a whole table); null: unknown, any table may have changed. */
  tables: ReadonlySet<string> | null;
  /** Nodes whose rows changed in a table keyed by node (nodes, node_streams). */
  nodes: ReadonlySet<string>;
}

/** Anything may have changed: reload everything. */
export const UNKNOWN_CHANGE: DatabaseChange = { tables: null, nodes: new Set() };

/**
 * Tables whose changes are named by node, and the column holding the node's id: a replica reads just
 * those nodes (a registration, a stream coming or going) instead of every node.
 */
export const NODE_ID_COLUMNS: ReadonlyMap<string, string> = new Map<keyof Database, string>([
  ['nodes', 'id'],
  ['node_streams', 'node_id'],
]);

/**
 * A PostgreSQL trigger's notice (postgres.ts): the table, and for a table keyed by node the ids of
 * the changed nodes (a statement's ids are split over several notices; none: the whole table).
 */
export const changeNotice = z.object({ table: z.string(), nodes: z.array(z.string()).optional() });

/** The change a notice's payload names; one that does not parse may be anything (never lose a change). */
export function changeOfNotice(payload: string | undefined): DatabaseChange {
  let json: unknown;
  try {
    json = JSON.parse(payload ?? '');
  } catch {
    return UNKNOWN_CHANGE;
  }
  const notice = changeNotice.safeParse(json);
  if (!notice.success) return UNKNOWN_CHANGE;
  const { table, nodes } = notice.data;
  // Nodes named for a table this version does not key by node (a newer replica's) may not be all
  // that changed: the table is taken whole.
  return nodes === undefined || !NODE_ID_COLUMNS.has(table)
    ? { tables: new Set([table]), nodes: new Set() }
    : { tables: new Set(), nodes: new Set(nodes) };
}

export interface ChangeFeed {
  /** Starts calling `onChange` after commits made through other connections (a burst: one call). */
  start(onChange: (change: DatabaseChange) => void): Promise<void>;
  close(): void;
}

// A few microseconds a poll (one pragma on an open connection): cheap enough to hear an admin's
// change within a twentieth of a second rather than a fifth.
export const DATA_VERSION_POLL_MS = 50;

export class SqliteChangeFeed implements ChangeFeed {
  private timer: NodeJS.Timeout | null = null;

  constructor(
    /** The server's own connection (not closed here). */
    private readonly conn: SqliteDatabase.Database,
    private readonly intervalMs = DATA_VERSION_POLL_MS,
  ) {}

  async start(onChange: (change: DatabaseChange) => void): Promise<void> {
    const version = () => this.conn.pragma('data_version', { simple: true }) as number;
    let last = version();
    this.timer = setInterval(() => {
      const now = version();
      if (now !== last) {
        last = now;
        onChange(UNKNOWN_CHANGE);
      }
    }, this.intervalMs);
    this.timer.unref();
  }

  close(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }
}
