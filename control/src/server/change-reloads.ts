import type { DatabaseChange } from '../db/change-feed.js';
import type { Database } from '../db/schema.js';

// What another process's or replica's commit makes this server read again. Nodes named by the
// change feed are read alone (NetmapSync.refreshNodes); a table changed whole is read again by
// whatever follows it; a change the feed cannot name (SQLite's poll, a reconnect, a notice that did
// not parse) or a table this version does not know (a newer replica's) reloads everything.

type Reload = 'dns' | 'policy' | 'nodes';

/** What each table feeds (a new table is a compile error until it is listed here). */
const RELOADS: Record<keyof Database, readonly Reload[]> = {
  // The DNS settings; the control keys and the ULA prefix are read once at start and never rewritten.
  settings: ['dns'],
  // Node records carry their user's name, email and groups (the policy's groups too).
  users: ['nodes'],
  // Named by node except for a truncate, or ids too long for a notice.
  nodes: ['nodes'],
  node_streams: ['nodes'],
  policies: ['policy'],
  // Read per request, never held: registrations, sign-ins and admin keys.
  preauth_keys: [],
  free_ipv4s: [],
  pending_logins: [],
  auth_attempts: [],
  login_confirmations: [],
  api_keys: [],
  replicas: [],
};

const EVERYTHING: readonly Reload[] = ['dns', 'policy', 'nodes'];

export interface Reloads {
  dns: boolean;
  policy: boolean;
  /** Every node, or only these (empty: none). */
  nodes: 'all' | ReadonlySet<string>;
}

export function reloadsFor(change: DatabaseChange): Reloads {
  if (change.tables === null) return { dns: true, policy: true, nodes: 'all' };
  const out: Reloads = { dns: false, policy: false, nodes: change.nodes };
  for (const table of change.tables) {
    const reloads = Object.hasOwn(RELOADS, table) ? RELOADS[table as keyof Database] : EVERYTHING;
    for (const reload of reloads) {
      if (reload === 'nodes') out.nodes = 'all';
      else out[reload] = true;
    }
  }
  return out;
}
