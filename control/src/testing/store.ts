import { join } from 'node:path';
import { openDatabase } from '../db/open.js';
import { Store } from '../db/store.js';
import { onCleanup, tempDir } from './harness.js';

/** A store on a fresh SQLite file (`db`, else a temp one) holding one tagged node, `n1`; closed at cleanupAll. */
export async function storeWithNode(db = join(tempDir(), 'control.db')): Promise<Store> {
  const database = await openDatabase(db);
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
  return store;
}
