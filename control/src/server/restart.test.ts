import { STREAM_PATH } from '@weft/protocol';
import { afterEach, describe, expect, it } from 'vitest';
import {
  cleanupAll,
  StreamClient,
  startTestControl,
  type TestControl,
  TestMachine,
} from '../testing/harness.js';
import { testDatabaseKinds } from '../testing/postgres.js';

// A clean restart of the only server (SQLite), or of the only replica on PostgreSQL, leaves its
// nodes online for their peers: the streams of the previous run count as online for the restart's
// grace (limits.restartGraceMs), so the herd reconnecting changes no one's presence; a node not back
// by then goes offline.

afterEach(cleanupAll);

/** A replica's presence timing, short: the restart below takes longer than its reaper's limit. */
const PRESENCE = { heartbeatMs: 50, deadAfterMs: 200 };

const peer = (s: StreamClient, name: string) => s.netmap?.peers.find((p) => p.name === name);

/** `m`'s stream to the restarted server (the same control key, another port). */
function reconnect(m: TestMachine, again: TestControl): Promise<StreamClient> {
  return StreamClient.open(again.control.url, m.sign('GET', STREAM_PATH, ''));
}

/** Messages after the whole map that carry anything about the node `id`. */
function about(s: StreamClient, id: string) {
  return s.messages.slice(1).filter((m) => JSON.stringify(m).includes(id));
}

for (const { kind, skip, create } of await testDatabaseKinds()) {
  /**
   * A tailnet of a and b (b ephemeral if asked), both streaming, then control stopped and, after
   * longer than a replica's reaper waits for a silent one, started again on its database.
   */
  const restarted = async (
    restartGraceMs: number,
    opts: { ephemeralB?: boolean; ephemeralGraceMs?: number } = {},
  ) => {
    const options = { ...PRESENCE, ephemeralGraceMs: opts.ephemeralGraceMs, limits: { restartGraceMs } };
    const t = await startTestControl({ ...options, config: { db: await create() } });
    const key = await t.key('--reusable');
    const a = new TestMachine(t);
    const b = new TestMachine(t);
    const ids = {
      a: (await a.join('a', key)).id,
      b: (await b.join('b', opts.ephemeralB ? await t.key('--ephemeral') : key)).id,
    };
    const sa = await a.stream();
    await b.stream();
    await sa.until('b online', (c) => peer(c, 'b')?.online === true);
    await t.control.close();
    // Without the hold, the next replica's first reaping would drop the previous run's streams.
    await new Promise((r) => setTimeout(r, 2 * PRESENCE.deadAfterMs));
    const again = await startTestControl({ ...options, config: { db: t.db } });
    return { again, key, a, b, ids };
  };

  describe.skipIf(skip)(`a restart of the only server (${kind})`, () => {
    it('sends the nodes that reconnect within the grace no presence change of each other', async () => {
      const { again, key, a, b, ids } = await restarted(60_000);
      const ra = await reconnect(a, again);
      await ra.until('a map', (c) => c.netmap !== null);
      // b has not reconnected yet, and is online for a.
      expect(peer(ra, 'b')?.online).toBe(true);
      const rb = await reconnect(b, again);
      await rb.until('b map', (c) => c.netmap !== null);
      expect(peer(rb, 'a')?.online).toBe(true);
      // A join goes to both at once, and carries any presence change held for them: none.
      await new TestMachine(again).join('c', key);
      await ra.until('c in a map', (c) => peer(c, 'c') !== undefined);
      await rb.until('c in b map', (c) => peer(c, 'c') !== undefined);
      expect(about(ra, ids.b)).toEqual([]);
      expect(about(rb, ids.a)).toEqual([]);
    });

    // The two below end a short grace: whether b is still online when a is back depends on the
    // machine's speed (the first case shows it is, with a grace no machine outlasts).
    it('takes a node that is not back by the end of the grace offline for its peers', async () => {
      const { again, a } = await restarted(2_000);
      const ra = await reconnect(a, again);
      await ra.until('a map', (c) => c.netmap !== null);
      await ra.until('b offline', (c) => peer(c, 'b')?.online === false, 10_000);
      expect(peer(ra, 'b')?.lastSeen).not.toBeNull();
    });

    it('deletes an ephemeral node that is not back once the grace is over', async () => {
      const { again, a } = await restarted(2_000, { ephemeralB: true, ephemeralGraceMs: 500 });
      const ra = await reconnect(a, again);
      await ra.until('a map', (c) => c.netmap !== null);
      await ra.until('b deleted', (c) => c.netmap !== null && peer(c, 'b') === undefined, 15_000);
    });

    it('resumes each node that gives the token of the map it holds, which then follows the changes', async () => {
      const options = { ...PRESENCE, limits: { restartGraceMs: 60_000 } };
      const t = await startTestControl({ ...options, config: { db: await create() } });
      const key = await t.key('--reusable');
      const [a, b] = [new TestMachine(t), new TestMachine(t)];
      await a.join('a', key);
      await b.join('b', key);
      const sa = await a.stream();
      const sb = await b.stream();
      await sa.until('b online, named', (c) => peer(c, 'b')?.online === true && c.mapToken !== null);
      await sb.until('a online, named', (c) => peer(c, 'a')?.online === true && c.mapToken !== null);
      await t.control.close();
      await new Promise((r) => setTimeout(r, 2 * PRESENCE.deadAfterMs));
      const again = await startTestControl({ ...options, config: { db: t.db } });
      const ra = await a.resume(sa, again.control.url);
      const rb = await b.resume(sb, again.control.url);
      await ra.until('a resumed', (c) => c.messages.length > 0);
      await rb.until('b resumed', (c) => c.messages.length > 0);
      expect(ra.messages[0]?.type).toBe('resume');
      expect(rb.messages[0]?.type).toBe('resume');
      expect(ra.netmap?.peers).toEqual(sa.netmap?.peers);
      expect(ra.netmap?.self.name).toBe('a');
      // Still told of the other's changes.
      rb.send({ type: 'endpoints', endpoints: ['198.18.0.12:41641'] });
      await ra.until('b endpoints', (c) => peer(c, 'b')?.endpoints.includes('198.18.0.12:41641') === true);
      expect(peer(ra, 'b')?.online).toBe(true);
    });

    it('still tells the peers of a node whose view changed when it came back', async () => {
      const { again, a, b } = await restarted(60_000);
      const ra = await reconnect(a, again);
      await ra.until('a map', (c) => c.netmap !== null);
      const rb = await reconnect(b, again);
      rb.send({ type: 'endpoints', endpoints: ['198.18.0.12:41641'] });
      await ra.until('b endpoints', (c) => peer(c, 'b')?.endpoints.includes('198.18.0.12:41641') === true);
      expect(peer(ra, 'b')?.online).toBe(true);
    });
  });
}
