import type { Kysely, Selectable, Transaction } from 'kysely';
import type { NodeRecord, NodeUpdate, PreauthKeyRecord, UserRecord } from '../tailnet/records.js';
import type { Database, NodesTable, PreauthKeysTable, UsersTable } from './schema.js';

// The repository: every SQL statement control runs is in this file, written with kysely's portable
// builder, so a PostgreSQL dialect can replace SQLite without touching callers.

type NodeRow = Selectable<NodesTable> & { user_name: string | null };

const json = (value: unknown): string => JSON.stringify(value);
const list = (text: string): string[] => JSON.parse(text) as string[];

function toUser(row: Selectable<UsersTable>): UserRecord {
  return { id: row.id, name: row.name, email: row.email, createdAt: row.created_at };
}

function toPreauthKey(row: Selectable<PreauthKeysTable>): PreauthKeyRecord {
  return {
    id: row.id,
    keyHash: row.key_hash,
    userId: row.user_id,
    reusable: row.reusable === 1,
    ephemeral: row.ephemeral === 1,
    tags: list(row.tags),
    expiresAt: row.expires_at,
    usedCount: row.used_count,
    createdAt: row.created_at,
  };
}

function toNode(row: NodeRow): NodeRecord {
  return {
    id: row.id,
    name: row.name,
    hostname: row.hostname,
    userId: row.user_id,
    userName: row.user_name,
    preauthKeyId: row.preauth_key_id,
    tags: list(row.tags),
    machineKey: row.machine_key,
    nodeKey: row.node_key,
    ipv4: row.ipv4,
    ipv6: row.ipv6,
    endpoints: list(row.endpoints),
    os: row.os,
    ephemeral: row.ephemeral === 1,
    createdAt: row.created_at,
    lastSeen: row.last_seen,
    keyExpiry: row.key_expiry,
    advertisedRoutes: list(row.advertised_routes),
    approvedRoutes: list(row.approved_routes),
  };
}

function nodeColumns(update: NodeUpdate): Partial<NodesTable> {
  const out: Partial<NodesTable> = {};
  if (update.hostname !== undefined) out.hostname = update.hostname;
  if (update.userId !== undefined) out.user_id = update.userId;
  if (update.preauthKeyId !== undefined) out.preauth_key_id = update.preauthKeyId;
  if (update.tags !== undefined) out.tags = json(update.tags);
  if (update.nodeKey !== undefined) out.node_key = update.nodeKey;
  if (update.endpoints !== undefined) out.endpoints = json(update.endpoints);
  if (update.os !== undefined) out.os = update.os;
  if (update.ephemeral !== undefined) out.ephemeral = update.ephemeral ? 1 : 0;
  if (update.lastSeen !== undefined) out.last_seen = update.lastSeen;
  if (update.keyExpiry !== undefined) out.key_expiry = update.keyExpiry;
  return out;
}

export class Store {
  constructor(private readonly db: Kysely<Database>) {}

  /** Runs `fn` in one transaction (joining the current one if this store is already inside one). */
  transaction<T>(fn: (tx: Store) => Promise<T>): Promise<T> {
    if (this.db.isTransaction) return fn(this);
    return this.db.transaction().execute((trx: Transaction<Database>) => fn(new Store(trx)));
  }

  destroy(): Promise<void> {
    return this.db.destroy();
  }

  // settings

  async setting(key: string): Promise<string | undefined> {
    const row = await this.db
      .selectFrom('settings')
      .select('value')
      .where('key', '=', key)
      .executeTakeFirst();
    return row?.value;
  }

  /** Returns the setting, storing `make()` first if it is absent (the first writer wins a race). */
  async ensureSetting(key: string, make: () => string): Promise<string> {
    const existing = await this.setting(key);
    if (existing !== undefined) return existing;
    await this.db
      .insertInto('settings')
      .values({ key, value: make() })
      .onConflict((oc) => oc.column('key').doNothing())
      .execute();
    const stored = await this.setting(key);
    if (stored === undefined) throw new Error(`setting ${key} vanished`);
    return stored;
  }

  // users

  async insertUser(user: UserRecord): Promise<void> {
    await this.db
      .insertInto('users')
      .values({ id: user.id, name: user.name, email: user.email, created_at: user.createdAt })
      .execute();
  }

  async listUsers(): Promise<UserRecord[]> {
    const rows = await this.db.selectFrom('users').selectAll().orderBy('name').execute();
    return rows.map(toUser);
  }

  async userByName(name: string): Promise<UserRecord | undefined> {
    const row = await this.db.selectFrom('users').selectAll().where('name', '=', name).executeTakeFirst();
    return row && toUser(row);
  }

  // pre-auth keys

  async insertPreauthKey(key: PreauthKeyRecord): Promise<void> {
    await this.db
      .insertInto('preauth_keys')
      .values({
        id: key.id,
        key_hash: key.keyHash,
        user_id: key.userId,
        reusable: key.reusable ? 1 : 0,
        ephemeral: key.ephemeral ? 1 : 0,
        tags: json(key.tags),
        expires_at: key.expiresAt,
        used_count: key.usedCount,
        created_at: key.createdAt,
      })
      .execute();
  }

  async preauthKeyByHash(hash: string): Promise<PreauthKeyRecord | undefined> {
    const row = await this.db
      .selectFrom('preauth_keys')
      .selectAll()
      .where('key_hash', '=', hash)
      .executeTakeFirst();
    return row && toPreauthKey(row);
  }

  /** Counts one use; false when a single-use key was used meanwhile (the check and the count are one statement). */
  async consumePreauthKey(id: string): Promise<boolean> {
    const result = await this.db
      .updateTable('preauth_keys')
      .set((eb) => ({ used_count: eb('used_count', '+', 1) }))
      .where('id', '=', id)
      .where((eb) => eb.or([eb('reusable', '=', 1), eb('used_count', '=', 0)]))
      .executeTakeFirst();
    return result.numUpdatedRows === 1n;
  }

  // nodes

  private nodes() {
    return this.db
      .selectFrom('nodes')
      .leftJoin('users', 'users.id', 'nodes.user_id')
      .selectAll('nodes')
      .select('users.name as user_name');
  }

  async listNodes(): Promise<NodeRecord[]> {
    return (await this.nodes().orderBy('nodes.name').execute()).map(toNode);
  }

  async nodeById(id: string): Promise<NodeRecord | undefined> {
    const row = await this.nodes().where('nodes.id', '=', id).executeTakeFirst();
    return row && toNode(row);
  }

  async nodeByMachineKey(machineKey: string): Promise<NodeRecord | undefined> {
    const row = await this.nodes().where('nodes.machine_key', '=', machineKey).executeTakeFirst();
    return row && toNode(row);
  }

  async nodeByNodeKey(nodeKey: string): Promise<NodeRecord | undefined> {
    const row = await this.nodes().where('nodes.node_key', '=', nodeKey).executeTakeFirst();
    return row && toNode(row);
  }

  async nodeByName(name: string): Promise<NodeRecord | undefined> {
    const row = await this.nodes().where('nodes.name', '=', name).executeTakeFirst();
    return row && toNode(row);
  }

  /** Names equal to `exact` or starting with `stem-`: every name a new node's name could clash with. */
  async namesLike(exact: string, stem: string): Promise<string[]> {
    const rows = await this.db
      .selectFrom('nodes')
      .select('name')
      .where((eb) => eb.or([eb('name', '=', exact), eb('name', 'like', `${stem}-%`)]))
      .execute();
    return rows.map((r) => r.name);
  }

  async usedIPv4s(): Promise<string[]> {
    return (await this.db.selectFrom('nodes').select('ipv4').execute()).map((r) => r.ipv4);
  }

  async insertNode(node: Omit<NodeRecord, 'userName'>): Promise<void> {
    await this.db
      .insertInto('nodes')
      .values({
        id: node.id,
        name: node.name,
        hostname: node.hostname,
        user_id: node.userId,
        preauth_key_id: node.preauthKeyId,
        tags: json(node.tags),
        machine_key: node.machineKey,
        node_key: node.nodeKey,
        ipv4: node.ipv4,
        ipv6: node.ipv6,
        endpoints: json(node.endpoints),
        os: node.os,
        ephemeral: node.ephemeral ? 1 : 0,
        created_at: node.createdAt,
        last_seen: node.lastSeen,
        key_expiry: node.keyExpiry,
        advertised_routes: json(node.advertisedRoutes),
        approved_routes: json(node.approvedRoutes),
      })
      .execute();
  }

  async updateNode(id: string, update: NodeUpdate): Promise<void> {
    const set = nodeColumns(update);
    if (Object.keys(set).length === 0) return;
    await this.db.updateTable('nodes').set(set).where('id', '=', id).execute();
  }

  async deleteNode(id: string): Promise<boolean> {
    const result = await this.db.deleteFrom('nodes').where('id', '=', id).executeTakeFirst();
    return result.numDeletedRows === 1n;
  }
}
