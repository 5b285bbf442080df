import pg from 'pg';
import { type ChangeFeed, changeOfNotice, type DatabaseChange, UNKNOWN_CHANGE } from './change-feed.js';
import { CHANGE_CHANNEL } from './postgres.js';

// The PostgreSQL change feed: one connection of its own LISTENs on the channel the tables' triggers
// NOTIFY at every commit. PostgreSQL folds a transaction's identical notifications into one and
// delivers them only after commit, so a reader sees the committed rows. Notifications from our own
// pool's backends are skipped: this process already refreshed after its own writes. A lost
// connection is opened again (bounded back-off) and then counts as an unknown change, since commits
// made while it was down were not heard. Notices arriving together (a transaction's, split over
// several; a burst of replicas' commits) are delivered as one change on the next turn, so they cost
// one partial read.

const RETRY_MIN_MS = 100;
const RETRY_MAX_MS = 5_000;

/** A change being gathered: the tables named whole (null: unknown) and the nodes named. */
type Gathering = { tables: Set<string> | null; nodes: Set<string> };

export class PostgresChangeFeed implements ChangeFeed {
  private client: pg.Client | null = null;
  private retry: NodeJS.Timeout | null = null;
  private closed = false;
  /** Heard and not yet delivered. */
  private pending: Gathering | null = null;

  constructor(
    private readonly url: string,
    /** Its connection's application_name (the replica's sessions are named alike). */
    private readonly session: string | undefined,
    private readonly ownBackends: ReadonlySet<number>,
    private readonly onError: (err: unknown) => void,
  ) {}

  /** Resolves once the first LISTEN is in place (later reconnects happen in the background). */
  start(onChange: (change: DatabaseChange) => void): Promise<void> {
    const heard = (change: DatabaseChange) => this.gather(change, onChange);
    return this.listen(heard, RETRY_MIN_MS, false);
  }

  /** Adds `change` to what the next turn delivers. */
  private gather(change: DatabaseChange, onChange: (change: DatabaseChange) => void): void {
    if (this.pending === null) {
      const pending: Gathering = { tables: new Set(), nodes: new Set() };
      this.pending = pending;
      setImmediate(() => {
        this.pending = null;
        if (!this.closed) onChange(pending.tables === null ? UNKNOWN_CHANGE : pending);
      });
    }
    const { pending } = this;
    if (change.tables === null) pending.tables = null;
    else for (const table of change.tables) pending.tables?.add(table);
    for (const id of change.nodes) pending.nodes.add(id);
  }

  private async listen(
    onChange: (change: DatabaseChange) => void,
    delayMs: number,
    reconnect: boolean,
  ): Promise<void> {
    const client = new pg.Client({ connectionString: this.url, application_name: this.session });
    const again = (err: unknown) => {
      if (this.closed || this.client !== client) return;
      this.client = null;
      this.onError(err);
      client.end().catch(() => {});
      this.retry = setTimeout(() => {
        this.listen(onChange, Math.min(delayMs * 2, RETRY_MAX_MS), true).catch(() => {});
      }, delayMs);
      this.retry.unref();
    };
    this.client = client;
    client.on('notification', (n) => {
      if (n.channel === CHANGE_CHANNEL && !this.ownBackends.has(n.processId))
        onChange(changeOfNotice(n.payload));
    });
    client.on('error', again);
    try {
      await client.connect();
      await client.query(`listen ${CHANGE_CHANNEL}`);
    } catch (err) {
      if (!reconnect) {
        this.client = null;
        await client.end().catch(() => {});
        throw err;
      }
      again(err);
      return;
    }
    if (reconnect) onChange(UNKNOWN_CHANGE);
  }

  close(): void {
    this.closed = true;
    if (this.retry) clearTimeout(this.retry);
    this.client?.end().catch(() => {});
    this.client = null;
  }
}
