import type { Kysely, Migration, MigrationProvider } from 'kysely';

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
};

export const migrationProvider: MigrationProvider = {
  getMigrations: async () => migrations,
};
