import type SqliteDatabase from 'better-sqlite3';
import { openSqliteConnection } from './sqlite.js';

// How the server learns that the database changed under it: the admin CLI (another process) or, with
// PostgreSQL, another replica wrote. With SQLite we poll `PRAGMA data_version` on a connection of our
// own, which changes whenever any other connection commits. PostgreSQL's feed LISTENs on a channel
// that writers NOTIFY (postgres-change-feed.ts), behind the same interface.

export interface ChangeFeed {
  /** Starts calling `onChange` after every commit made through another connection. */
  start(onChange: () => void): Promise<void>;
  close(): void;
}

export const DATA_VERSION_POLL_MS = 200;

export class SqliteChangeFeed implements ChangeFeed {
  private conn: SqliteDatabase.Database | null = null;
  private timer: NodeJS.Timeout | null = null;

  constructor(
    private readonly path: string,
    private readonly intervalMs = DATA_VERSION_POLL_MS,
  ) {}

  async start(onChange: () => void): Promise<void> {
    const conn = openSqliteConnection(this.path);
    this.conn = conn;
    const version = () => conn.pragma('data_version', { simple: true }) as number;
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
    this.conn?.close();
    this.timer = null;
    this.conn = null;
  }
}
