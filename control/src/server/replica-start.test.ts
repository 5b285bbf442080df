import pg from 'pg';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { Store } from '../db/store.js';
import {
  cleanupAll,
  onCleanup,
  type StreamClient,
  startTestControl,
  TestMachine,
  twoOnline,
} from '../testing/harness.js';
import { postgresAbsence, tempPostgres } from '../testing/postgres.js';

// A starting replica LISTENs before its first reads: a commit of another replica between its first
// read of the nodes and a later LISTEN would never be heard, since the notices that follow name
// other nodes and are read alone (a later partial read does not bring it).

const noPostgres = await postgresAbsence();
afterEach(async () => {
  vi.restoreAllMocks();
  await cleanupAll();
});
const peer = (s: StreamClient, name: string) => s.netmap?.peers.find((p) => p.name === name);

describe.skipIf(noPostgres !== null)('a replica starting', () => {
  it('hears a node change committed between its first read of the nodes and its LISTEN', async () => {
    const db = await tempPostgres();
    const r1 = await startTestControl({ config: { db } });
    const { key, sb: sc } = await twoOnline(r1, { names: ['a', 'c'], timeoutMs: 5_000 });

    // Another replica's commit lands right after r2's first read of every node (r1's store was made
    // before the spy and keeps the original method).
    const other = new pg.Client({ connectionString: db });
    await other.connect();
    onCleanup(() => other.end());
    const original = Store.prototype.listNodes;
    let raced = false;
    vi.spyOn(Store.prototype, 'listNodes').mockImplementation(async function (this: Store) {
      const rows = await original.call(this);
      if (!raced) {
        raced = true;
        await other.query(`update nodes set endpoints = '["198.18.0.99:41641"]' where hostname = 'a'`);
      }
      return rows;
    });
    const r2 = await startTestControl({ config: { db } });
    expect(raced).toBe(true);
    const b = new TestMachine(r2);
    await b.join('b', key);
    const sb = await b.stream();
    await sb.until('a and c', (s) => peer(s, 'a') !== undefined && peer(s, 'c') !== undefined, 5_000);

    // A later change to c alone, through r1: r2 hears it (before this branch, by reloading every node).
    sc.send({ type: 'endpoints', endpoints: ['198.18.0.13:41641'] });
    await sb.until(
      'c endpoints',
      (s) => peer(s, 'c')?.endpoints.includes('198.18.0.13:41641') === true,
      5_000,
    );
    await sb.until(
      'a endpoints',
      (s) => peer(s, 'a')?.endpoints.includes('198.18.0.99:41641') === true,
      5_000,
    );
  });
});
