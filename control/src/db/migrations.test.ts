import { join } from 'node:path';
import { Kysely, SqliteDialect, sql } from 'kysely';
import { afterEach, describe, expect, it } from 'vitest';
import { cleanupAll, tempDir } from '../testing/harness.js';
import { migrate } from './migrations.js';
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
    ]);
    await again.destroy();
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
      })
      .execute();
    await db.deleteFrom('users').where('id', '=', 'u1').execute();
    expect(await db.selectFrom('preauth_keys').selectAll().execute()).toEqual([]);
    expect(await db.selectFrom('nodes').selectAll().execute()).toEqual([]);
    await db.destroy();
  });
});
