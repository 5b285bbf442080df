import pg from 'pg';
import { afterEach, describe, expect, it, vi } from 'vitest';
import type { RunExclusive } from '../db/open.js';
import { replicaSessionName, type Store } from '../db/store.js';
import type { NetmapSync } from '../netmap/sync.js';
import { cleanupAll, onCleanup } from '../testing/harness.js';
import { testNode } from '../testing/nodes.js';
import { postgresAbsence, tempPostgres, testDatabaseKinds } from '../testing/postgres.js';
import { storeWithNode } from '../testing/store.js';
import { CONNECTED_DEAD_AFTER, Presence } from './presence.js';

// The only server on a SQLite database keeps no heartbeat (each write would wake its own change
// feed, and so reload the whole tailnet every few seconds) and forgets a previous run's streams at
// once; replicas on PostgreSQL beat and reap (replicas.test.ts), and write again the rows of their
// streams that another replica reaped while they were taken for dead.

afterEach(cleanupAll);

const silent = { info() {}, warn() {}, error() {} };

/** Runs an exclusive job at once, as the only process would. */
const runNow: RunExclusive = async (_job, fn) => {
  await fn();
  return true;
};

/** Holds the store's next `method` call until the returned function is called: a write that lands late. */
function holdNextCall(store: Store, method: 'streamsConnected' | 'nodeDisconnected'): () => void {
  let release = () => {};
  const gate = new Promise<void>((resolve) => {
    release = resolve;
  });
  const original = store[method].bind(store) as (...args: unknown[]) => Promise<void>;
  vi.spyOn(store, method).mockImplementationOnce((async (...args: unknown[]) => {
    await gate;
    return original(...args);
  }) as never);
  return release;
}

async function storeWithStream(db?: string): Promise<Store> {
  const store = await storeWithNode(db);
  // A previous run of the server (another replica id) held the node's stream when it died.
  await store.replicaHeartbeat('previous-run', new Date());
  await store.streamsConnected([{ nodeId: 'n1', stream: 1 }], 'previous-run', new Date());
  return store;
}

/**
 * Presence on `store` (the only server's if `alone`), heartbeat 20 ms, with its reloads counted and
 * the nodes it read back alone kept; `clock` gives the times it writes and reaps by.
 */
function counted(
  store: Store,
  restartGraceMs: number,
  alone: boolean,
  deadAfterMs = 10_000,
  clock = Date.now,
) {
  let reloads = 0;
  const readBack: string[] = [];
  const sync = {
    refresh: async () => void reloads++,
    refreshNodes: async (ids: Iterable<string>) => void readBack.push(...ids),
  } as unknown as NetmapSync;
  const timing = { heartbeatMs: 20, deadAfterMs, restartGraceMs };
  const presence = new Presence(store, sync, () => [], runNow, silent, timing, alone, clock);
  return { presence, reloads: () => reloads, readBack };
}

const onlyServer = (store: Store, restartGraceMs: number) => counted(store, restartGraceMs, true);

describe('presence of the only server (SQLite)', () => {
  it("keeps the previous run's streams for the restart's grace, then forgets them; no heartbeat after", async () => {
    const store = await storeWithStream();
    const { presence, reloads } = onlyServer(store, 100);
    const beats = vi.spyOn(store, 'replicaHeartbeat');
    await presence.start();
    onCleanup(() => presence.close());
    // Still online for its peers while it reconnects; the grace counts from listening.
    expect((await store.nodeById('n1'))?.streamedBy).toBe('previous-run');
    expect(reloads()).toBe(0);
    await new Promise((r) => setTimeout(r, 150));
    expect((await store.nodeById('n1'))?.streamedBy).toBe('previous-run');
    presence.startGrace();
    await until('the grace over', async () => (await store.nodeById('n1'))?.streamedBy === null);
    expect(reloads()).toBe(1);
    // No timer: one heartbeat at start and one at the grace's end (a replica's would beat every 20 ms).
    await new Promise((r) => setTimeout(r, 120));
    expect(beats).toHaveBeenCalledTimes(2);
    expect(reloads()).toBe(1);
  });

  it("drops the previous run's rows at the grace's end whatever its clock said, trying again after a failure", async () => {
    const store = await storeWithNode();
    // A clock set back meanwhile: the previous run's last heartbeat looks an hour ahead.
    await store.replicaHeartbeat('previous-run', new Date(Date.now() + 3_600_000));
    await store.streamsConnected([{ nodeId: 'n1', stream: 1 }], 'previous-run', new Date());
    const { presence, reloads } = onlyServer(store, 20);
    vi.spyOn(store, 'dropOtherReplicas').mockRejectedValueOnce(new Error('SQLITE_BUSY'));
    await presence.start();
    onCleanup(() => presence.close());
    presence.startGrace();
    await until('the grace over', async () => (await store.nodeById('n1'))?.streamedBy === null);
    expect(reloads()).toBe(1);
  });

  it('forgets at once a previous run last heard from before the grace (killed, not stopped)', async () => {
    const store = await storeWithNode();
    await store.replicaHeartbeat('killed-run', new Date(Date.now() - 120_000));
    await store.streamsConnected([{ nodeId: 'n1', stream: 1 }], 'killed-run', new Date());
    const { presence, readBack } = counted(store, 60_000, true);
    await presence.start();
    onCleanup(() => presence.close());
    expect((await store.nodeById('n1'))?.streamedBy).toBeNull();
    expect(readBack).toEqual(['n1']);
  });
});

describe('presence at a shutdown', () => {
  it('writes the last seen of every stream the shutdown ended in one go at close, none one by one', async () => {
    const store = await storeWithNode();
    const n1 = (await store.nodeById('n1')) as NonNullable<Awaited<ReturnType<Store['nodeById']>>>;
    await store.insertNode({
      ...n1,
      id: 'n2',
      name: 'b',
      hostname: 'b',
      machineKey: 'mkey:n2',
      nodeKey: 'nodekey:n2',
      ipv4: '100.64.0.2',
      ipv6: 'fd00:1:2::2',
    });
    const reads: string[][] = [];
    const sync = {
      refresh: async () => {},
      refreshNodes: async (ids: string[]) => void reads.push(ids),
    } as unknown as NetmapSync;
    const presence = new Presence(store, sync, () => [], runNow, silent, undefined, true);
    await presence.start();
    await presence.connected('n1');
    await presence.connected('n2');
    const oneByOne = vi.spyOn(store, 'nodeDisconnected');
    presence.shuttingDown(['n1', 'n2']);
    await presence.disconnected('n1');
    await presence.disconnected('n2');
    expect(oneByOne).not.toHaveBeenCalled();
    expect(reads).toEqual([]);
    await presence.close();
    for (const id of ['n1', 'n2']) {
      const node = await store.nodeById(id);
      expect(node?.lastSeen).not.toBeNull();
      // Online until the restarted server's grace (or another replica's reaper) ends.
      expect(node?.streamedBy).toBe(presence.replica);
    }
  });

  it('starts that write at once, and a failed write still lets close write the last heartbeat', async () => {
    const store = await storeWithNode();
    const sync = { refresh: async () => {}, refreshNodes: async () => {} } as unknown as NetmapSync;
    const warnings: string[] = [];
    const presence = new Presence(
      store,
      sync,
      () => [],
      runNow,
      { ...silent, warn: (m: string) => void warnings.push(m) },
      undefined,
      true,
    );
    await presence.start();
    await presence.connected('n1');
    const written = vi.spyOn(store, 'nodesLastSeen').mockRejectedValueOnce(new Error('SQLITE_BUSY'));
    const beats = vi.spyOn(store, 'replicaHeartbeat');
    presence.shuttingDown(['n1']);
    // Before close: a shutdown killed during its grace period has already asked for it.
    expect(written).toHaveBeenCalledTimes(1);
    await presence.close();
    expect(beats).toHaveBeenCalledWith(presence.replica, expect.any(Date));
    expect(warnings.join('\n')).toContain('SQLITE_BUSY');
  });
});

/** Polls `test` every few milliseconds until it holds, failing after `boundMs`. */
async function until(what: string, test: () => Promise<boolean>, boundMs = 5_000): Promise<void> {
  const end = Date.now() + boundMs;
  while (!(await test())) {
    if (Date.now() > end) throw new Error(`${what}: not within ${boundMs} ms`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

const noPostgres = await postgresAbsence();
// The databases a presence case runs on: SQLite, and PostgreSQL where it can be reached.
const databases = (await testDatabaseKinds())
  .filter((d) => d.skip === null)
  .map((d) => [d.kind, d.create] as const);

describe('presence of a replica', () => {
  it.each(databases)(
    'writes its streams again after another replica reaped them (a database pause past the dead time; %s)',
    async (_kind, location) => {
      const store = await storeWithStream(await location());
      const sync = { refresh: async () => {} } as unknown as NetmapSync;
      const presence = new Presence(store, sync, () => ['n1'], runNow, silent, {
        heartbeatMs: 20,
        deadAfterMs: 10_000,
        restartGraceMs: 60_000,
      });
      await presence.start();
      onCleanup(() => presence.close());
      await presence.connected('n1');
      expect((await store.nodeById('n1'))?.streamedBy).toBe(presence.replica);

      // Another replica's reaper, after this one's heartbeat was late: the row goes, the stream stays.
      const later = new Date(Date.now() + 60_000);
      expect(await store.dropSilentReplicas(later, later)).toEqual(['n1']);
      expect((await store.nodeById('n1'))?.streamedBy).toBeNull();
      await until(
        'the row written again',
        async () => (await store.nodeById('n1'))?.streamedBy === presence.replica,
      );
    },
  );

  it('keeps no row for a stream that ended while the reaped rows were written again', async () => {
    const store = await storeWithNode();
    const sync = { refresh: async () => {}, refreshNodes: async () => {} } as unknown as NetmapSync;
    let held = ['n1'];
    const presence = new Presence(store, sync, () => held, runNow, silent, {
      heartbeatMs: 60_000,
      deadAfterMs: 10_000,
      restartGraceMs: 60_000,
    });
    await presence.connected('n1');
    // Reaped by another replica (this one's heartbeat taken for dead) before its first beat.
    const later = new Date(Date.now() + 60_000);
    await store.dropSilentReplicas(later, later);
    // n1's stream ends (its row deleted) while the first beat is writing the missing rows.
    const claim = store.claimStreams.bind(store);
    vi.spyOn(store, 'claimStreams').mockImplementationOnce(async (ids, replica, at) => {
      held = [];
      await presence.disconnected('n1');
      return claim(ids, replica, at);
    });
    await presence.start();
    onCleanup(() => presence.close());
    expect((await store.nodeById('n1'))?.streamedBy).toBeNull();
  });
});

describe('presence of a node reconnecting to the same replica', () => {
  it.each(databases)(
    "keeps the new stream's row when the old stream's end is committed after its start (%s)",
    async (_kind, location) => {
      const store = await storeWithNode(await location());
      const sync = { refresh: async () => {}, refreshNodes: async () => {} } as unknown as NetmapSync;
      const presence = new Presence(store, sync, () => ['n1'], runNow, silent, {
        heartbeatMs: 60_000,
        deadAfterMs: 10_000,
        restartGraceMs: 60_000,
      });
      await presence.start();
      onCleanup(() => presence.close());
      await presence.connected('n1');
      // The old stream closed before the new one's queued connect ran; their writes go through
      // different pool connections, and here the old stream's end commits last.
      const newStreamWritten = holdNextCall(store, 'nodeDisconnected');
      const oldEnded = presence.disconnected('n1');
      const newStarted = presence.connected('n1');
      newStreamWritten();
      await Promise.all([oldEnded, newStarted]);
      expect((await store.nodeById('n1'))?.streamedBy).toBe(presence.replica);
      // The new stream's own end does remove it.
      await presence.disconnected('n1');
      expect((await store.nodeById('n1'))?.streamedBy).toBeNull();
    },
  );
});

describe('presence writes of one node', () => {
  const sync = { refresh: async () => {}, refreshNodes: async () => {} } as unknown as NetmapSync;

  it.each(databases)(
    'a stream that ends before its own row is written leaves no row (%s)',
    async (_kind, location) => {
      const store = await storeWithNode(await location());
      const presence = new Presence(store, sync, () => ['n1'], runNow, silent);
      const release = holdNextCall(store, 'streamsConnected');
      const started = presence.connected('n1');
      const ended = presence.disconnected('n1');
      release();
      await Promise.all([started, ended]);
      expect((await store.nodeById('n1'))?.streamedBy).toBeNull();
    },
  );

  it.each(databases)(
    "a herd's streams are written together, a write at a time, not one each (%s)",
    async (_kind, location) => {
      const store = await storeWithNode(await location());
      const ids = Array.from({ length: 50 }, (_, i) => `n${i + 2}`);
      for (const [i, id] of ids.entries())
        await store.insertNode(testNode(i + 2, null, { machineKey: `mkey:${id}`, nodeKey: `nodekey:${id}` }));
      const presence = new Presence(store, sync, () => ['n1', ...ids], runNow, silent);
      // The first stream's write is slow: the rest, started meanwhile, wait for it and go in one.
      const write = store.streamsConnected.bind(store);
      const sizes: number[] = [];
      let release = () => {};
      const slow = new Promise<void>((resolve) => {
        release = resolve;
      });
      vi.spyOn(store, 'streamsConnected').mockImplementation(async (streams, replica, at) => {
        sizes.push(streams.length);
        if (sizes.length === 1) await slow;
        return write(streams, replica, at);
      });
      const first = presence.connected('n1');
      await vi.waitFor(() => expect(sizes).toHaveLength(1));
      const rest = ids.map((id) => presence.connected(id));
      release();
      await Promise.all([first, ...rest]);
      expect(sizes).toEqual([1, 50]);
      for (const id of ['n1', ...ids]) expect((await store.nodeById(id))?.streamedBy).toBe(presence.replica);
      // A stream's end still waits for its own start's write: no row left behind.
      await presence.disconnected('n7');
      expect((await store.nodeById('n7'))?.streamedBy).toBeNull();
    },
  );

  it('a heartbeat during a herd writes no row again for streams whose own write is on its way', async () => {
    const store = await storeWithNode();
    const presence = new Presence(store, sync, () => ['n1'], runNow, silent, {
      heartbeatMs: 60_000,
      deadAfterMs: 10_000,
      restartGraceMs: 60_000,
    });
    const claims = vi.spyOn(store, 'claimStreams');
    const release = holdNextCall(store, 'streamsConnected');
    const started = presence.connected('n1');
    // The first beat (start) counts no row for n1 yet: its write is waiting, not reaped.
    await presence.start();
    onCleanup(() => presence.close());
    release();
    await started;
    expect(claims).not.toHaveBeenCalled();
    expect((await store.nodeById('n1'))?.streamedBy).toBe(presence.replica);
  });

  it("a replacing stream whose row write failed: its end clears the replaced stream's row", async () => {
    const store = await storeWithNode();
    const presence = new Presence(store, sync, () => ['n1'], runNow, silent);
    await presence.connected('n1');
    vi.spyOn(store, 'streamsConnected').mockRejectedValueOnce(new Error('pool timeout'));
    await expect(presence.connected('n1')).rejects.toThrow('pool timeout');
    await presence.disconnected('n1');
    expect((await store.nodeById('n1'))?.streamedBy).toBeNull();
  });

  it("tells the peers even when a stream's end could not be written", async () => {
    const store = await storeWithNode();
    const refreshed: string[][] = [];
    const sync = {
      refresh: async () => {},
      refreshNodes: async (ids: string[]) => void refreshed.push(ids),
    } as unknown as NetmapSync;
    const presence = new Presence(store, sync, () => ['n1'], runNow, silent);
    await presence.connected('n1');
    vi.spyOn(store, 'nodeDisconnected').mockRejectedValueOnce(new Error('pool timeout'));
    await expect(presence.disconnected('n1')).rejects.toThrow('pool timeout');
    expect(refreshed).toEqual([['n1']]);
  });
});

describe.skipIf(noPostgres !== null)('presence of replicas stopped and started (PostgreSQL)', () => {
  const streamedBy = async (store: Store) => (await store.nodeById('n1'))?.streamedBy;

  // Replicas' clocks are fixed below (they run their timers, not their clocks): the reaper's
  // decisions then depend on no one's speed.
  const stopAt = Date.now();

  it("holds the streams of the last replica to stop cleanly, and of one stopped just before, for the next one's grace", async () => {
    const store = await storeWithNode(await tempPostgres());
    // Both up for longer than their grace (1 s) when they stop: neither is coming up.
    let now = stopAt - 2_000;
    const first = counted(store, 1_000, false, 10_000, () => now).presence;
    const last = counted(store, 1_000, false, 10_000, () => now).presence;
    await first.start();
    await last.start();
    await first.connected('n1');
    now = stopAt;
    await first.close(); // last still runs: first's nodes could move there
    expect(await store.heldReplicas()).toHaveLength(0);
    await last.close();
    expect(await store.heldReplicas()).toHaveLength(2);

    // The next one starts after its reaper's limit for a silent replica (50 ms), and well within
    // the hold's bound (twice its grace, 400 ms): held, they are not reaped; its grace ends them.
    const next = counted(store, 200, false, 50, () => stopAt + 100);
    await next.presence.start();
    onCleanup(() => next.presence.close());
    expect(await streamedBy(store)).toBe(first.replica);
    next.presence.startGrace();
    await until('the grace over', async () => (await streamedBy(store)) === null);
    expect(await store.heldReplicas()).toHaveLength(0);
    expect(next.reloads()).toBe(1);
  });

  it("a stop while another replica runs holds nothing: its streams go at the reaper's limit", async () => {
    const store = await storeWithNode(await tempPostgres());
    // The other has been up for longer than the stopping one's grace (500 ms).
    let otherNow = stopAt - 1_000;
    const stopped = counted(store, 500, false, 10_000, () => stopAt).presence;
    const other = counted(store, 600_000, false, 50, () => otherNow).presence;
    await stopped.start();
    await other.start();
    onCleanup(() => other.close());
    await stopped.connected('n1');
    await stopped.close();
    expect(await store.heldReplicas()).toHaveLength(0);
    otherNow = stopAt + 100;
    await until('reaped', async () => (await streamedBy(store)) === null);
  });

  it("a stop while the only other replica is coming up (a surge rollout) holds, and that one's grace ends the hold", async () => {
    const store = await storeWithNode(await tempPostgres());
    const old = counted(store, 200, false, 10_000, () => stopAt).presence;
    await old.start();
    await old.connected('n1');
    // Started within the old one's grace (200 ms) before its stop, and listening already.
    const surge = counted(store, 200, false, 10_000, () => stopAt + 100);
    await surge.presence.start();
    onCleanup(() => surge.presence.close());
    surge.presence.startGrace();
    await old.close();
    expect(await store.heldReplicas()).toEqual([old.replica]);
    expect(await streamedBy(store)).toBe(old.replica);
    await until('the grace over', async () => (await streamedBy(store)) === null);
    expect(await store.heldReplicas()).toHaveLength(0);
    expect(surge.reloads()).toBe(1);
  });

  it("a killed replica holds nothing: the next one drops its streams at the reaper's limit, with no grace", async () => {
    const store = await storeWithNode(await tempPostgres());
    const killed = new Presence(
      store,
      { refresh: async () => {} } as unknown as NetmapSync,
      () => [],
      runNow,
      silent,
      {
        heartbeatMs: 600_000,
        deadAfterMs: 10_000,
        restartGraceMs: 600_000,
      },
    );
    await killed.start(); // and never closed
    await killed.connected('n1');
    await new Promise((r) => setTimeout(r, 100));
    const next = counted(store, 600_000, false, 50);
    await next.presence.start();
    onCleanup(() => next.presence.close());
    expect(await streamedBy(store)).toBeNull();
    // The reaped nodes are read back alone, not every node.
    expect(next.readBack).toEqual(['n1']);
    expect(next.reloads()).toBe(0);
  });

  /**
   * A replica that streams n1 and then falls silent (its one heartbeat at `stopAt`: a held event
   * loop, a paused process) with a PostgreSQL session named as its own still open; and the session.
   */
  async function silentButConnected(url: string, store: Store) {
    const busy = new Presence(
      store,
      { refresh: async () => {} } as unknown as NetmapSync,
      () => [],
      runNow,
      silent,
      { heartbeatMs: 600_000, deadAfterMs: 10_000, restartGraceMs: 600_000 },
      false,
      () => stopAt,
    );
    await busy.start(); // and never closed
    await busy.connected('n1');
    const session = new pg.Client({
      connectionString: url,
      application_name: replicaSessionName(busy.replica),
    });
    await session.connect();
    onCleanup(() => session.end().catch(() => {}));
    return { busy, session };
  }

  it("a replica silent past the reaper's limit but still connected is kept until its sessions end", async () => {
    const url = await tempPostgres();
    const store = await storeWithNode(url);
    const { busy, session } = await silentButConnected(url, store);
    // Past the reaper's limit (50 ms), within the bound for a connected replica.
    const next = counted(store, 600_000, false, 50, () => stopAt + 100);
    await next.presence.start();
    onCleanup(() => next.presence.close());
    await new Promise((r) => setTimeout(r, 200)); // about ten of next's beats
    expect(await streamedBy(store)).toBe(busy.replica);
    expect(next.readBack).toEqual([]);
    // Its sessions end as a killed process's do: reaped at the next beat.
    await session.end();
    await until('reaped', async () => (await streamedBy(store)) === null);
    expect(next.readBack).toEqual(['n1']);
  });

  it('a replica silent for longer than the bound is reaped even with its sessions open', async () => {
    const url = await tempPostgres();
    const store = await storeWithNode(url);
    const { busy } = await silentButConnected(url, store);
    let now = stopAt + 100;
    const next = counted(store, 600_000, false, 50, () => now);
    await next.presence.start();
    onCleanup(() => next.presence.close());
    expect(await streamedBy(store)).toBe(busy.replica);
    now = stopAt + CONNECTED_DEAD_AFTER * 50 + 1;
    await until('reaped', async () => (await streamedBy(store)) === null);
  });

  it('drops held streams twice the grace after their hold when no grace ends them', async () => {
    const store = await storeWithNode(await tempPostgres());
    const stopped = counted(store, 60_000, false, 10_000, () => stopAt).presence;
    await stopped.start();
    await stopped.connected('n1');
    await stopped.close();
    // A replica that found them and never listens (its grace never starts): its reaper still ends them.
    let now = stopAt + 100;
    const next = counted(store, 60_000, false, 50, () => now);
    await next.presence.start();
    onCleanup(() => next.presence.close());
    expect(await streamedBy(store)).toBe(stopped.replica);
    now = stopAt + 2 * 60_000 + 1;
    await until('the held streams reaped', async () => (await streamedBy(store)) === null);
    expect(await store.heldReplicas()).toHaveLength(0);
  });

  it('a grace drops the replicas it found held; one held during it gets a grace of its own', async () => {
    const store = await storeWithNode(await tempPostgres());
    const previous = counted(store, 200, false, 10_000, () => stopAt).presence;
    await previous.start();
    await previous.close();
    const next = counted(store, 200, false, 10_000, () => stopAt + 100);
    await next.presence.start();
    onCleanup(() => next.presence.close());
    // Another replica stops while next is coming up: held too, after next found the first hold.
    const other = counted(store, 200, false, 10_000, () => stopAt + 100).presence;
    await other.start();
    await other.close();
    const drops = vi.spyOn(store, 'dropHeldReplicas');
    next.presence.startGrace();
    await until('both graces over', async () => (await store.heldReplicas()).length === 0);
    expect(drops.mock.calls).toEqual([[[previous.replica]], [[other.replica]]]);
  });

  it('a stop as its grace ends holds its own streams: the grace drops only what was held before', async () => {
    const store = await storeWithNode(await tempPostgres());
    const previous = counted(store, 60_000, false, 10_000, () => stopAt).presence;
    await previous.start();
    await previous.close();
    const next = counted(store, 100, false, 10_000, () => stopAt + 100).presence;
    await next.start();
    await next.connected('n1');
    // The grace's end is dropping the held rows when the SIGTERM comes.
    let dropping = false;
    let drop = () => {};
    const dropped = new Promise<void>((resolve) => {
      drop = resolve;
    });
    const dropHeld = store.dropHeldReplicas.bind(store);
    vi.spyOn(store, 'dropHeldReplicas').mockImplementationOnce(async (ids) => {
      dropping = true;
      await dropped;
      return dropHeld(ids);
    });
    next.startGrace();
    await until('the grace ending', async () => dropping);
    // The drop goes on once close has held (had it not waited for the drop), or after a while.
    const stop = store.replicaStopped.bind(store);
    vi.spyOn(store, 'replicaStopped').mockImplementationOnce(async (...args) => {
      const held = await stop(...args);
      drop();
      return held;
    });
    setTimeout(drop, 200);
    await next.close();
    expect(await streamedBy(store)).toBe(next.replica);
    expect(await store.heldReplicas()).toHaveLength(1);
  });
});
