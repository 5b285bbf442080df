import { join } from 'node:path';
import pg from 'pg';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { cleanupAll, onCleanup, tempDir } from '../testing/harness.js';
import { postgresAbsence, tempPostgres } from '../testing/postgres.js';
import { storeWithNode } from '../testing/store.js';
import { changeOfNotice, type DatabaseChange, UNKNOWN_CHANGE } from './change-feed.js';
import { openDatabase } from './open.js';
import { CHANGE_CHANNEL } from './postgres.js';
import { openSqliteConnection } from './sqlite.js';
import { Store } from './store.js';

// The SQLite change feed hears other processes' commits (the admin CLI) and not the server's own:
// those are applied already, and hearing them reloaded every node after each registration. It
// cannot tell what changed. PostgreSQL's names the nodes or the table, so that another replica's
// commit is a partial read; what it cannot name (a reconnect, a notice that does not parse) is an
// unknown change, which reloads everything.

afterEach(async () => {
  vi.useRealTimers();
  await cleanupAll();
});

describe('changeOfNotice', () => {
  it('names the nodes of a table keyed by node, and a table alone otherwise', () => {
    expect(changeOfNotice('{"table":"node_streams","nodes":["n1","n2"]}')).toEqual({
      tables: new Set(),
      nodes: new Set(['n1', 'n2']),
    });
    expect(changeOfNotice('{"table":"policies"}')).toEqual({
      tables: new Set(['policies']),
      nodes: new Set(),
    });
  });

  it('takes a table it does not key by node whole, even with nodes named (a newer replica’s)', () => {
    expect(changeOfNotice('{"table":"node_labels","nodes":["n1"]}')).toEqual({
      tables: new Set(['node_labels']),
      nodes: new Set(),
    });
  });

  it('takes a payload that does not parse as an unknown change', () => {
    for (const payload of ['', 'nodes', '{"nodes":["n1"]}', '{"table":"nodes","nodes":"n1"}', undefined])
      expect(changeOfNotice(payload)).toBe(UNKNOWN_CHANGE);
  });
});

describe('SqliteChangeFeed', () => {
  it('fires for another connection’s commit, never for the server’s own', async () => {
    const path = join(tempDir(), 'control.db');
    const database = await openDatabase(path);
    onCleanup(() => database.db.destroy());
    const store = new Store(database.db);
    const feed = database.changeFeed({ info() {}, warn() {}, error() {} }, 50);
    vi.useFakeTimers();
    let changes = 0;
    await feed.start((change) => {
      expect(change).toBe(UNKNOWN_CHANGE);
      changes++;
    });
    onCleanup(() => feed.close());

    await store.putSetting('own', 'write');
    vi.advanceTimersByTime(50);
    expect(changes).toBe(0);

    const other = openSqliteConnection(path);
    other.prepare("insert into settings (key, value) values ('cli', 'write')").run();
    other.close();
    vi.advanceTimersByTime(50);
    expect(changes).toBe(1);
  });
});

const noPostgres = await postgresAbsence();

describe.skipIf(noPostgres !== null)('PostgresChangeFeed', () => {
  /** A feed on a database holding node n1, a writer that is another replica, and what the feed said. */
  async function listening() {
    const url = await tempPostgres();
    await storeWithNode(url);
    const database = await openDatabase(url);
    onCleanup(() => database.db.destroy());
    const feed = database.changeFeed({ info() {}, warn() {}, error() {} });
    const heard: DatabaseChange[] = [];
    let wake = () => {};
    await feed.start((change) => {
      heard.push(change);
      wake();
    });
    onCleanup(() => feed.close());
    const other = new pg.Client({ connectionString: url });
    await other.connect();
    onCleanup(() => other.end());
    /** Waits until what was heard since the last call satisfies `done`; returns it. */
    const until = async (done: (changes: DatabaseChange[]) => boolean): Promise<DatabaseChange[]> => {
      while (!done(heard)) await new Promise<void>((resolve) => (wake = resolve));
      return heard.splice(0);
    };
    return { url, database, other, until };
  }

  const nodesOf = (changes: DatabaseChange[]) => new Set(changes.flatMap((c) => [...c.nodes]));

  it('names the nodes another connection changed, and nothing for its own pool’s commits', async () => {
    const { database, other, until } = await listening();
    // The own write names a table the other does not: heard, it would show in what is delivered.
    await new Store(database.db).putSetting('own', 'write');
    await other.query(`update nodes set endpoints = '["198.18.0.2:41641"]' where id = 'n1'`);
    const changes = await until((c) => nodesOf(c).has('n1'));
    expect(changes).toEqual([{ tables: new Set(), nodes: new Set(['n1']) }]);
  });

  it('names stream rows by their node, and a table without node ids whole', async () => {
    const { other, until } = await listening();
    await other.query(`insert into node_streams (node_id, replica, since) values ('n1', 'r', 'now')`);
    expect(nodesOf(await until((c) => c.length > 0))).toEqual(new Set(['n1']));
    await other.query(
      `insert into policies (version, text, created_at, created_by) values (1, '{}', 'now', 'test')`,
    );
    expect(await until((c) => c.length > 0)).toEqual([{ tables: new Set(['policies']), nodes: new Set() }]);
  });

  it('names every node of a statement too large for one notice', async () => {
    const { other, until } = await listening();
    // 400 ids of 45 bytes: about 20 kB, so several notices of under 8000 bytes each.
    const ids = Array.from({ length: 400 }, (_, i) => `node-${String(i).padStart(40, '0')}`);
    await other.query(
      `insert into nodes (id, name, hostname, machine_key, node_key, ipv4, ipv6, os, created_at)
       select id, id, id, 'mkey:' || id, 'nodekey:' || id, 'v4:' || id, 'v6:' || id, 'linux', 'now'
       from unnest($1::text[]) as id`,
      [ids],
    );
    const changes = await until((c) => nodesOf(c).size >= ids.length);
    expect(nodesOf(changes)).toEqual(new Set(ids));
    expect(changes.every((c) => c.tables?.size === 0)).toBe(true);
  });

  it('names the nodes a cascade deleted with their user, and the user table whole', async () => {
    const { other, until } = await listening();
    await other.query(`insert into users (id, name, created_at) values ('u1', 'alice', 'now')`);
    await other.query(`update nodes set user_id = 'u1' where id = 'n1'`);
    await until((c) => nodesOf(c).has('n1'));
    await other.query(`delete from users where id = 'u1'`);
    // Both, or this waits until the test's time-out.
    await until((c) => nodesOf(c).has('n1') && c.some((change) => change.tables?.has('users')));
  });

  it('takes a notice it cannot parse as an unknown change', async () => {
    const { other, until } = await listening();
    await other.query(`select pg_notify('${CHANGE_CHANNEL}', 'not json')`);
    expect(await until((c) => c.length > 0)).toEqual([UNKNOWN_CHANGE]);
    await other.query(`select pg_notify('${CHANGE_CHANNEL}', '{"nodes": "n1"}')`);
    expect(await until((c) => c.length > 0)).toEqual([UNKNOWN_CHANGE]);
  });

  it('takes its own reconnect as an unknown change: commits meanwhile were not heard', async () => {
    const { url, other, until } = await listening();
    const name = new URL(url).pathname.slice(1);
    await other.query(
      `select pg_terminate_backend(pid) from pg_stat_activity where datname = $1 and query like 'listen %'`,
      [name],
    );
    expect(await until((c) => c.length > 0)).toEqual([UNKNOWN_CHANGE]);
  });
});
