import {
  ALLOW_ALL,
  applyStreamMessage,
  type FilterRule,
  mapTokenAfter,
  type NetMap,
  type StreamServerMessage,
} from '@weft/protocol';
import { describe, expect, it, vi } from 'vitest';
import { parsePolicy } from '../policy/index.js';
import type { NodeRecord } from '../tailnet/records.js';
import { connectedHub, TEST_KEY, TEST_RANGES, testNode } from '../testing/nodes.js';
import { wireText } from '../testing/wire.js';
import { NetmapHub, type StreamSession } from './hub.js';
import { wireOf } from './message-text.js';
import { PolicyVisibility, wildcardSourcesOf } from './policy-visibility.js';
import { allowAll, type VisibilityPolicy } from './visibility.js';

function node(i: number, extra: Partial<NodeRecord> = {}): NodeRecord {
  return testNode(i, { name: 'alice' }, { userId: 'u1', ipv6: `fd00::${i.toString(16)}`, ...extra });
}

class FakeSession implements StreamSession {
  readonly messages: StreamServerMessage[] = [];
  closedWith: string | null = null;
  constructor(readonly nodeId: string) {}
  send(m: StreamServerMessage) {
    this.messages.push(m);
  }
  close(reason: string) {
    this.closedWith = reason;
  }
  deltas() {
    return this.messages.filter((m) => m.type === 'delta');
  }
}

/** Wraps a policy to count how often it decides a node's visibility. */
function counting(policy: VisibilityPolicy) {
  const calls: string[] = [];
  const wrapped: VisibilityPolicy = {
    visibilityOf: (n, all) => {
      calls.push(n.id);
      return policy.visibilityOf(n, all);
    },
    affectedBy: (c, all) => policy.affectedBy(c, all),
  };
  return { wrapped, calls };
}

function connectAll(hub: NetmapHub, nodes: NodeRecord[]): FakeSession[] {
  return nodes.map((n) => {
    const s = new FakeSession(n.id);
    hub.connect(s);
    return s;
  });
}

describe('NetmapHub', () => {
  it("gives a whole map its bytes from the peers' kept JSON: JSON.stringify's bytes, with no serialising", () => {
    const hub = new NetmapHub(allowAll, ['100.64.0.0/10']);
    const nodes = Array.from({ length: 20 }, (_, i) =>
      node(i + 1, i === 3 ? { advertisedRoutes: ['0.0.0.0/0', '::/0'], approvedRoutes: ['0.0.0.0/0'] } : {}),
    );
    hub.update(nodes);
    const sessions = connectAll(hub, nodes);
    const full = sessions[7]?.messages[0];
    if (full?.type !== 'full') throw new Error('no full map');
    const stringify = vi.spyOn(JSON, 'stringify');
    const wire = wireText(full);
    expect(stringify).not.toHaveBeenCalled();
    stringify.mockRestore();
    // The very bytes JSON.stringify gives (key order too), not just the same value.
    expect(wire).toBe(JSON.stringify(full));
    expect(full.netmap.peers.map((p) => p.id)).toContain('n4');
  });

  it("gives each member of a class its class's whole map, itself cut out: the bytes the walk over every peer gives", () => {
    const hub = new NetmapHub(allowAll, ['100.64.0.0/10']);
    // Three chunks of the class's map (1,024 peers each), a router among them (its view is made per
    // viewer): members at a chunk's first and last entry, and the tailnet's first and last.
    const nodes = Array.from({ length: 2_100 }, (_, i) =>
      node(i + 1, i === 1_500 ? { advertisedRoutes: ['0.0.0.0/0'], approvedRoutes: ['0.0.0.0/0'] } : {}),
    );
    hub.update(nodes);
    const sessions = new Map(connectAll(hub, nodes).map((s) => [s.nodeId, s]));
    for (const i of [1, 2, 1_023, 1_024, 1_025, 1_501, 2_048, 2_049, 2_100]) {
      const full = sessions.get(`n${i}`)?.messages[0];
      if (full?.type !== 'full') throw new Error('no full map');
      // The map the walk over every peer puts together for a stream in no class (snapshot's).
      const walked = JSON.stringify({ type: 'full', netmap: hub.snapshot(`n${i}`) });
      // n1 formed the class with a map of its own; the others were sent the class's, current
      // then: every later connect only turned a peer online, so the peers before were online.
      const sent = wireText(full);
      expect(JSON.parse(sent)).toEqual(JSON.parse(JSON.stringify(full)));
      const now = JSON.parse(walked) as { netmap: { peers: { id: string; online: boolean }[] } };
      const online = now.netmap.peers.map((p) => ({ ...p, online: Number(p.id.slice(1)) < i }));
      expect(JSON.parse(sent)).toEqual({
        ...now,
        mapToken: expect.any(String),
        netmap: { ...now.netmap, peers: online },
      });
    }
    // Once all are online, a member sent a whole map again (it fell behind) gets the walk's very bytes.
    const behind = Object.assign(sessions.get('n1024') as FakeSession, { backlogged: (): boolean => true });
    hub.apply(['n7'], [{ ...(nodes[6] as NodeRecord), endpoints: ['203.0.113.7:4000'] }]);
    behind.backlogged = () => false;
    hub.resync(behind);
    const resent = behind.messages.at(-1);
    if (resent?.type !== 'full') throw new Error('no whole map on resync');
    expect(wireText(resent)).toBe(
      JSON.stringify({ type: 'full', mapToken: resent.mapToken, netmap: hub.snapshot('n1024') }),
    );
  });

  it("puts a change made between two members' connects in the second one's whole map", () => {
    const hub = new NetmapHub(allowAll, ['100.64.0.0/10']);
    const nodes = Array.from({ length: 6 }, (_, i) => node(i + 1));
    hub.update(nodes);
    const maps: unknown[] = [];
    const connect = (id: string) => {
      const s = new FakeSession(id);
      hub.connect(s);
      const full = s.messages[0];
      if (full?.type !== 'full') throw new Error('no full map');
      maps.push(JSON.parse(wireText(full)));
      // As the walk over every peer puts it together, now.
      expect(JSON.parse(wireText(full))).toEqual({
        type: 'full',
        mapToken: expect.any(String),
        netmap: hub.snapshot(id),
      });
      return s;
    };
    connect('n1');
    connect('n2'); // the class's map is made; n2's connect turns n2 online in it
    const third = connect('n3'); // n2 online: its chunk put together again
    hub.apply(['n4'], [{ ...(nodes[3] as NodeRecord), endpoints: ['203.0.113.4:4000'] }]);
    connect('n5'); // n4's endpoints
    hub.apply(['n9'], [node(9)]);
    connect('n6'); // n9 joined
    hub.apply(['n4'], []);
    hub.apply(['n10'], [node(10)]);
    connect('n10'); // n4 deleted
    hub.disconnect(third);
    connect('n9'); // n3 offline
    expect(maps).toHaveLength(7);
  });

  it("cuts a member at a class map's first entry, and at a later chunk's first and inner entries", () => {
    const hub = new NetmapHub(allowAll, ['100.64.0.0/10']);
    const nodes = Array.from({ length: 1_100 }, (_, i) => node(i + 1));
    hub.update(nodes);
    // n2 forms the class (its map is its own walk's); n1 is the class map's index 0, n1025 the
    // second chunk's first entry, n1030 one inside it.
    for (const id of ['n2', 'n1', 'n1025', 'n1030']) {
      const s = new FakeSession(id);
      hub.connect(s);
      const full = s.messages[0];
      if (full?.type !== 'full') throw new Error('no full map');
      expect(JSON.parse(wireText(full))).toEqual({
        type: 'full',
        mapToken: expect.any(String),
        netmap: hub.snapshot(id),
      });
    }
  });

  it('keeps the bytes of many classes that see the whole tailnet to a few whole maps, and one class its map', () => {
    const N = 2_000;
    const G = 100;
    const policy: VisibilityPolicy = {
      visibilityOf: (n) => ({
        canSee: (p) => p.id !== n.id,
        packetFilter: ALLOW_ALL,
        shared: { key: `k${Number(n.id.slice(1)) % G}`, canSee: () => true },
      }),
      affectedBy: () => new Set(),
    };
    const nodes = Array.from({ length: N }, (_, i) => node(i + 1));
    const hub = new NetmapHub(policy, ['100.64.0.0/10']);
    hub.update(nodes);
    connectAll(hub, nodes);
    const one = JSON.stringify(hub.snapshot('n1')).length;
    // Kept for every class, 100 maps: 29 MB.
    expect(hub.classMapBytes()).toBeLessThan(10 * one);
    // A single class (allow-all) keeps its map through a mass connect: that is what it is for.
    const single = new NetmapHub(allowAll, ['100.64.0.0/10']);
    single.update(nodes);
    connectAll(single, nodes);
    expect(single.classMapBytes()).toBeGreaterThan(one / 3);
    // Four million peer views sent: 17-19 s on a loaded machine, near the default limit.
  }, 60_000);

  it("keeps a small class's map in buffers of its own, not in the shared 8 KiB slab", () => {
    const hub = new NetmapHub(allowAll, ['100.64.0.0/10']);
    const nodes = Array.from({ length: 5 }, (_, i) => node(i + 1));
    hub.update(nodes);
    const [, , third] = connectAll(hub, nodes);
    const full = third?.messages[0];
    if (full?.type !== 'full') throw new Error('no full map');
    const parts = wireOf(full);
    if (!Array.isArray(parts)) throw new Error('no parts');
    // Between the head (self) and the tail: views of the class's chunk, which is kept.
    const chunkParts = (parts as Buffer[]).slice(1, -1);
    expect(chunkParts.length).toBeGreaterThan(0);
    for (const part of chunkParts) expect(part.buffer.byteLength).toBeLessThan(Buffer.poolSize);
  });

  it('puts no whole-map bytes together for a transport with its own encoding (Tailscale sessions)', () => {
    const hub = new NetmapHub(allowAll, ['100.64.0.0/10']);
    const nodes = Array.from({ length: 5 }, (_, i) => node(i + 1));
    hub.update(nodes);
    const own = Object.assign(new FakeSession('n1'), { ownEncoding: true });
    hub.connect(own);
    const [weft] = connectAll(hub, [nodes[1] as NodeRecord]);
    const ownFull = own.messages[0];
    const weftFull = weft?.messages[0];
    if (ownFull?.type !== 'full' || weftFull?.type !== 'full') throw new Error('no full map');
    expect(ownFull.netmap.peers).toHaveLength(4);
    // Nor a token: it never resumes, whatever it is asked with.
    expect(own.messages.every((m) => !('mapToken' in m))).toBe(true);
    const again = Object.assign(new FakeSession('n1'), { ownEncoding: true });
    hub.connect(again, mapTokenAfter(weftFull) ?? undefined);
    expect(again.messages[0]?.type).toBe('full');
    // No bytes were attached: its JSON is made on demand, as text.
    expect(typeof wireOf(ownFull)).toBe('string');
    expect(typeof wireOf(weftFull)).not.toBe('string');
    // Nor a class of them: its map holds its peers' views, no bytes until a Weft stream needs them.
    // Two chunks: a connect in the second leaves the first one's bytes, if it had any.
    const tailscale = new NetmapHub(allowAll, ['100.64.0.0/10']);
    tailscale.update(Array.from({ length: 1_100 }, (_, i) => node(i + 1)));
    for (const id of ['n1050', 'n1060'])
      tailscale.connect(Object.assign(new FakeSession(id), { ownEncoding: true }));
    expect(tailscale.classMapBytes()).toBe(0);
    tailscale.connect(new FakeSession('n1070'));
    expect(tailscale.classMapBytes()).toBeGreaterThan(0);
  });

  it("a join costs one upsert per connected node and no connected node's visibility recompute", () => {
    const { wrapped, calls } = counting(allowAll);
    const hub = new NetmapHub(wrapped, ['100.64.0.0/10']);
    const nodes = Array.from({ length: 200 }, (_, i) => node(i + 1));
    hub.update(nodes);
    const sessions = connectAll(hub, nodes);
    for (const s of sessions) s.messages.length = 0;
    calls.length = 0;

    hub.update([...nodes, node(500)]);
    // The joiner's own, once: who watches it (allow-all: everyone).
    expect(calls).toEqual(['n500']);
    for (const s of sessions) {
      expect(s.messages).toEqual([
        { type: 'delta', peersUpserted: [expect.objectContaining({ id: 'n500' })] },
      ]);
    }
    // The same bytes for all: one message object, for the transport to serialise once.
    expect(new Set(sessions.map((s) => s.messages[0])).size).toBe(1);
  });

  it('asks a transport whether it is backlogged once per batched delta, not once per change merged into it', () => {
    const flushes: (() => void)[] = [];
    const hub = new NetmapHub(allowAll, ['100.64.0.0/10'], undefined, (flush) => void flushes.push(flush));
    let nodes = [node(1)];
    hub.update(nodes);
    const watcher = new FakeSession('n1');
    let asked = 0;
    hub.connect(
      Object.assign(watcher, {
        backlogged: () => {
          asked++;
          return false;
        },
      }),
    );
    asked = 0;
    for (let i = 2; i <= 11; i++) {
      nodes = [...nodes, node(i)];
      hub.update(nodes);
    }
    // When the first change made its delta, and when the flush sends it.
    for (const flush of flushes.splice(0)) flush();
    expect(asked).toBe(2);
    expect(watcher.deltas()).toHaveLength(1);
    expect(watcher.deltas()[0]?.peersUpserted).toHaveLength(10);
  });

  it("holds peers' presence-only changes until released, merged, and sends them with a change that goes first", () => {
    const flushes: (() => void)[] = [];
    const releases: (() => void)[] = [];
    const hub = new NetmapHub(
      allowAll,
      ['100.64.0.0/10'],
      undefined,
      (flush) => void flushes.push(flush),
      (release) => void releases.push(release),
    );
    const run = (queue: (() => void)[]) => {
      for (const f of queue.splice(0)) f();
    };
    const nodes = Array.from({ length: 5 }, (_, i) => node(i + 1));
    hub.update(nodes);
    const [watcher] = connectAll(hub, [nodes[0] as NodeRecord]);
    if (!watcher) throw new Error('no session');
    // Two peers come online: held, one release scheduled for both.
    connectAll(hub, nodes.slice(1, 3));
    run(flushes);
    expect(watcher.deltas()).toHaveLength(0);
    expect(releases).toHaveLength(1);
    // An endpoint change goes at once, and carries them.
    const moved = { ...(nodes[3] as NodeRecord), endpoints: ['203.0.113.4:41641'] };
    hub.update([...nodes.slice(0, 3), moved, nodes[4] as NodeRecord]);
    run(flushes);
    expect(watcher.deltas()).toHaveLength(1);
    expect(
      watcher
        .deltas()[0]
        ?.peersUpserted?.map((p) => [p.id, p.online])
        .sort(),
    ).toEqual([
      ['n2', true],
      ['n3', true],
      ['n4', false],
    ]);
    // Nothing was left to release.
    run(releases);
    run(flushes);
    expect(watcher.deltas()).toHaveLength(1);
    // A peer online then offline before the release: one message, its latest.
    const [late] = connectAll(hub, [nodes[4] as NodeRecord]);
    if (!late) throw new Error('no session');
    hub.disconnect(late);
    run(flushes);
    expect(watcher.deltas()).toHaveLength(1);
    run(releases);
    run(flushes);
    expect(watcher.deltas()).toHaveLength(2);
    expect(watcher.deltas()[1]?.peersUpserted).toEqual([
      expect.objectContaining({ id: 'n5', online: false }),
    ]);
  });

  it('puts the relay map in every full map, and none when no relays are configured', () => {
    const hub = new NetmapHub(allowAll, []);
    hub.update([node(1), node(2)]);
    const [plain] = connectAll(hub, [node(1)]);
    expect(plain?.messages[0]).toMatchObject({ type: 'full' });
    expect(plain?.messages[0]?.type === 'full' && 'relayMap' in plain.messages[0].netmap).toBe(false);
    const relayMap = {
      regions: [{ regionId: 1, name: 'lab', url: 'ws://198.18.0.2:8443/relay', publicKey: TEST_KEY }],
    };
    hub.relayMap = relayMap;
    const [withRelays] = connectAll(hub, [node(2)]);
    expect(withRelays?.messages[0]).toMatchObject({ type: 'full', netmap: { relayMap } });
  });

  it('sends nothing when nothing visible changed', () => {
    const hub = new NetmapHub(allowAll, []);
    const nodes = [node(1), node(2)];
    hub.update(nodes);
    const [s1] = connectAll(hub, nodes);
    const before = s1?.messages.length;
    hub.update(nodes.map((n) => ({ ...n })));
    expect(s1?.messages.length).toBe(before);
  });

  it('tells peers about online/offline, and the node itself about its own changes', () => {
    const hub = new NetmapHub(allowAll, []);
    hub.update([node(1), node(2)]);
    const s1 = new FakeSession('n1');
    hub.connect(s1);
    expect(s1.messages[0]).toMatchObject({
      type: 'full',
      netmap: { self: { online: true }, peers: [{ id: 'n2', online: false }] },
    });
    const s2 = new FakeSession('n2');
    hub.connect(s2);
    expect(s1.deltas().at(-1)).toEqual({
      type: 'delta',
      mapToken: expect.any(String),
      peersUpserted: [expect.objectContaining({ id: 'n2', online: true })],
    });

    hub.update([node(1), node(2, { endpoints: ['198.18.0.2:41641'] })]);
    expect(s2.deltas().at(-1)).toEqual({
      type: 'delta',
      mapToken: expect.any(String),
      self: expect.objectContaining({ endpoints: ['198.18.0.2:41641'] }),
    });
    expect(s1.deltas().at(-1)?.peersUpserted?.[0]?.endpoints).toEqual(['198.18.0.2:41641']);

    hub.disconnect(s2);
    expect(s1.deltas().at(-1)?.peersUpserted?.[0]).toMatchObject({ id: 'n2', online: false });
  });

  it('logs out a deleted node and removes it from its peers', () => {
    const hub = new NetmapHub(allowAll, []);
    hub.update([node(1), node(2)]);
    const [s1, s2] = connectAll(hub, [node(1), node(2)]);
    hub.update([node(1)]);
    expect(s2?.messages.at(-1)).toEqual({ type: 'logout', reason: 'this node was deleted from the tailnet' });
    expect(s2?.closedWith).toBe('node deleted');
    expect(s1?.deltas().at(-1)).toEqual({ type: 'delta', peersRemoved: ['n2'] });
    expect(hub.isOnline('n2')).toBe(false);
  });

  it('follows a policy: hides peers it forbids, recomputes only the nodes it names', () => {
    // Tagged "hidden" nodes are invisible to others; nodes with the tag "locked" get a deny-all filter.
    const denyAll: FilterRule[] = [];
    const policy: VisibilityPolicy = {
      visibilityOf: (n) => ({
        canSee: (p) => !p.tags.includes('tag:hidden'),
        packetFilter: n.tags.includes('tag:locked') ? denyAll : ALLOW_ALL,
      }),
      affectedBy: (changed) => new Set(changed.filter((c) => c.id === 'n3').map(() => 'n1')),
    };
    const { wrapped, calls } = counting(policy);
    const hub = new NetmapHub(wrapped, []);
    const nodes = [node(1), node(2), node(3)];
    hub.update(nodes);
    const [s1, s2] = connectAll(hub, nodes);
    calls.length = 0;

    // n2 becomes hidden: every other node drops it, using the visibility it already had.
    hub.update([node(1), node(2, { tags: ['tag:hidden'] }), node(3)]);
    expect(s1?.deltas().at(-1)).toEqual({ type: 'delta', peersRemoved: ['n2'] });
    expect(calls).toEqual(['n2']);

    // n3 changes tags: the policy names n1 as affected, so n1 (and n3 itself) are recomputed, no one else.
    calls.length = 0;
    hub.update([node(1), node(2, { tags: ['tag:hidden'] }), node(3, { tags: ['tag:locked'] })]);
    expect(calls.sort()).toEqual(['n1', 'n3']);
    expect(
      s2
        ?.deltas()
        .at(-1)
        ?.peersUpserted?.map((p) => p.id),
    ).toEqual(['n3']);
  });

  it('sends a new packet filter when a node’s decision changes', () => {
    const policy: VisibilityPolicy = {
      visibilityOf: (n) => ({ canSee: () => true, packetFilter: n.tags.length > 0 ? [] : ALLOW_ALL }),
      affectedBy: () => new Set(),
    };
    const hub = new NetmapHub(policy, []);
    hub.update([node(1), node(2)]);
    const [s1] = connectAll(hub, [node(1)]);
    hub.update([node(1, { tags: ['tag:server'] }), node(2)]);
    expect(s1?.deltas().at(-1)).toMatchObject({
      type: 'delta',
      packetFilter: [],
      self: { tags: ['tag:server'] },
    });
  });

  it('a replaced session closes without marking the node offline', () => {
    const hub = new NetmapHub(allowAll, []);
    hub.update([node(1), node(2)]);
    const [s1] = connectAll(hub, [node(1)]);
    const old = new FakeSession('n2');
    hub.connect(old);
    const fresh = new FakeSession('n2');
    hub.connect(fresh);
    expect(old.closedWith).toMatch(/replaced/);
    const deltasBefore = s1?.deltas().length;
    hub.disconnect(old);
    expect(hub.isOnline('n2')).toBe(true);
    expect(s1?.deltas().length).toBe(deltasBefore);
  });

  it('sends a batch that keeps growing without waiting for its flush (a busy event loop never runs it)', () => {
    // The scheduled flush never comes, as during a mass reconnect that keeps the event loop busy.
    const hub = new NetmapHub(allowAll, ['100.64.0.0/10'], undefined, () => {});
    const nodes = Array.from({ length: 600 }, (_, i) => node(i + 1));
    hub.update(nodes);
    const [first] = connectAll(hub, nodes.slice(0, 1));
    // Each later connect tells the first node its peer is online: merged, but not for ever.
    connectAll(hub, nodes.slice(1));
    const upserted = first?.deltas().flatMap((d) => (d.type === 'delta' ? (d.peersUpserted ?? []) : []));
    expect(first?.deltas().length).toBeGreaterThan(1);
    expect(new Set(upserted?.map((p) => p.id)).size).toBeGreaterThan(300);
    expect(upserted?.every((p) => p.online)).toBe(true);
  });
  it('does not resend a peer that starts advertising routes nobody approved (its view is the same)', () => {
    const hub = new NetmapHub(allowAll, ['100.64.0.0/10']);
    const nodes = [node(1), node(2)];
    hub.update(nodes);
    const [s1] = connectAll(hub, nodes);
    const before = s1?.deltas().length;
    hub.update([nodes[0] as NodeRecord, node(2, { advertisedRoutes: ['198.51.100.0/24'] })]);
    expect(s1?.deltas().length).toBe(before);
  });

  it('keeps one record of what it sent for all allow-all streams: bytes in the nodes, not in their pairs', () => {
    const n = 300;
    const hub = new NetmapHub(allowAll, ['100.64.0.0/10']);
    const nodes = Array.from({ length: n }, (_, i) => node(i + 1));
    hub.update(nodes);
    const sessions = connectAll(hub, nodes);
    // A record of its own each would be n records of n peers (720,000 bytes here).
    expect(hub.recordBytes()).toBeLessThan(40 * n);
    // Still one comparison per change, and every member is told.
    for (const s of sessions) s.messages.length = 0;
    hub.update([...nodes.slice(1), node(1, { endpoints: ['203.0.113.1:41641'] })]);
    for (const s of sessions.slice(1)) {
      expect(s.messages).toEqual([
        {
          type: 'delta',
          mapToken: expect.any(String),
          peersUpserted: [expect.objectContaining({ id: 'n1' })],
        },
      ]);
    }
    expect(sessions[0]?.messages).toEqual([
      {
        type: 'delta',
        mapToken: expect.any(String),
        self: expect.objectContaining({ endpoints: ['203.0.113.1:41641'] }),
      },
    ]);
  });

  it('propagates nothing when a node already online (its stream held by the previous run) connects', () => {
    const hub = new NetmapHub(allowAll, ['100.64.0.0/10']);
    hub.replica = 'restarted';
    const back = [node(1, { streamedBy: 'previous-run' }), node(2, { streamedBy: 'previous-run' })];
    const offline = node(3);
    hub.update([...back, offline]);
    const [s1] = connectAll(hub, [back[0] as NodeRecord]);
    const propagate = vi.spyOn(hub as unknown as { propagate: () => void }, 'propagate');
    connectAll(hub, [back[1] as NodeRecord]);
    expect(propagate).not.toHaveBeenCalled();
    expect(s1?.deltas()).toEqual([]);
    // A node that was offline still comes online for its peers.
    connectAll(hub, [offline]);
    expect(propagate).toHaveBeenCalledTimes(1);
    expect(
      s1
        ?.deltas()
        .flatMap((d) => d.peersUpserted ?? [])
        .map((v) => [v.id, v.online]),
    ).toEqual([['n3', true]]);
  });
});

describe('NetmapHub under a policy that lists peers', () => {
  it('steps each watcher of changed nodes through the changed nodes it sees, not through all of them', () => {
    // 30 people with 3 devices each, who see their own devices only; one device of each changes.
    const nodes = Array.from({ length: 90 }, (_, i) =>
      testNode(i, { name: `p${Math.floor(i / 3)}`, email: `p${Math.floor(i / 3)}@example.com` }),
    );
    const policy = `{ "acls": [{ "action": "accept", "src": ["autogroup:member"], "dst": ["autogroup:self:*"] }] }`;
    const { hub, sessions } = connectedHub(nodes, policy, (id) => new FakeSession(id));
    for (const s of sessions.values()) s.messages.length = 0;
    const step = vi.spyOn(hub as unknown as { step: (...args: unknown[]) => unknown }, 'step');
    const changed = nodes.filter((_, i) => i % 3 === 0);
    hub.apply(
      changed.map((n) => n.id),
      changed.map((n) => ({ ...n, endpoints: ['198.51.100.1:41641'] })),
    );
    // Each of the 90 streams watches one changed node (its person's, or itself): 2,700 steps before.
    expect(step).toHaveBeenCalledTimes(90);
    const seen = sessions
      .get('n1')
      ?.deltas()
      .flatMap((d) => (d.type === 'delta' ? (d.peersUpserted ?? []) : []));
    expect(seen?.map((p) => p.id)).toEqual(['n0']);
  });

  describe('a node that reconnects with the token of the map it holds', () => {
    /** A node as it keeps its map: from the bytes it is sent, with the token of the latest message. */
    class Node implements StreamSession {
      readonly messages: StreamServerMessage[] = [];
      netmap: NetMap | null = null;
      token: string | null = null;
      closed = false;
      ownEncoding?: boolean;
      constructor(readonly nodeId: string) {}
      send(m: StreamServerMessage) {
        const read = JSON.parse(wireText(m)) as StreamServerMessage;
        if (read.type === 'resume') expect(this.netmap).not.toBeNull();
        this.messages.push(read);
        this.netmap = applyStreamMessage(this.netmap, read);
        this.token = mapTokenAfter(read);
      }
      close() {
        this.closed = true;
      }
      /** Its stream again (the old one left open, as control sees a reconnect before the close). */
      reconnect(hub: NetmapHub, token = this.token): Node {
        const next = new Node(this.nodeId);
        next.netmap = this.netmap;
        hub.connect(next, token ?? undefined);
        return next;
      }
    }
    const peersOf = (map: NetMap | null | undefined) =>
      [...(map?.peers ?? [])].sort((a, b) => a.id.localeCompare(b.id));
    const live = (hub: NetmapHub, nodes: NodeRecord[]) =>
      nodes.map((n) => {
        const s = new Node(n.id);
        hub.connect(s);
        return s;
      });

    it('is sent resume when nothing changed, keeps its peers, and then follows the deltas', () => {
      const hub = new NetmapHub(allowAll, ['100.64.0.0/10']);
      const nodes = Array.from({ length: 4 }, (_, i) => node(i + 1));
      hub.update(nodes);
      const [n1] = live(hub, nodes) as Node[];
      if (n1 === undefined) throw new Error('no node');
      expect(n1.token).not.toBeNull();
      const back = n1.reconnect(hub);
      expect(back.messages.map((m) => m.type)).toEqual(['resume']);
      expect(back.messages[0]).not.toHaveProperty('netmap.peers');
      expect(back.netmap).toEqual(hub.snapshot('n1'));
      hub.update([...nodes.slice(0, 2), node(3, { endpoints: ['203.0.113.3:41641'] }), ...nodes.slice(3)]);
      expect(back.messages.at(-1)?.type).toBe('delta');
      expect(peersOf(back.netmap)).toEqual(peersOf(hub.snapshot('n1')));
      // And resumes again from there.
      const third = back.reconnect(hub);
      expect(third.messages.map((m) => m.type)).toEqual(['resume']);
    });

    it('is sent a whole map when a peer changed meanwhile, or its token is old, wrong or of another format', () => {
      const hub = new NetmapHub(allowAll, ['100.64.0.0/10']);
      const nodes = Array.from({ length: 4 }, (_, i) => node(i + 1));
      hub.update(nodes);
      const [n1] = live(hub, nodes) as Node[];
      if (n1 === undefined) throw new Error('no node');
      const old = n1.token;
      hub.update([...nodes.slice(0, 3), node(4, { endpoints: ['203.0.113.4:41641'] })]);
      expect(n1.token).not.toBe(old);
      for (const token of [old, 'x', `2${(n1.token as string).slice(1)}`]) {
        const back = n1.reconnect(hub, token);
        expect(back.messages[0]?.type).toBe('full');
        expect(back.netmap).toEqual(hub.snapshot('n1'));
      }
    });

    it('is sent a whole map when presence held for it changed its peers, unsent', () => {
      const releases: (() => void)[] = [];
      const flushes: (() => void)[] = [];
      const flush = () => {
        for (let f = flushes.shift(); f !== undefined; f = flushes.shift()) f();
      };
      const hub = new NetmapHub(
        allowAll,
        ['100.64.0.0/10'],
        undefined,
        (f) => flushes.push(f),
        (r) => releases.push(r),
      );
      const nodes = Array.from({ length: 3 }, (_, i) => node(i + 1));
      hub.update(nodes);
      const [n1, n2] = live(hub, nodes) as Node[];
      for (const r of releases.splice(0)) r();
      flush();
      if (n1 === undefined || n2 === undefined) throw new Error('no node');
      const token = n1.token;
      expect(token).not.toBeNull();
      // n2 goes offline: held for n1, not sent.
      const before = n1.messages.length;
      hub.disconnect(n2);
      flush();
      expect(n1.messages.length).toBe(before);
      const back = n1.reconnect(hub, token);
      expect(back.messages[0]?.type).toBe('full');
      expect(peersOf(back.netmap).find((p) => p.id === 'n2')?.online).toBe(false);
    });

    it("gives a member its group's token, and a stream of its own the token of its own record", () => {
      const nodes = Array.from({ length: 4 }, (_, i) => node(i + 1));
      const grouped = new NetmapHub(allowAll, ['100.64.0.0/10']);
      grouped.update(nodes);
      const members = live(grouped, nodes);
      // Members in step share one token (so the deltas they are sent stay one message).
      expect(new Set(members.map((m) => m.token)).size).toBe(1);
      // The same peers seen by streams in no group: their records do not hold themselves.
      const alone: VisibilityPolicy = {
        visibilityOf: (n) => ({ canSee: (p) => p.id !== n.id, packetFilter: ALLOW_ALL }),
        affectedBy: () => new Set(),
      };
      const loose = new NetmapHub(alone, ['100.64.0.0/10']);
      loose.update(nodes);
      const streams = live(loose, nodes);
      expect(new Set(streams.map((m) => m.token)).size).toBe(4);
      const [member] = members;
      const [stream] = streams;
      if (member === undefined || stream === undefined) throw new Error('no node');
      expect(peersOf(member.netmap)).toEqual(peersOf(stream.netmap));
      expect(member.token).not.toBe(stream.token);
      expect(stream.reconnect(loose).messages[0]?.type).toBe('resume');
      expect(member.reconnect(loose).messages[0]?.type).toBe('full');
      expect(stream.reconnect(grouped).messages[0]?.type).toBe('full');
    });

    it('forms a group under any key, the empty one too: its members share one record and one token', () => {
      const empty: VisibilityPolicy = {
        visibilityOf: (n) => ({
          canSee: (p) => p.id !== n.id,
          packetFilter: ALLOW_ALL,
          shared: { key: '', canSee: () => true },
        }),
        affectedBy: () => new Set(),
      };
      const hub = new NetmapHub(empty, ['100.64.0.0/10']);
      const nodes = Array.from({ length: 4 }, (_, i) => node(i + 1));
      hub.update(nodes);
      const members = live(hub, nodes);
      expect(new Set(members.map((m) => m.token)).size).toBe(1);
    });

    for (const policy of [null, 'per-person'] as const) {
      it(`resumes every node after a restart with nothing changed (${policy ?? 'allow-all'})`, () => {
        const people = ['alice', 'bob', 'carol'];
        const nodes = Array.from({ length: 30 }, (_, i) =>
          testNode(
            i + 1,
            i % 10 === 0 ? null : { name: people[i % 3] as string, email: `${people[i % 3]}@example.com` },
            i % 10 === 0 ? { tags: ['tag:server'] } : {},
          ),
        );
        const hubOf = (replica: string) => {
          const visibility = new PolicyVisibility(wildcardSourcesOf(TEST_RANGES));
          if (policy !== null)
            visibility.setPolicy(
              parsePolicy(`{
                "tagOwners": { "tag:server": ["alice@example.com"] },
                "acls": [
                  { "action": "accept", "src": ["autogroup:member"], "dst": ["autogroup:self:*"] },
                  { "action": "accept", "src": ["autogroup:member"], "dst": ["tag:server:443"] },
                ],
              }`),
            );
          const hub = new NetmapHub(visibility, TEST_RANGES);
          hub.replica = replica;
          return hub;
        };
        const before = hubOf('r1');
        before.update(nodes);
        const held = live(before, nodes);
        expect(held.every((s) => s.token !== null)).toBe(true);
        // The restarted control: the previous run's rows keep every node online.
        const after = hubOf('r2');
        after.update(nodes.map((n) => ({ ...n, streamedBy: 'r1', lastSeen: '2026-06-01T00:00:00.000Z' })));
        // A view's bytes are made in a buffer of its own (ownBytes) when a whole map first carries it.
        const viewBytesMade = vi.spyOn(Buffer, 'allocUnsafeSlow');
        const back = held.map((s) => s.reconnect(after));
        expect(back.map((s) => s.messages[0]?.type)).toEqual(back.map(() => 'resume'));
        // The token is compared before any map is put together: a resume makes no peer's bytes.
        expect(viewBytesMade).not.toHaveBeenCalled();
        viewBytesMade.mockRestore();
        // The peers they held, in the order they held them.
        for (const s of back) {
          const snapshot = after.snapshot(s.nodeId);
          expect({ ...s.netmap, peers: peersOf(s.netmap) }).toEqual({
            ...snapshot,
            peers: peersOf(snapshot),
          });
        }
        // They still follow what changes.
        after.apply(
          ['n2'],
          [{ ...(nodes[1] as NodeRecord), endpoints: ['203.0.113.2:41641'], streamedBy: 'r1' }],
        );
        for (const s of back) expect(peersOf(s.netmap)).toEqual(peersOf(after.snapshot(s.nodeId)));
      });
    }
  });
});
