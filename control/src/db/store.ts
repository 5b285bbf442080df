import {
  type ExpressionBuilder,
  type Kysely,
  PostgresAdapter,
  type Selectable,
  sql,
  type Transaction,
} from 'kysely';
import { ipv4Offset } from '../tailnet/addresses.js';
import { nameBase } from '../tailnet/names.js';
import type {
  ApiKeyRecord,
  AuthAttemptRecord,
  LoginConfirmationRecord,
  NewNode,
  NodeRecord,
  NodeUpdate,
  PendingLoginRecord,
  PolicyRecord,
  PreauthKeyRecord,
  UserRecord,
} from '../tailnet/records.js';
import type {
  ApiKeysTable,
  Database,
  NodesTable,
  PendingLoginsTable,
  PoliciesTable,
  PreauthKeysTable,
  UsersTable,
} from './schema.js';

// The repository: every SQL statement control runs is in this file, written with kysely's portable
// builder, so a PostgreSQL dialect can replace SQLite without touching callers.

/**
 * The application_name a replica gives its PostgreSQL sessions: the reaper takes a replica whose
 * heartbeat is late but whose sessions are still open for busy, not dead (see dropSilentReplicas).
 */
const SESSION_PREFIX = 'weft-control ';
export const replicaSessionName = (replica: string) => SESSION_PREFIX + replica;

type NodeRow = Selectable<NodesTable> & {
  user_name: string | null;
  user_email: string | null;
  user_groups: string | null;
  stream_replica: string | null;
};

const json = (value: unknown): string => JSON.stringify(value);
/** pg_advisory_xact_lock key of name and address allocation. */
const ALLOCATION_LOCK = 0x77656675;
/** pg_advisory_xact_lock key of a replica's start and clean stop (replicaStarted, replicaStopped). */
const REPLICA_LIFE_LOCK = 0x77656670;
const list = (text: string): string[] => JSON.parse(text) as string[];

function toUser(row: Selectable<UsersTable>): UserRecord {
  return {
    id: row.id,
    name: row.name,
    email: row.email,
    createdAt: row.created_at,
    provider: row.provider,
    subject: row.subject,
    displayName: row.display_name,
    groups: list(row.groups),
  };
}

function userColumns(user: UserRecord): UsersTable {
  return {
    id: user.id,
    name: user.name,
    name_base: nameBase(user.name),
    email: user.email,
    created_at: user.createdAt,
    provider: user.provider,
    subject: user.subject,
    display_name: user.displayName,
    groups: json(user.groups),
  };
}

function toPendingLogin(row: Selectable<PendingLoginsTable>): PendingLoginRecord {
  return {
    id: row.id,
    machineKey: row.machine_key,
    nodeKey: row.node_key,
    hostname: row.hostname,
    os: row.os,
    status: row.status,
    nodeId: row.node_id,
    userName: row.user_name,
    createdAt: row.created_at,
    expiresAt: row.expires_at,
    source: row.source,
  };
}

function toApiKey(row: Selectable<ApiKeysTable>): ApiKeyRecord {
  return {
    prefix: row.prefix,
    keyHash: row.key_hash,
    createdAt: row.created_at,
    expiresAt: row.expires_at,
    lastUsedAt: row.last_used_at,
  };
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
    userEmail: row.user_email,
    userGroups: row.user_groups === null ? [] : list(row.user_groups),
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
    kind: row.kind === 'tailscale' ? 'tailscale' : 'weft',
    clientVersion: row.client_version,
    discoKey: row.disco_key,
    homeRelay: row.home_relay,
    streamedBy: row.stream_replica,
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
  if (update.advertisedRoutes !== undefined) out.advertised_routes = json(update.advertisedRoutes);
  if (update.approvedRoutes !== undefined) out.approved_routes = json(update.approvedRoutes);
  if (update.kind !== undefined) out.kind = update.kind;
  if (update.clientVersion !== undefined) out.client_version = update.clientVersion;
  if (update.discoKey !== undefined) out.disco_key = update.discoKey;
  if (update.homeRelay !== undefined) out.home_relay = update.homeRelay;
  return out;
}

const NODES_PER_QUERY = 500;

/** One stream a replica holds: its node and its number among the replica's streams. */
export interface HeldStream {
  nodeId: string;
  stream: number;
}

const offsetOrNull = (ipv4: string): number | null => {
  const offset = ipv4Offset(ipv4);
  return offset < 0 ? null : offset;
};

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

  /** Stores the setting, replacing any value it had. */
  async putSetting(key: string, value: string): Promise<void> {
    await this.db
      .insertInto('settings')
      .values({ key, value })
      .onConflict((oc) => oc.column('key').doUpdateSet({ value }))
      .execute();
  }

  // users

  async insertUser(user: UserRecord): Promise<void> {
    await this.db.insertInto('users').values(userColumns(user)).execute();
  }

  /** Refreshes what the identity provider says about a user at each sign-in. */
  async updateUserClaims(
    id: string,
    claims: Pick<UserRecord, 'email' | 'displayName' | 'groups' | 'provider' | 'subject'>,
  ): Promise<void> {
    await this.db
      .updateTable('users')
      .set({
        email: claims.email,
        display_name: claims.displayName,
        groups: json(claims.groups),
        provider: claims.provider,
        subject: claims.subject,
      })
      .where('id', '=', id)
      .execute();
  }

  async userByIdentity(provider: string, subject: string): Promise<UserRecord | undefined> {
    const row = await this.db
      .selectFrom('users')
      .selectAll()
      .where('provider', '=', provider)
      .where('subject', '=', subject)
      .executeTakeFirst();
    return row && toUser(row);
  }

  /** Names equal to `exact` or `stem` with a `-N` suffix (or without), as for node names. */
  async userNamesLike(exact: string, stem: string): Promise<string[]> {
    const rows = await this.db
      .selectFrom('users')
      .select('name')
      .where((eb) => eb.or([eb('name', '=', exact), eb('name_base', '=', stem)]))
      .execute();
    return rows.map((r) => r.name);
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
      .leftJoin('node_streams', 'node_streams.node_id', 'nodes.id')
      .selectAll('nodes')
      .select([
        'users.name as user_name',
        'users.email as user_email',
        'users.groups as user_groups',
        'node_streams.replica as stream_replica',
      ]);
  }

  async listNodes(): Promise<NodeRecord[]> {
    return (await this.nodes().orderBy('nodes.name').execute()).map(toNode);
  }

  async nodeById(id: string): Promise<NodeRecord | undefined> {
    const row = await this.nodes().where('nodes.id', '=', id).executeTakeFirst();
    return row && toNode(row);
  }

  /** The nodes among `ids` that exist (in no particular order). */
  async nodesByIds(ids: readonly string[]): Promise<NodeRecord[]> {
    const out: NodeRecord[] = [];
    // Bounded so a large batch stays under SQLite's limit on bound parameters.
    for (let i = 0; i < ids.length; i += NODES_PER_QUERY) {
      const chunk = ids.slice(i, i + NODES_PER_QUERY);
      for (const row of await this.nodes().where('nodes.id', 'in', chunk).execute()) out.push(toNode(row));
    }
    return out;
  }

  /** The nodes of these machine keys that exist (in no particular order). */
  async nodesByMachineKeys(machineKeys: readonly string[]): Promise<NodeRecord[]> {
    const out: NodeRecord[] = [];
    for (let i = 0; i < machineKeys.length; i += NODES_PER_QUERY) {
      const chunk = machineKeys.slice(i, i + NODES_PER_QUERY);
      for (const row of await this.nodes().where('nodes.machine_key', 'in', chunk).execute())
        out.push(toNode(row));
    }
    return out;
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

  /**
   * Names equal to `exact` or `stem` with a `-N` suffix (or without): every name a new node's name
   * could clash with. Two index lookups.
   */
  async namesLike(exact: string, stem: string): Promise<string[]> {
    const rows = await this.db
      .selectFrom('nodes')
      .select('name')
      .where((eb) => eb.or([eb('name', '=', exact), eb('name_base', '=', stem)]))
      .execute();
    return rows.map((r) => r.name);
  }

  /**
   * Within a transaction, waits until no other one allocates names and addresses (PostgreSQL, where
   * several replicas write at once); SQLite already lets one writer at a time in.
   */
  async serializeAllocation(): Promise<void> {
    await this.advisoryXactLock(ALLOCATION_LOCK);
  }

  /**
   * Within a transaction (its first statement), REPLICA_LIFE_LOCK; READ COMMITTED whatever the
   * database's default, so that what follows sees what the lock's previous holder committed (a
   * snapshot from before the wait would not).
   */
  private async replicaLifeLock(): Promise<void> {
    if (this.db.getExecutor().adapter instanceof PostgresAdapter) {
      await sql`set transaction isolation level read committed`.execute(this.db);
    }
    await this.advisoryXactLock(REPLICA_LIFE_LOCK);
  }

  private async advisoryXactLock(key: number): Promise<void> {
    if (this.db.getExecutor().adapter instanceof PostgresAdapter) {
      await sql`select pg_advisory_xact_lock(${key})`.execute(this.db);
    }
  }

  /** The highest IPv4 offset a node has (0: none); an index read. */
  async highestIPv4Offset(): Promise<number> {
    const row = await this.db
      .selectFrom('nodes')
      .select((eb) => eb.fn.max('ipv4_offset').as('top'))
      .executeTakeFirst();
    return Number(row?.top ?? 0);
  }

  /** Takes the lowest offset of the free list below `below` out of it; undefined when there is none. */
  async takeFreeIPv4Offset(below: number): Promise<number | undefined> {
    const row = await this.db
      .selectFrom('free_ipv4s')
      .select('ipv4_offset')
      .where('ipv4_offset', '<', below)
      .orderBy('ipv4_offset')
      .limit(1)
      .executeTakeFirst();
    if (row === undefined) return undefined;
    await this.db.deleteFrom('free_ipv4s').where('ipv4_offset', '=', row.ipv4_offset).execute();
    return row.ipv4_offset;
  }

  /** The node that has the address `ipv4`, if one does. */
  async nodeIdWithIPv4(ipv4: string): Promise<string | undefined> {
    const row = await this.db.selectFrom('nodes').select('id').where('ipv4', '=', ipv4).executeTakeFirst();
    return row?.id;
  }

  /** Records the offset of a node's address (one inserted without it). */
  async setIPv4Offset(id: string, ipv4: string): Promise<void> {
    await this.db
      .updateTable('nodes')
      .set({ ipv4_offset: offsetOrNull(ipv4) })
      .where('id', '=', id)
      .execute();
  }

  async insertNode(node: NewNode): Promise<void> {
    await this.db
      .insertInto('nodes')
      .values({
        id: node.id,
        name: node.name,
        name_base: nameBase(node.name),
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
        kind: node.kind ?? 'weft',
        client_version: node.clientVersion ?? null,
        disco_key: node.discoKey ?? null,
        home_relay: node.homeRelay ?? null,
        ipv4_offset: offsetOrNull(node.ipv4),
      })
      .execute();
  }

  async updateNode(id: string, update: NodeUpdate): Promise<void> {
    const set = nodeColumns(update);
    if (Object.keys(set).length === 0) return;
    await this.db.updateTable('nodes').set(set).where('id', '=', id).execute();
  }

  /** Gives the node a new name (an admin's rename); a name another node has is a unique violation. */
  async renameNode(id: string, name: string): Promise<boolean> {
    const result = await this.db
      .updateTable('nodes')
      .set({ name, name_base: nameBase(name) })
      .where('id', '=', id)
      .executeTakeFirst();
    return result.numUpdatedRows === 1n;
  }

  /** Deletes the node; its address goes on the free list. */
  async deleteNode(id: string): Promise<boolean> {
    return this.transaction(async (tx) => {
      const row = await tx.db
        .deleteFrom('nodes')
        .where('id', '=', id)
        .returning('ipv4_offset')
        .executeTakeFirst();
      if (row === undefined) return false;
      if (row.ipv4_offset !== null) {
        await tx.db
          .insertInto('free_ipv4s')
          .values({ ipv4_offset: row.ipv4_offset })
          .onConflict((oc) => oc.column('ipv4_offset').doNothing())
          .execute();
      }
      return true;
    });
  }

  // presence: which replica holds each node's stream

  /**
   * These streams are now held by `replica` (each node's taken over from any other), in one statement
   * per NODES_PER_QUERY: a replica's connects are written together (Presence.connected). A node's
   * last-seen time is written when its stream ends: while online, peers are told "online", not a time.
   */
  async streamsConnected(streams: readonly HeldStream[], replica: string, at: Date): Promise<void> {
    const since = at.toISOString();
    for (let i = 0; i < streams.length; i += NODES_PER_QUERY) {
      await this.db
        .insertInto('node_streams')
        .values(
          streams
            .slice(i, i + NODES_PER_QUERY)
            .map((s) => ({ node_id: s.nodeId, replica, since, stream: s.stream })),
        )
        .onConflict((oc) =>
          oc.column('node_id').doUpdateSet((eb) => ({
            replica: eb.ref('excluded.replica'),
            since: eb.ref('excluded.since'),
            stream: eb.ref('excluded.stream'),
          })),
        )
        .execute();
    }
  }

  /**
   * The node's stream `stream` on `replica` ended; a newer one (there or elsewhere) keeps its row.
   * Without a stream (none was recorded) only the last seen is written.
   */
  async nodeDisconnected(
    nodeId: string,
    replica: string,
    stream: number | undefined,
    at: Date,
  ): Promise<void> {
    await this.transaction(async (tx) => {
      await tx.updateNode(nodeId, { lastSeen: at.toISOString() });
      if (stream !== undefined) await tx.releaseStreams([{ nodeId, stream }], replica);
    });
  }

  /**
   * The last seen of many nodes, in one transaction (a shutdown ending every stream at once: one
   * transaction per node took seconds at 10,000 and held the restart up). Their stream rows stay
   * (Presence.close).
   */
  async nodesLastSeen(nodeIds: readonly string[], at: Date): Promise<void> {
    await this.transaction(async (tx) => {
      for (let i = 0; i < nodeIds.length; i += NODES_PER_QUERY) {
        const chunk = nodeIds.slice(i, i + NODES_PER_QUERY);
        await tx.db
          .updateTable('nodes')
          .set({ last_seen: at.toISOString() })
          .where('id', 'in', chunk)
          .execute();
      }
    });
  }

  /**
   * Drops `replica`'s rows of these streams, and of any older stream of the same node there (a
   * replacing stream whose own row write failed leaves the replaced one's row, which its end must
   * clear); a node's newer stream keeps its row. A replica numbers its streams upwards.
   */
  async releaseStreams(streams: readonly HeldStream[], replica: string): Promise<void> {
    for (let i = 0; i < streams.length; i += NODES_PER_QUERY) {
      const chunk = streams.slice(i, i + NODES_PER_QUERY);
      await this.db
        .deleteFrom('node_streams')
        .where('replica', '=', replica)
        .where((eb) =>
          eb.or(chunk.map((s) => eb.and([eb('node_id', '=', s.nodeId), eb('stream', '<=', s.stream)]))),
        )
        .execute();
    }
  }

  /** How many streams the database says `replica` holds. */
  async streamCount(replica: string): Promise<number> {
    const row = await this.db
      .selectFrom('node_streams')
      .select((eb) => eb.fn.countAll().as('count'))
      .where('replica', '=', replica)
      .executeTakeFirstOrThrow();
    return Number(row.count);
  }

  /**
   * Writes `replica`'s rows for `streams` where a node has none (a stream held elsewhere stays
   * there; a node deleted meanwhile gets none); returns how many were written.
   */
  async claimStreams(streams: readonly HeldStream[], replica: string, at: Date): Promise<number> {
    let written = 0;
    for (let i = 0; i < streams.length; i += NODES_PER_QUERY) {
      const chunk = streams.slice(i, i + NODES_PER_QUERY);
      const result = await this.db
        .insertInto('node_streams')
        .columns(['node_id', 'replica', 'since', 'stream'])
        .expression((eb) =>
          eb
            .selectFrom('nodes')
            .select((s) => {
              // Each node's own stream number, picked by id (an insert from a select has one row per node).
              const first = chunk[0] as HeldStream; // a chunk is never empty
              let stream = s.case('nodes.id').when(first.nodeId).then(first.stream);
              for (const held of chunk.slice(1)) stream = stream.when(held.nodeId).then(held.stream);
              return [
                'nodes.id',
                s.val(replica).as('replica'),
                s.val(at.toISOString()).as('since'),
                stream.end().as('stream'),
              ];
            })
            .where(
              'nodes.id',
              'in',
              chunk.map((s) => s.nodeId),
            ),
        )
        .onConflict((oc) => oc.column('node_id').doNothing())
        .executeTakeFirst();
      written += Number(result.numInsertedOrUpdatedRows ?? 0n);
    }
    return written;
  }

  async replicaHeartbeat(replica: string, at: Date): Promise<void> {
    await this.db
      .insertInto('replicas')
      .values({ id: replica, seen_at: at.toISOString() })
      .onConflict((oc) => oc.column('id').doUpdateSet({ seen_at: at.toISOString() }))
      .execute();
  }

  /**
   * A replica's first heartbeat, serialised with replicaStopped: a replica stopping meanwhile either
   * sees this one running (and holds nothing) or has held its streams before this one looks.
   */
  async replicaStarted(replica: string, at: Date): Promise<void> {
    await this.transaction(async (tx) => {
      await tx.replicaLifeLock();
      const start = at.toISOString();
      await tx.db
        .insertInto('replicas')
        .values({ id: replica, seen_at: start, started_at: start })
        .onConflict((oc) => oc.column('id').doUpdateSet({ seen_at: start, started_at: start }))
        .execute();
    });
  }

  /**
   * A clean stop: `replica`'s last heartbeat, marked stopped. When no other replica runs (one that is
   * not stopped, was heard from since `runningSince` and started before `upSince`), it was the last:
   * its streams and those of every replica stopped since `runningSince`, not reaped yet, are held
   * from `at` (rows held already keep their time). Returns whether it was the last.
   */
  async replicaStopped(replica: string, at: Date, runningSince: Date, upSince: Date): Promise<boolean> {
    return this.transaction(async (tx) => {
      await tx.replicaLifeLock();
      const stop = at.toISOString();
      await tx.db
        .insertInto('replicas')
        .values({ id: replica, seen_at: stop, stopped_at: stop })
        .onConflict((oc) => oc.column('id').doUpdateSet({ seen_at: stop, stopped_at: stop }))
        .execute();
      const since = runningSince.toISOString();
      const running = await tx.db
        .selectFrom('replicas')
        .select('id')
        .where('stopped_at', 'is', null)
        .where('seen_at', '>=', since)
        .where((eb) => eb.or([eb('started_at', 'is', null), eb('started_at', '<', upSince.toISOString())]))
        .executeTakeFirst();
      if (running !== undefined) return false;
      await tx.db
        .updateTable('replicas')
        .set({ held_since: stop })
        .where('stopped_at', 'is not', null)
        .where('seen_at', '>=', since)
        .where('held_since', 'is', null)
        .execute();
      return true;
    });
  }

  /** The stopped replicas whose streams are held for a restart's grace. */
  async heldReplicas(): Promise<string[]> {
    const rows = await this.db
      .selectFrom('replicas')
      .select('id')
      .where('held_since', 'is not', null)
      .execute();
    return rows.map((r) => r.id);
  }

  /** Drops every replica but `replica` and their streams (the only server's previous runs); how many streams. */
  async dropOtherReplicas(replica: string): Promise<number> {
    return this.transaction(async (tx) => {
      const dropped = await tx.db
        .deleteFrom('node_streams')
        .where('replica', '!=', replica)
        .executeTakeFirst();
      await tx.db.deleteFrom('replicas').where('id', '!=', replica).execute();
      return Number(dropped.numDeletedRows);
    });
  }

  /**
   * Drops the held replicas of `ids` and their streams (a restart's grace for them is over; rows
   * held since wait for their own); how many streams.
   */
  async dropHeldReplicas(ids: readonly string[]): Promise<number> {
    if (ids.length === 0) return 0;
    return this.transaction(async (tx) => {
      const held = tx.db
        .selectFrom('replicas')
        .select('id')
        .where('held_since', 'is not', null)
        .where('id', 'in', ids);
      const dropped = await tx.db.deleteFrom('node_streams').where('replica', 'in', held).executeTakeFirst();
      await tx.db.deleteFrom('replicas').where('held_since', 'is not', null).where('id', 'in', ids).execute();
      return Number(dropped.numDeletedRows);
    });
  }

  /**
   * Forgets the streams of every replica not heard from since `cutoff` (killed, or stopped) and
   * those replicas, except held ones (replicaStopped) held since `heldCutoff`, and on PostgreSQL,
   * given `connectedCutoff`, those heard from since then that still have a session open (see
   * replicaSessionName); returns the nodes whose streams went (the reaper reads just those back).
   */
  async dropSilentReplicas(cutoff: Date, heldCutoff: Date, connectedCutoff?: Date): Promise<string[]> {
    // SQLite has no sessions: one server, or processes sharing a file.
    const sessions = this.db.getExecutor().adapter instanceof PostgresAdapter ? connectedCutoff : undefined;
    return this.transaction(async (tx) => {
      // Never null (a null comparison under `not` would keep a silent replica's row for ever).
      const kept = (eb: ExpressionBuilder<Database, 'replicas'>) =>
        eb.or([
          eb('seen_at', '>=', cutoff.toISOString()),
          eb.and([eb('held_since', 'is not', null), eb('held_since', '>=', heldCutoff.toISOString())]),
          ...(sessions === undefined
            ? []
            : [
                eb.and([
                  eb('seen_at', '>=', sessions.toISOString()),
                  // A killed process's sessions end with its sockets; a busy or paused one's stay.
                  eb.exists(
                    eb
                      .selectFrom(sql<{ application_name: string }>`pg_stat_activity`.as('session'))
                      .select(sql`1`.as('one'))
                      .where(sql<boolean>`session.datname = current_database()`)
                      .where(sql<boolean>`session.application_name = ${SESSION_PREFIX} || replicas.id`),
                  ),
                ]),
              ]),
        ]);
      const alive = tx.db.selectFrom('replicas').select('id').where(kept);
      const dropped = await tx.db
        .deleteFrom('node_streams')
        .where('replica', 'not in', alive)
        .returning('node_id')
        .execute();
      await tx.db
        .deleteFrom('replicas')
        .where((eb) => eb.not(kept(eb)))
        .execute();
      return dropped.map((row) => row.node_id);
    });
  }

  // interactive logins

  async insertPendingLogin(login: PendingLoginRecord): Promise<void> {
    await this.db
      .insertInto('pending_logins')
      .values({
        id: login.id,
        machine_key: login.machineKey,
        node_key: login.nodeKey,
        hostname: login.hostname,
        os: login.os,
        status: login.status,
        node_id: login.nodeId,
        user_name: login.userName,
        created_at: login.createdAt,
        expires_at: login.expiresAt,
        source: login.source,
      })
      .execute();
  }

  /** How many logins are pending and unexpired at `now`, in all or from one source address. */
  async countOpenLogins(now: Date, source?: string): Promise<number> {
    let query = this.db
      .selectFrom('pending_logins')
      .select((eb) => eb.fn.countAll<number>().as('n'))
      .where('status', '=', 'pending')
      .where('expires_at', '>', now.toISOString());
    if (source !== undefined) query = query.where('source', '=', source);
    const row = await query.executeTakeFirst();
    return Number(row?.n ?? 0);
  }

  async pendingLogin(id: string): Promise<PendingLoginRecord | undefined> {
    const row = await this.db
      .selectFrom('pending_logins')
      .selectAll()
      .where('id', '=', id)
      .executeTakeFirst();
    return row && toPendingLogin(row);
  }

  /** The machine's newest login, whatever its state. */
  async latestLoginOf(machineKey: string): Promise<PendingLoginRecord | undefined> {
    const row = await this.db
      .selectFrom('pending_logins')
      .selectAll()
      .where('machine_key', '=', machineKey)
      .orderBy('created_at', 'desc')
      .executeTakeFirst();
    return row && toPendingLogin(row);
  }

  /** Marks a pending login done; false when it was no longer pending (finished or cancelled meanwhile). */
  async finishPendingLogin(
    id: string,
    outcome: { status: 'authorized'; nodeId: string; userName: string } | { status: 'cancelled' },
  ): Promise<boolean> {
    const result = await this.db
      .updateTable('pending_logins')
      .set(
        outcome.status === 'authorized'
          ? { status: 'authorized', node_id: outcome.nodeId, user_name: outcome.userName }
          : { status: 'cancelled' },
      )
      .where('id', '=', id)
      .where('status', '=', 'pending')
      .executeTakeFirst();
    return result.numUpdatedRows === 1n;
  }

  /** Cancels every pending login of a machine; returns how many there were. */
  async cancelLoginsOf(machineKey: string): Promise<number> {
    const result = await this.db
      .updateTable('pending_logins')
      .set({ status: 'cancelled' })
      .where('machine_key', '=', machineKey)
      .where('status', '=', 'pending')
      .executeTakeFirst();
    return Number(result.numUpdatedRows);
  }

  /** Forgets logins (and their attempts) that ended before `before`: kept until then to explain the outcome. */
  async deleteLoginsExpiredBefore(before: Date): Promise<void> {
    await this.db.deleteFrom('pending_logins').where('expires_at', '<', before.toISOString()).execute();
  }

  /**
   * Starts a browser's trip to the provider. It replaces that browser's earlier attempt at the same
   * login, and a login keeps only its newest `keep` attempts: reloading the link adds no rows.
   */
  async insertAuthAttempt(attempt: AuthAttemptRecord, keep: number): Promise<void> {
    await this.transaction(async (tx) => {
      await tx.db
        .deleteFrom('auth_attempts')
        .where('login_id', '=', attempt.loginId)
        .where('browser_hash', '=', attempt.browserHash)
        .execute();
      await tx.db
        .insertInto('auth_attempts')
        .values({
          state: attempt.state,
          login_id: attempt.loginId,
          provider: attempt.provider,
          nonce: attempt.nonce,
          code_verifier: attempt.codeVerifier,
          expires_at: attempt.expiresAt,
          browser_hash: attempt.browserHash,
        })
        .execute();
      const older = await tx.db
        .selectFrom('auth_attempts')
        .select('state')
        .where('login_id', '=', attempt.loginId)
        .orderBy('expires_at', 'desc')
        .offset(keep)
        .limit(1_000)
        .execute();
      if (older.length > 0)
        await tx.db
          .deleteFrom('auth_attempts')
          .where(
            'state',
            'in',
            older.map((r) => r.state),
          )
          .execute();
    });
  }

  async insertLoginConfirmation(c: LoginConfirmationRecord): Promise<void> {
    await this.db
      .insertInto('login_confirmations')
      .values({
        token_hash: c.tokenHash,
        login_id: c.loginId,
        browser_hash: c.browserHash,
        identity: c.identity,
        expires_at: c.expiresAt,
      })
      .execute();
  }

  async loginConfirmation(tokenHash: string): Promise<LoginConfirmationRecord | undefined> {
    const row = await this.db
      .selectFrom('login_confirmations')
      .selectAll()
      .where('token_hash', '=', tokenHash)
      .executeTakeFirst();
    return (
      row && {
        tokenHash: row.token_hash,
        loginId: row.login_id,
        browserHash: row.browser_hash,
        identity: row.identity,
        expiresAt: row.expires_at,
      }
    );
  }

  /** Uses a confirmation up; false when it was used (or removed) already. */
  async deleteLoginConfirmation(tokenHash: string): Promise<boolean> {
    const result = await this.db
      .deleteFrom('login_confirmations')
      .where('token_hash', '=', tokenHash)
      .executeTakeFirst();
    return result.numDeletedRows === 1n;
  }

  /**
   * Removes and returns an attempt: each can be completed once, so a replayed callback finds
   * nothing. Read and delete run in one transaction so two replays cannot both get it.
   */
  async takeAuthAttempt(state: string): Promise<AuthAttemptRecord | undefined> {
    return this.transaction(async (tx) => {
      const row = await tx.db
        .selectFrom('auth_attempts')
        .selectAll()
        .where('state', '=', state)
        .executeTakeFirst();
      if (row === undefined) return undefined;
      const deleted = await tx.db.deleteFrom('auth_attempts').where('state', '=', state).executeTakeFirst();
      if (deleted.numDeletedRows !== 1n) return undefined;
      return {
        state: row.state,
        loginId: row.login_id,
        provider: row.provider,
        nonce: row.nonce,
        codeVerifier: row.code_verifier,
        expiresAt: row.expires_at,
        browserHash: row.browser_hash,
      };
    });
  }

  // API keys

  async insertApiKey(key: ApiKeyRecord): Promise<void> {
    await this.db
      .insertInto('api_keys')
      .values({
        prefix: key.prefix,
        key_hash: key.keyHash,
        created_at: key.createdAt,
        expires_at: key.expiresAt,
        last_used_at: key.lastUsedAt,
      })
      .execute();
  }

  async apiKeyByHash(hash: string): Promise<ApiKeyRecord | undefined> {
    const row = await this.db
      .selectFrom('api_keys')
      .selectAll()
      .where('key_hash', '=', hash)
      .executeTakeFirst();
    return row && toApiKey(row);
  }

  async listApiKeys(): Promise<ApiKeyRecord[]> {
    return (await this.db.selectFrom('api_keys').selectAll().orderBy('created_at').execute()).map(toApiKey);
  }

  async touchApiKey(prefix: string, at: Date): Promise<void> {
    await this.db
      .updateTable('api_keys')
      .set({ last_used_at: at.toISOString() })
      .where('prefix', '=', prefix)
      .execute();
  }

  async deleteApiKey(prefix: string): Promise<boolean> {
    const result = await this.db.deleteFrom('api_keys').where('prefix', '=', prefix).executeTakeFirst();
    return result.numDeletedRows === 1n;
  }

  // policies

  /** The version in force: 0 when none was ever set. One indexed read, cheap to poll. */
  async policyVersion(): Promise<number> {
    const row = await this.db
      .selectFrom('policies')
      .select('version')
      .orderBy('version', 'desc')
      .limit(1)
      .executeTakeFirst();
    return row?.version ?? 0;
  }

  async currentPolicy(): Promise<PolicyRecord | undefined> {
    const row = await this.db
      .selectFrom('policies')
      .selectAll()
      .orderBy('version', 'desc')
      .limit(1)
      .executeTakeFirst();
    return row && toPolicy(row);
  }

  /** Stores `text` as the next version. Two writers at once: one fails on the version, retry it. */
  async insertPolicy(text: string, createdBy: string, at: Date): Promise<PolicyRecord> {
    return this.transaction(async (tx) => {
      const record = {
        version: (await tx.policyVersion()) + 1,
        text,
        createdAt: at.toISOString(),
        createdBy,
      };
      await tx.db
        .insertInto('policies')
        .values({ version: record.version, text, created_at: record.createdAt, created_by: createdBy })
        .execute();
      return record;
    });
  }

  /** Every version, newest first, without the texts. */
  async listPolicies(): Promise<Omit<PolicyRecord, 'text'>[]> {
    const rows = await this.db
      .selectFrom('policies')
      .select(['version', 'created_at', 'created_by'])
      .orderBy('version', 'desc')
      .execute();
    return rows.map((r) => ({ version: r.version, createdAt: r.created_at, createdBy: r.created_by }));
  }
}

function toPolicy(row: Selectable<PoliciesTable>): PolicyRecord {
  return { version: row.version, text: row.text, createdAt: row.created_at, createdBy: row.created_by };
}
