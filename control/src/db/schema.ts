// Row types as kysely sees them. Portable column types only (text, integer) so the same schema runs
// on SQLite and PostgreSQL: booleans are 0/1 integers, lists are JSON text, times are ISO-8601 text.

export interface SettingsTable {
  key: string;
  value: string;
}

export interface UsersTable {
  id: string;
  name: string;
  /** nameBase(name), for the lookup of names a new one could clash with. */
  name_base: string;
  email: string | null;
  created_at: string;
  /** The identity provider: an OIDC issuer URL, or `github`; null for users made by an admin. */
  provider: string | null;
  /** The provider's stable id for the person (OIDC `sub`, GitHub user id). */
  subject: string | null;
  display_name: string | null;
  /** JSON list of the provider's group names at the last sign-in. */
  groups: string;
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
  /** nameBase(name), for the lookup of names a new one could clash with. */
  name_base: string;
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
  /** `weft` (Weft's engine) or `tailscale` (an official Tailscale client over ts2021). */
  kind: string;
  /** The client's version as it reports it (Weft's engine, or Tailscale's IPNVersion). */
  client_version: string | null;
  /** Tailscale clients: the disco key their magicsock probes paths with (base64). */
  disco_key: string | null;
  /** Tailscale clients: the relay (DERP) region they call home, as their MapRequest says. */
  home_relay: number | null;
  /** `ipv4`'s place in 100.64.0.0/10 (indexed: the highest is where unused addresses start). */
  ipv4_offset: number | null;
}

/** Addresses of deleted nodes below the highest in use: the lowest is the next one handed out. */
export interface FreeIpv4sTable {
  ipv4_offset: number;
}

export interface PendingLoginsTable {
  /** The random id in the auth URL. */
  id: string;
  /** The machine and node key that asked: the only ones the login can authorize. */
  machine_key: string;
  node_key: string;
  hostname: string;
  os: string;
  status: 'pending' | 'authorized' | 'cancelled';
  node_id: string | null;
  /** Who signed in, for the waiting node's log and the result page. */
  user_name: string | null;
  created_at: string;
  expires_at: string;
  /** The address the registration came from ('' for logins made before it was kept). */
  source: string;
}

export interface AuthAttemptsTable {
  /** The OAuth `state`, also kept in the browser's cookie. */
  state: string;
  login_id: string;
  provider: string;
  nonce: string;
  code_verifier: string;
  expires_at: string;
  /** SHA-256 (hex) of the cookie of the browser that started it. */
  browser_hash: string;
}

export interface LoginConfirmationsTable {
  /** SHA-256 (hex) of the token in the confirmation page's form. */
  token_hash: string;
  login_id: string;
  browser_hash: string;
  /** The signed-in Identity, JSON. */
  identity: string;
  expires_at: string;
}

export interface ApiKeysTable {
  /** The key's public part, shown by `apikey list` and used to revoke it. */
  prefix: string;
  /** SHA-256 of the whole key, hex. */
  key_hash: string;
  created_at: string;
  expires_at: string;
  last_used_at: string | null;
}

export interface PoliciesTable {
  /** 1, 2, …: the highest is in force. */
  version: number;
  /** The policy file exactly as it was set (HuJSON). */
  text: string;
  created_at: string;
  /** Who set it: `cli:USER`, `file:PATH`, `api:KEY-PREFIX`. */
  created_by: string;
}

/** A node's live stream and the replica that holds it. */
export interface NodeStreamsTable {
  node_id: string;
  /** The replica's id, random at each start. */
  replica: string;
  since: string;
  /** Which of the replica's streams wrote the row (a per-replica sequence): only its end deletes it. */
  stream: number;
}

/** Each running replica's last heartbeat: streams of a replica gone silent are dropped. */
export interface ReplicasTable {
  id: string;
  seen_at: string;
  /** When it stopped cleanly; null while it runs, or when it was killed. */
  stopped_at: string | null;
  /** Set by the last replica running as it stopped: its streams wait for the next one's restart grace. */
  held_since: string | null;
  /** Its first heartbeat (null: a replica of a version before migration 0012). */
  started_at: string | null;
}

export interface Database {
  settings: SettingsTable;
  users: UsersTable;
  preauth_keys: PreauthKeysTable;
  nodes: NodesTable;
  free_ipv4s: FreeIpv4sTable;
  pending_logins: PendingLoginsTable;
  auth_attempts: AuthAttemptsTable;
  login_confirmations: LoginConfirmationsTable;
  api_keys: ApiKeysTable;
  policies: PoliciesTable;
  node_streams: NodeStreamsTable;
  replicas: ReplicasTable;
}
