import { join } from 'node:path';
import { Kysely, Migrator, SqliteDialect, sql } from 'kysely';
import { afterEach, describe, expect, it } from 'vitest';
import { cleanupAll, tempDir } from '../testing/harness.js';
import { migrate, migrationProvider } from './migrations.js';
import type { Database } from './schema.js';
import { openSqliteConnection, openSqliteDatabase } from './sqlite.js';

afterEach(cleanupAll);

describe('migrations', () => {
  it('build the schema on an empty database and are idempotent', async () => {
    const path = join(tempDir(), 'sub', 'control.db');
    const db = await openSqliteDatabase(path);
    await migrate(db);
    await db.destroy();
    const again = await openSqliteDatabase(path);
    const tables = await sql<{
      name: string;
    }>`select name from sqlite_master where type = 'table' order by name`.execute(again);
    expect(tables.rows.map((r) => r.name)).toEqual(
      expect.arrayContaining([
        'api_keys',
        'auth_attempts',
        'kysely_migration',
        'login_confirmations',
        'node_streams',
        'free_ipv4s',
        'nodes',
        'pending_logins',
        'policies',
        'preauth_keys',
        'replicas',
        'settings',
        'users',
      ]),
    );
    const applied = await sql<{ name: string }>`select name from kysely_migration`.execute(again);
    expect(applied.rows.map((r) => r.name)).toEqual([
      '0001_initial',
      '0002_identity',
      '0003_policies',
      '0004_login_confirmation',
      '0005_tailscale_clients',
      '0006_presence',
      '0007_ipv4_offsets',
      '0008_stream_generation',
      '0009_name_bases',
      '0010_name_base_kept_by_postgres',
      '0011_replica_stops',
      '0012_replica_starts',
    ]);
    await again.destroy();
  });

  it("give an existing tailnet its nodes' address offsets and the free list of the gaps below the highest", async () => {
    const path = join(tempDir(), 'control.db');
    const db = new Kysely<Database>({ dialect: new SqliteDialect({ database: openSqliteConnection(path) }) });
    await new Migrator({ db, provider: migrationProvider }).migrateTo('0006_presence');
    for (const [i, ipv4] of ['100.64.0.1', '100.64.0.3', '100.64.0.6'].entries()) {
      await sql`insert into nodes (id, name, hostname, tags, machine_key, node_key, ipv4, ipv6, endpoints,
        os, ephemeral, created_at, advertised_routes, approved_routes)
        values (${`n${i}`}, ${`h${i}`}, 'h', '[]', ${`m${i}`}, ${`k${i}`}, ${ipv4}, ${`fd00::${i}`}, '[]',
        'linux', 0, '2026-01-01T00:00:00Z', '[]', '[]')`.execute(db);
    }
    await migrate(db);
    const offsets = await db.selectFrom('nodes').select('ipv4_offset').orderBy('ipv4_offset').execute();
    expect(offsets.map((r) => r.ipv4_offset)).toEqual([1, 3, 6]);
    const free = await db.selectFrom('free_ipv4s').select('ipv4_offset').orderBy('ipv4_offset').execute();
    expect(free.map((r) => r.ipv4_offset)).toEqual([2, 4, 5]);
    await db.destroy();
  });

  it("give existing nodes and users their names' bases", async () => {
    const path = join(tempDir(), 'control.db');
    const db = new Kysely<Database>({ dialect: new SqliteDialect({ database: openSqliteConnection(path) }) });
    await new Migrator({ db, provider: migrationProvider }).migrateTo('0008_stream_generation');
    for (const [i, name] of ['web', 'web-1', 'web-a', 'web-2-10'].entries()) {
      await sql`insert into nodes (id, name, hostname, tags, machine_key, node_key, ipv4, ipv6, endpoints,
        os, ephemeral, created_at, advertised_routes, approved_routes)
        values (${`n${i}`}, ${name}, 'h', '[]', ${`m${i}`}, ${`k${i}`}, ${`100.64.0.${i + 1}`}, ${`fd00::${i}`},
        '[]', 'linux', 0, '2026-01-01T00:00:00Z', '[]', '[]')`.execute(db);
    }
    await sql`insert into users (id, name, created_at) values ('u1', 'bob-3', '2026-01-01T00:00:00Z')`.execute(
      db,
    );
    await migrate(db);
    const nodes = await db.selectFrom('nodes').select(['name', 'name_base']).orderBy('name').execute();
    expect(nodes.map((r) => r.name_base)).toEqual(['web', 'web', 'web-2', 'web-a']);
    expect(await db.selectFrom('users').select('name_base').execute()).toEqual([{ name_base: 'bob' }]);
    await db.destroy();
  });

  it('open the file in WAL mode with a busy timeout and foreign keys, owner-only', async () => {
    const path = join(tempDir(), 'control.db');
    const conn = openSqliteConnection(path);
    expect(conn.pragma('journal_mode', { simple: true })).toBe('wal');
    expect(conn.pragma('busy_timeout', { simple: true })).toBe(5000);
    expect(conn.pragma('foreign_keys', { simple: true })).toBe(1);
    conn.close();
    const { statSync } = await import('node:fs');
    expect(statSync(path).mode & 0o777).toBe(0o600);
  });

  it('cascade: deleting a user deletes their nodes and keys', async () => {
    const path = join(tempDir(), 'control.db');
    await (await openSqliteDatabase(path)).destroy();
    const db = new Kysely<Database>({ dialect: new SqliteDialect({ database: openSqliteConnection(path) }) });
    const now = new Date().toISOString();
    await db
      .insertInto('users')
      .values({
        id: 'u1',
        name: 'alice',
        name_base: 'alice',
        email: null,
        created_at: now,
        provider: null,
        subject: null,
        display_name: null,
        groups: '[]',
      })
      .execute();
    await db
      .insertInto('preauth_keys')
      .values({
        id: 'k1',
        key_hash: 'h',
        user_id: 'u1',
        reusable: 0,
        ephemeral: 0,
        tags: '[]',
        expires_at: null,
        used_count: 0,
        created_at: now,
      })
      .execute();
    await db
      .insertInto('nodes')
      .values({
        id: 'n1',
        name: 'a',
        name_base: 'a',
        hostname: 'a',
        user_id: 'u1',
        preauth_key_id: 'k1',
        tags: '[]',
        machine_key: 'm',
        node_key: 'k',
        ipv4: '100.64.0.1',
        ipv6: 'fd00::6440:1',
        endpoints: '[]',
        os: 'linux',
        ephemeral: 0,
        created_at: now,
        last_seen: null,
        key_expiry: null,
        advertised_routes: '[]',
        approved_routes: '[]',
        kind: 'weft',
        client_version: null,
        disco_key: null,
        home_relay: null,
        ipv4_offset: 1,
      })
      .execute();
    await db.deleteFrom('users').where('id', '=', 'u1').execute();
    expect(await db.selectFrom('preauth_keys').selectAll().execute()).toEqual([]);
    expect(await db.selectFrom('nodes').selectAll().execute()).toEqual([]);
    await db.destroy();
  });
});
