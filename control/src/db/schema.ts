// Row types as kysely sees them. Portable column types only (text, integer) so the same schema runs
// on SQLite and PostgreSQL: booleans are 0/1 integers, lists are JSON text, times are ISO-8601 text.

export interface SettingsTable {
  key: string;
  value: string;
}

export interface UsersTable {
  id: string;
  name: string;
  email: string | null;
  created_at: string;
}

export interface PreauthKeysTable {
  id: string;
  /** SHA-256 of the key, hex: the key itself is shown once and never stored. */
  key_hash: string;
  user_id: string;
  reusable: number;
  ephemeral: number;
  tags: string;
  expires_at: string | null;
  used_count: number;
  created_at: string;
}

export interface NodesTable {
  id: string;
  /** Unique name in the tailnet, chosen from the hostname at first registration and then kept. */
  name: string;
  /** The hostname the machine last reported. */
  hostname: string;
  /** The owner; null for tagged nodes, which belong to their tags. */
  user_id: string | null;
  /** The pre-auth key that registered the node, so the same machine may re-use a single-use key. */
  preauth_key_id: string | null;
  tags: string;
  machine_key: string;
  node_key: string;
  ipv4: string;
  ipv6: string;
  endpoints: string;
  os: string;
  ephemeral: number;
  created_at: string;
  last_seen: string | null;
  key_expiry: string | null;
  advertised_routes: string;
  approved_routes: string;
}

export interface Database {
  settings: SettingsTable;
  users: UsersTable;
  preauth_keys: PreauthKeysTable;
  nodes: NodesTable;
}
