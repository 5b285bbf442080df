import { type Kysely, type Migration, type MigrationProvider, Migrator, PostgresAdapter, sql } from 'kysely';
import { ipv4Offset, unusedIPv4Offsets } from '../tailnet/addresses.js';
import { nameBase } from '../tailnet/names.js';
import type { Database } from './schema.js';

// Numbered, append-only schema migrations, kept in code so the built server carries them. Never edit
// one that has shipped: add the next number. Only portable DDL, so PostgreSQL runs the same list.

const migrations: Record<string, Migration> = {
  '0001_initial': {
    async up(db: Kysely<unknown>) {
      await db.schema
        .createTable('settings')
        .addColumn('key', 'text', (c) => c.primaryKey())
        .addColumn('value', 'text', (c) => c.notNull())
        .execute();

      await db.schema
        .createTable('users')
        .addColumn('id', 'text', (c) => c.primaryKey())
        .addColumn('name', 'text', (c) => c.notNull().unique())
        .addColumn('email', 'text')
        .addColumn('created_at', 'text', (c) => c.notNull())
        .execute();

      await db.schema
        .createTable('preauth_keys')
        .addColumn('id', 'text', (c) => c.primaryKey())
        .addColumn('key_hash', 'text', (c) => c.notNull().unique())
        .addColumn('user_id', 'text', (c) => c.notNull().references('users.id').onDelete('cascade'))
        .addColumn('reusable', 'integer', (c) => c.notNull())
        .addColumn('ephemeral', 'integer', (c) => c.notNull())
        .addColumn('tags', 'text', (c) => c.notNull().defaultTo('[]'))
        .addColumn('expires_at', 'text')
        .addColumn('used_count', 'integer', (c) => c.notNull().defaultTo(0))
        .addColumn('created_at', 'text', (c) => c.notNull())
        .execute();

      await db.schema
        .createTable('nodes')
        .addColumn('id', 'text', (c) => c.primaryKey())
        .addColumn('name', 'text', (c) => c.notNull().unique())
        .addColumn('hostname', 'text', (c) => c.notNull())
        .addColumn('user_id', 'text', (c) => c.references('users.id').onDelete('cascade'))
        .addColumn('preauth_key_id', 'text', (c) => c.references('preauth_keys.id').onDelete('set null'))
        .addColumn('tags', 'text', (c) => c.notNull().defaultTo('[]'))
        .addColumn('machine_key', 'text', (c) => c.notNull().unique())
        .addColumn('node_key', 'text', (c) => c.notNull())
        .addColumn('ipv4', 'text', (c) => c.notNull().unique())
        .addColumn('ipv6', 'text', (c) => c.notNull().unique())
        .addColumn('endpoints', 'text', (c) => c.notNull().defaultTo('[]'))
        .addColumn('os', 'text', (c) => c.notNull())
        .addColumn('ephemeral', 'integer', (c) => c.notNull().defaultTo(0))
        .addColumn('created_at', 'text', (c) => c.notNull())
        .addColumn('last_seen', 'text')
        .addColumn('key_expiry', 'text')
        .addColumn('advertised_routes', 'text', (c) => c.notNull().defaultTo('[]'))
        .addColumn('approved_routes', 'text', (c) => c.notNull().defaultTo('[]'))
        .execute();
      await db.schema.createIndex('nodes_user_id').on('nodes').column('user_id').execute();
      // Peers are keyed by node key: two nodes sharing one would confuse every peer's WireGuard.
      await db.schema.createIndex('nodes_node_key').on('nodes').column('node_key').unique().execute();
    },
  },

  '0002_identity': {
    async up(db: Kysely<unknown>) {
      // A user signed in through an identity provider is that provider's (issuer, subject) pair;
      // users made with `users create` have neither.
      await db.schema.alterTable('users').addColumn('provider', 'text').execute();
      await db.schema.alterTable('users').addColumn('subject', 'text').execute();
      await db.schema.alterTable('users').addColumn('display_name', 'text').execute();
      await db.schema
        .alterTable('users')
        .addColumn('groups', 'text', (c) => c.notNull().defaultTo('[]'))
        .execute();
      await db.schema
        .createIndex('users_identity')
        .on('users')
        .columns(['provider', 'subject'])
        .unique()
        .execute();

      // Interactive logins in the database rather than in memory, so any replica can finish a
      // sign-in that another one started and a restart loses nothing.
      await db.schema
        .createTable('pending_logins')
        .addColumn('id', 'text', (c) => c.primaryKey())
        .addColumn('machine_key', 'text', (c) => c.notNull())
        .addColumn('node_key', 'text', (c) => c.notNull())
        .addColumn('hostname', 'text', (c) => c.notNull())
        .addColumn('os', 'text', (c) => c.notNull())
        .addColumn('status', 'text', (c) => c.notNull())
        .addColumn('node_id', 'text')
        .addColumn('user_name', 'text')
        .addColumn('created_at', 'text', (c) => c.notNull())
        .addColumn('expires_at', 'text', (c) => c.notNull())
        .execute();
      await db.schema
        .createIndex('pending_logins_machine')
        .on('pending_logins')
        .column('machine_key')
        .execute();

      // One browser's trip to the identity provider and back: the secrets it must present again.
      await db.schema
        .createTable('auth_attempts')
        .addColumn('state', 'text', (c) => c.primaryKey())
        .addColumn('login_id', 'text', (c) => c.notNull().references('pending_logins.id').onDelete('cascade'))
        .addColumn('provider', 'text', (c) => c.notNull())
        .addColumn('nonce', 'text', (c) => c.notNull())
        .addColumn('code_verifier', 'text', (c) => c.notNull())
        .addColumn('expires_at', 'text', (c) => c.notNull())
        .execute();

      await db.schema
        .createTable('api_keys')
        .addColumn('prefix', 'text', (c) => c.primaryKey())
        .addColumn('key_hash', 'text', (c) => c.notNull().unique())
        .addColumn('created_at', 'text', (c) => c.notNull())
        .addColumn('expires_at', 'text', (c) => c.notNull())
        .addColumn('last_used_at', 'text')
        .execute();
    },
  },

  '0003_policies': {
    async up(db: Kysely<unknown>) {
      // Every policy ever set, newest version in force: the CLI, the file watcher and every replica
      // write here, and servers pick a new version up through the change feed.
      await db.schema
        .createTable('policies')
        .addColumn('version', 'integer', (c) => c.primaryKey())
        .addColumn('text', 'text', (c) => c.notNull())
        .addColumn('created_at', 'text', (c) => c.notNull())
        .addColumn('created_by', 'text', (c) => c.notNull())
        .execute();
    },
  },

  '0004_login_confirmation': {
    async up(db: Kysely<unknown>) {
      // Where a login was asked from: shown on the confirmation page and counted against the
      // per-source cap of pending logins.
      await db.schema
        .alterTable('pending_logins')
        .addColumn('source', 'text', (c) => c.notNull().defaultTo(''))
        .execute();
      // The browser that opened the link (SHA-256 of its cookie): only it may finish the attempt.
      await db.schema
        .alterTable('auth_attempts')
        .addColumn('browser_hash', 'text', (c) => c.notNull().defaultTo(''))
        .execute();
      // A person signed in and now sees "Connect this device?": who they are, until they press
      // Connect in the same browser (with the page's token) or it expires.
      await db.schema
        .createTable('login_confirmations')
        .addColumn('token_hash', 'text', (c) => c.primaryKey())
        .addColumn('login_id', 'text', (c) => c.notNull().references('pending_logins.id').onDelete('cascade'))
        .addColumn('browser_hash', 'text', (c) => c.notNull())
        .addColumn('identity', 'text', (c) => c.notNull())
        .addColumn('expires_at', 'text', (c) => c.notNull())
        .execute();
      await db.schema
        .createIndex('pending_logins_source')
        .on('pending_logins')
        .columns(['source', 'status'])
        .execute();
    },
  },

  '0005_tailscale_clients': {
    async up(db: Kysely<unknown>) {
      // Official Tailscale clients share the node table: what kind a node is, which release it
      // runs, and the two things their peers need that Weft nodes do not have (disco key, home DERP).
      await db.schema
        .alterTable('nodes')
        .addColumn('kind', 'text', (c) => c.notNull().defaultTo('weft'))
        .execute();
      await db.schema.alterTable('nodes').addColumn('client_version', 'text').execute();
      await db.schema.alterTable('nodes').addColumn('disco_key', 'text').execute();
      await db.schema.alterTable('nodes').addColumn('home_relay', 'integer').execute();
    },
  },

  '0006_presence': {
    async up(db: Kysely<unknown>) {
      // Which server (replica) holds each node's stream: a node is online when it has a row here,
      // whichever replica it reached. The row goes with the stream, or with its replica when that
      // replica stops sending heartbeats (killed).
      await db.schema
        .createTable('node_streams')
        .addColumn('node_id', 'text', (c) => c.primaryKey().references('nodes.id').onDelete('cascade'))
        .addColumn('replica', 'text', (c) => c.notNull())
        .addColumn('since', 'text', (c) => c.notNull())
        .execute();
      await db.schema.createIndex('node_streams_replica').on('node_streams').column('replica').execute();
      await db.schema
        .createTable('replicas')
        .addColumn('id', 'text', (c) => c.primaryKey())
        .addColumn('seen_at', 'text', (c) => c.notNull())
        .execute();
    },
  },

  '0007_ipv4_offsets': {
    async up(db: Kysely<unknown>) {
      // A registration read every node's address to find the lowest free one: O(N) each, most of
      // registering 10,000 nodes. Now the highest offset is an index read away, and the addresses of
      // deleted nodes below it are a free list.
      await db.schema.alterTable('nodes').addColumn('ipv4_offset', 'integer').execute();
      const { rows } = await sql<{ id: string; ipv4: string }>`select id, ipv4 from nodes`.execute(db);
      const offsets: number[] = [];
      for (const { id, ipv4 } of rows) {
        const offset = ipv4Offset(ipv4);
        if (offset < 0) continue;
        offsets.push(offset);
        await sql`update nodes set ipv4_offset = ${offset} where id = ${id}`.execute(db);
      }
      await db.schema.createIndex('nodes_ipv4_offset').on('nodes').column('ipv4_offset').unique().execute();
      await db.schema
        .createTable('free_ipv4s')
        .addColumn('ipv4_offset', 'integer', (c) => c.primaryKey())
        .execute();
      const free = unusedIPv4Offsets(offsets);
      for (let i = 0; i < free.length; i += 500) {
        const values = free.slice(i, i + 500).map((offset) => sql`(${offset})`);
        await sql`insert into free_ipv4s (ipv4_offset) values ${sql.join(values)}`.execute(db);
      }
    },
  },

  '0008_stream_generation': {
    async up(db: Kysely<unknown>) {
      // A node reconnecting to the same replica: its old stream's end and its new stream's start are
      // written through different connections (PostgreSQL's pool), in either order. The row names
      // the stream that wrote it, so the old one's delete cannot take the new one's row.
      await db.schema
        .alterTable('node_streams')
        .addColumn('stream', 'integer', (c) => c.notNull().defaultTo(0))
        .execute();
    },
  },

  '0009_name_bases': {
    async up(db: Kysely<unknown>) {
      // A registration looked for clashing names with `name LIKE 'stem-%'`, which read every node
      // (7.2 s of registering 10,000): each name's base (nameBase) is now stored and indexed.
      for (const table of ['nodes', 'users']) {
        await db.schema
          .alterTable(table)
          .addColumn('name_base', 'text', (c) => c.notNull().defaultTo(''))
          .execute();
        const { rows } = await sql<{
          id: string;
          name: string;
        }>`select id, name from ${sql.table(table)}`.execute(db);
        for (const { id, name } of rows) {
          await sql`update ${sql.table(table)} set name_base = ${nameBase(name)} where id = ${id}`.execute(
            db,
          );
        }
        await db.schema.createIndex(`${table}_name_base`).on(table).column('name_base').execute();
      }
    },
  },

  '0010_name_base_kept_by_postgres': {
    async up(db: Kysely<unknown>) {
      // In a rolling upgrade, replicas of the version before 0009 still insert and rename nodes and
      // users without a base: a name such a replica wrote would not be found as a clash, and its
      // hostname could never register again. PostgreSQL, where replicas run side by side, keeps the
      // base itself, by nameBase's rule; SQLite has one server at a time, which writes it.
      if (!(db.getExecutor().adapter instanceof PostgresAdapter)) return;
      await sql`create function weft_name_base() returns trigger language plpgsql as $$
        begin
          new.name_base := coalesce(substring(new.name from '^(.+)-[0-9]+$'), new.name);
          return new;
        end $$`.execute(db);
      for (const table of ['nodes', 'users']) {
        await sql`create trigger ${sql.raw(`${table}_name_base`)} before insert or update of name
          on ${sql.table(table)} for each row execute function weft_name_base()`.execute(db);
      }
    },
  },

  '0011_replica_stops': {
    async up(db: Kysely<unknown>) {
      // A replica that stopped cleanly says so (a killed one cannot); the last one running to stop
      // also holds the streams of every stopped replica for the next one's restart grace, since when
      // (presence.ts). Both null: running, or killed.
      await db.schema.alterTable('replicas').addColumn('stopped_at', 'text').execute();
      await db.schema.alterTable('replicas').addColumn('held_since', 'text').execute();
    },
  },

  '0012_replica_starts': {
    async up(db: Kysely<unknown>) {
      // When a replica started: one started within a restart's grace of a stop is still coming up
      // (a surge rollout's new replica), and does not keep the stopping one from holding
      // (presence.ts). Null: a replica of an earlier version, counted as up.
      await db.schema.alterTable('replicas').addColumn('started_at', 'text').execute();
    },
  },
};

export const migrationProvider: MigrationProvider = {
  getMigrations: async () => migrations,
};

/** Applies every migration not yet applied; a no-op on an up-to-date database. */
export async function migrate(db: Kysely<Database>): Promise<void> {
  const { error } = await new Migrator({ db, provider: migrationProvider }).migrateToLatest();
  if (error) throw new Error(`database migration failed: ${error instanceof Error ? error.message : error}`);
}
