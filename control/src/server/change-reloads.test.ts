import { describe, expect, it } from 'vitest';
import { UNKNOWN_CHANGE } from '../db/change-feed.js';
import { reloadsFor } from './change-reloads.js';

// Another connection's commit is read back only as far as it reaches: named nodes alone, a policy
// without the nodes, and everything when the feed cannot say or names a table this version lacks.

const tables = (...names: string[]) => ({ tables: new Set(names), nodes: new Set<string>() });

describe('reloadsFor', () => {
  it('reads named nodes alone', () => {
    expect(reloadsFor({ tables: new Set(), nodes: new Set(['n1', 'n2']) })).toEqual({
      dns: false,
      policy: false,
      nodes: new Set(['n1', 'n2']),
    });
  });

  it('reads what each table feeds', () => {
    expect(reloadsFor(tables('policies'))).toEqual({ dns: false, policy: true, nodes: new Set() });
    expect(reloadsFor(tables('settings'))).toEqual({ dns: true, policy: false, nodes: new Set() });
    // Node records carry their user's name and groups; a truncate names no node.
    expect(reloadsFor(tables('users')).nodes).toBe('all');
    expect(reloadsFor(tables('nodes')).nodes).toBe('all');
    expect(reloadsFor(tables('preauth_keys', 'pending_logins', 'free_ipv4s'))).toEqual({
      dns: false,
      policy: false,
      nodes: new Set(),
    });
  });

  it('reloads everything for an unknown change or table', () => {
    const everything = { dns: true, policy: true, nodes: 'all' };
    expect(reloadsFor(UNKNOWN_CHANGE)).toEqual(everything);
    expect(reloadsFor(tables('a_newer_replicas_table'))).toEqual(everything);
  });
});
