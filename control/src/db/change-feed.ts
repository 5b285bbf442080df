import type SqliteDatabase from 'better-sqlite3';

// How the server learns that the database changed under it: the admin CLI (another process) or, with
// PostgreSQL, another replica wrote. With SQLite we poll `PRAGMA data_version` on the server's own
// connection, which changes whenever any other connection commits and never for its own commits:
// the server already applied those, and hearing them would reload every node after each write (at
// 10,000 nodes, a reload per poll for as long as nodes register). PostgreSQL's feed LISTENs on a
// channel that writers NOTIFY (postgres-change-feed.ts), behind the same interface.

export interface ChangeFeed {
  /** Starts calling `onChange` after every commit made through another connection. */
  start(onChange: () => void): Promise<void>;
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

  async start(onChange: () => void): Promise<void> {
    const version = () => this.conn.pragma('data_version', { simple: true }) as number;
    let last = version();
    this.timer = setInterval(() => {
      const now = version();
      if (now !== last) {
        last = now;
        onChange();
      }
    }, this.intervalMs);
    this.timer.unref();
  }

  close(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }
}
