import { join } from 'node:path';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { openDatabase } from '../db/open.js';
import { Store } from '../db/store.js';
import type { NetmapSync } from '../netmap/sync.js';
import { cleanupAll, onCleanup, tempDir } from '../testing/harness.js';
import { Presence } from './presence.js';

// The only server on a SQLite database keeps no heartbeat (each write would wake its own change
// feed, and so reload the whole tailnet every few seconds) and forgets a previous run's streams at
// once; replicas on PostgreSQL beat and reap (replicas.test.ts).

afterEach(cleanupAll);

const silent = { info() {}, warn() {}, error() {} };

async function storeWithStream(): Promise<Store> {
  const database = await openDatabase(join(tempDir(), 'control.db'));
  onCleanup(() => database.db.destroy());
  const store = new Store(database.db);
  await store.insertNode({
    id: 'n1',
    name: 'a',
    hostname: 'a',
    userId: null,
    preauthKeyId: null,
    tags: ['tag:server'],
    machineKey: 'mkey:n1',
    nodeKey: 'nodekey:n1',
    ipv4: '100.64.0.1',
    ipv6: 'fd00:1:2::1',
    endpoints: [],
    os: 'linux',
    ephemeral: false,
    createdAt: new Date().toISOString(),
    lastSeen: null,
    keyExpiry: null,
    advertisedRoutes: [],
    approvedRoutes: [],
  });
  // A previous run of the server (another replica id) held the node's stream when it died.
  await store.replicaHeartbeat('previous-run', new Date());
  await store.nodeConnected('n1', 'previous-run', new Date());
  return store;
}

describe('presence of the only server (SQLite)', () => {
  it('forgets the previous run at start and writes no heartbeat after', async () => {
    const store = await storeWithStream();
    let reloads = 0;
    const sync = { refresh: async () => void reloads++ } as unknown as NetmapSync;
    const presence = new Presence(
      store,
      sync,
      async (_job, fn) => {
        await fn();
        return true;
      },
      silent,
      {
        heartbeatMs: 20,
        deadAfterMs: 10_000,
      },
      true,
    );
    expect((await store.nodeById('n1'))?.streamedBy).toBe('previous-run');
    const beats = vi.spyOn(store, 'replicaHeartbeat');
    await presence.start();
    onCleanup(() => presence.close());
    expect((await store.nodeById('n1'))?.streamedBy).toBeNull();
    expect(reloads).toBe(1);
    // No timer: one heartbeat at start (a replica's would beat every 20 ms here), no reload after.
    await new Promise((r) => setTimeout(r, 120));
    expect(beats).toHaveBeenCalledTimes(1);
    expect(reloads).toBe(1);
  });
});
