import {
  ALLOW_ALL,
  applyStreamMessage,
  mapTokenAfter,
  type NetMap,
  type StreamServerMessage,
} from '@weft/protocol';
import { describe, expect, it, vi } from 'vitest';
import { compilePolicy, parsePolicy } from '../policy/index.js';
import { TailnetNode } from '../policy/tailnet.js';
import type { NodeRecord } from '../tailnet/records.js';
import { connectedHub, TEST_RANGES, type TestOwner, testNode } from '../testing/nodes.js';
import { NetmapHub, type StreamSession } from './hub.js';
import { PolicyVisibility, policyTailnet, wildcardSourcesOf } from './policy-visibility.js';

// The policy compiler behind the hub: what each connected node holds after every change must be
// exactly what a full compile of the policy over the same nodes says, and a change must reach only
// the nodes it concerns.

const alice: TestOwner = { name: 'alice', email: 'alice@example.com' };
const bob: TestOwner = { name: 'bob', email: 'bob@example.com' };

const node = testNode;

/** A session that keeps the netmap as the node would, from the messages it was sent. */
class Session implements StreamSession {
  readonly messages: StreamServerMessage[] = [];
  netmap: NetMap | null = null;
  constructor(readonly nodeId: string) {}
  send(m: StreamServerMessage) {
    this.messages.push(m);
    this.netmap = applyStreamMessage(this.netmap, m);
  }
  close() {}
  peers(): string[] {
    return (this.netmap?.peers ?? []).map((p) => p.id).sort();
  }
}

const POLICY = `{
  "groups": { "group:dev": ["alice@example.com"], "group:eng": [] },
  "tagOwners": { "tag:web": ["group:dev"], "tag:db": ["group:dev"] },
  "acls": [
    { "action": "accept", "src": ["group:dev", "group:eng"], "dst": ["tag:web:443"] },
    { "action": "accept", "src": ["tag:web"], "dst": ["tag:db:5432"] },
    { "action": "accept", "src": ["autogroup:member"], "dst": ["autogroup:self:*"] },
  ],
}`;

function setup(nodes: NodeRecord[], policy: string | null = POLICY) {
  const { hub, visibility, sessions } = connectedHub(nodes, policy, (id) => new Session(id));
  const setPolicy = (text: string | null) => {
    hub.policyChanged(visibility.setPolicy(text === null ? null : parsePolicy(text)));
  };
  return { hub, sessions, setPolicy };
}

/** Every session holds exactly what a full compile over `nodes` gives. */
function expectCompiled(sessions: Map<string, Session>, nodes: NodeRecord[], policy = POLICY) {
  const owners = new Map<string, TestOwner>();
  for (const n of nodes) {
    if (n.userName)
      owners.set(n.userName, { name: n.userName, email: n.userEmail ?? '', groups: n.userGroups });
  }
  const users = [...owners.values()].map((o) => ({
    id: o.name,
    name: o.name,
    email: o.email ?? null,
    createdAt: '',
    provider: null,
    subject: null,
    displayName: null,
    groups: o.groups ?? [],
  }));
  const tailnet = policyTailnet(
    users,
    nodes.map((n) => ({ ...n, name: n.id })),
  );
  const engine = compilePolicy(parsePolicy(policy), tailnet, {
    wildcardSources: wildcardSourcesOf(TEST_RANGES),
  });
  for (const n of nodes) {
    const s = sessions.get(n.id);
    if (!s) continue;
    const want = engine.forNode(n.id);
    expect(s.peers(), `peers of ${n.id}`).toEqual(want.peers);
    expect(s.netmap?.packetFilter, `filter of ${n.id}`).toEqual(want.packetFilter);
  }
}

describe('the policy compiler as the hub’s visibility', () => {
  it('is allow-all until a policy is set, as before policies existed', () => {
    const nodes = [node(1, alice), node(2, bob), node(3, null, { tags: ['tag:web'] })];
    const { sessions } = setup(nodes, null);
    for (const s of sessions.values()) {
      expect(s.netmap?.packetFilter).toEqual(ALLOW_ALL);
      expect(s.peers()).toHaveLength(2);
    }
  });

  it('a new policy reaches every connected node as one delta with what moved for it', () => {
    const nodes = [node(1, alice), node(2, bob), node(3, null, { tags: ['tag:web'] })];
    const { sessions, setPolicy } = setup(nodes, null);
    for (const s of sessions.values()) s.messages.length = 0;
    setPolicy(POLICY);
    expectCompiled(sessions, nodes);
    // bob's laptop is in no rule but autogroup:self: it sees no one, and only his own nodes may reach it.
    expect(sessions.get('n2')?.messages).toEqual([
      {
        type: 'delta',
        packetFilter: [expect.objectContaining({ SrcIPs: ['100.64.0.2', 'fd00:1:2::6440:2'] })],
        peersRemoved: expect.arrayContaining(['n1', 'n3']),
      },
    ]);
    expect(sessions.get('n3')?.netmap?.packetFilter).toEqual([
      {
        SrcIPs: ['100.64.0.1', 'fd00:1:2::6440:1'],
        DstPorts: [
          { IP: '100.64.0.3', Ports: { First: 443, Last: 443 } },
          { IP: 'fd00:1:2::6440:3', Ports: { First: 443, Last: 443 } },
        ],
      },
    ]);
    // Back to no policy: everyone sees everyone again.
    setPolicy(null);
    for (const s of sessions.values()) {
      expect(s.netmap?.packetFilter).toEqual(ALLOW_ALL);
      expect(s.peers()).toHaveLength(2);
    }
  });

  it("builds a first policy's engine without checking control's own nodes again", () => {
    const nodes = [node(1, alice), node(2, bob), node(3, null, { tags: ['tag:web'] })];
    const { sessions, setPolicy } = setup(nodes, null);
    const checks = vi.spyOn(TailnetNode, 'parse');
    try {
      setPolicy(POLICY);
      expect(checks).not.toHaveBeenCalled();
    } finally {
      checks.mockRestore();
    }
    expectCompiled(sessions, nodes);
  });

  it('from and to allow-all, names as moved only the nodes that do not see everyone', () => {
    const nodes = [node(1, alice), node(2, bob), node(3, null, { tags: ['tag:web'] })];
    const { hub, visibility, sessions } = connectedHub(nodes, null, (id) => new Session(id));
    const all = '{ "acls": [{ "action": "accept", "src": ["*"], "dst": ["*:22,443"] }] }';
    const set = (text: string | null) => {
      const moved = visibility.setPolicy(text === null ? null : parsePolicy(text));
      hub.policyChanged(moved);
      return [...moved].sort();
    };
    expect(set(all)).toEqual([]);
    expectCompiled(sessions, nodes, all);
    expect(set(null)).toEqual([]);
    // bob's laptop sees no one, n1 and n3 only each other (see the test above).
    expect(set(POLICY)).toEqual(['n1', 'n2', 'n3']);
    expectCompiled(sessions, nodes);
    expect(set(null)).toEqual(['n1', 'n2', 'n3']);
    for (const s of sessions.values()) expect(s.peers()).toHaveLength(2);
  });

  it('resumes a stream that left its class with its peers as they were', () => {
    // Everyone sees everyone, first as one class, then each on a record of its own (autogroup:self).
    const everyone = '{ "acls": [{ "action": "accept", "src": ["*"], "dst": ["*:*"] }] }';
    const own = `{ "acls": [{ "action": "accept", "src": ["*"], "dst": ["*:*"] },
      { "action": "accept", "src": ["autogroup:member"], "dst": ["autogroup:self:22"] }] }`;
    for (const first of [null, everyone]) {
      const nodes = [node(1, alice), node(2, bob), node(3, alice)];
      const visibility = new PolicyVisibility(wildcardSourcesOf(TEST_RANGES));
      let flushes: (() => void)[] = [];
      const flush = () => {
        for (const f of flushes.splice(0)) f();
      };
      // Batched, as control runs it: a flush's deltas carry the token.
      const hub = new NetmapHub(visibility, TEST_RANGES, undefined, (f) => flushes.push(f));
      if (first !== null) visibility.setPolicy(parsePolicy(first));
      hub.update(nodes);
      const tokens = new Map<string, string | null>();
      const session = (id: string): Session => {
        const s = new Session(id);
        const send = s.send.bind(s);
        s.send = (m) => {
          send(m);
          tokens.set(id, mapTokenAfter(m));
        };
        return s;
      };
      const sessions = new Map(nodes.map((n) => [n.id, session(n.id)]));
      for (const s of sessions.values()) hub.connect(s);
      flush();
      hub.policyChanged(visibility.setPolicy(parsePolicy(own)));
      flush();
      for (const [id, s] of sessions) {
        const again = session(id);
        again.netmap = s.netmap;
        hub.connect(again, tokens.get(id) ?? undefined);
        expect(
          again.messages.map((m) => m.type),
          `${id} after ${first ?? 'allow-all'}`,
        ).toEqual(['resume']);
        expect(again.peers()).toHaveLength(2);
      }
      flushes = [];
    }
  });

  it('shares a record only between nodes that see alike, and never across two engines', () => {
    const web = [3, 4, 5].map((i) => node(i, null, { tags: ['tag:web'] }));
    const router = node(6, null, {
      tags: ['tag:web'],
      advertisedRoutes: ['198.51.100.0/24'],
      approvedRoutes: ['198.51.100.0/24'],
    });
    const nodes = [node(1, alice), node(2, bob), ...web, router];
    const { hub, visibility } = connectedHub(nodes, POLICY, (id) => new Session(id));
    const all = new Map(nodes.map((n) => [n.id, n]));
    const keyOf = (n: NodeRecord) => visibility.visibilityOf(n, all).shared?.key;
    const webKey = keyOf(web[0] as NodeRecord);
    expect(webKey).toBeDefined();
    expect(web.map(keyOf)).toEqual([webKey, webKey, webKey]);
    // autogroup:self: what alice sees is hers alone.
    expect(keyOf(nodes[0] as NodeRecord)).toBeUndefined();
    // A router is sent which router of its own prefix is primary, and not its own routes.
    expect(keyOf(router)).toBeUndefined();
    // The class sees its members as a class: tag:web does not see tag:web, but alice's laptop.
    const shared = visibility.visibilityOf(web[0] as NodeRecord, all).shared;
    expect(shared?.canSee(web[1] as NodeRecord)).toBe(false);
    expect(shared?.canSee(nodes[0] as NodeRecord)).toBe(true);
    // Without autogroup:self a member's class is shared too.
    hub.policyChanged(
      visibility.setPolicy(
        parsePolicy(`{ "acls": [{ "action": "accept", "src": ["autogroup:member"], "dst": ["*:*"] }] }`),
      ),
    );
    expect(keyOf(nodes[0] as NodeRecord)).toBeDefined();
    expect(keyOf(nodes[0] as NodeRecord)).toBe(keyOf(nodes[1] as NodeRecord));
    expect(visibility.visibilityOf(nodes[0] as NodeRecord, all).shared?.canSee(nodes[0] as NodeRecord)).toBe(
      true,
    );
    // The same policy again is a new engine: no key of the last one comes back.
    const before = keyOf(web[0] as NodeRecord);
    hub.policyChanged(visibility.setPolicy(parsePolicy(POLICY)));
    const first = keyOf(web[0] as NodeRecord);
    hub.policyChanged(visibility.setPolicy(parsePolicy(POLICY)));
    expect(new Set([before, first, webKey, keyOf(web[0] as NodeRecord)]).size).toBe(4);
  });

  it("keeps one record for per-person's shared servers, however many", () => {
    const people = [alice, bob, { name: 'carol', email: 'carol@example.com' }];
    const devices = people.flatMap((p, k) => Array.from({ length: 20 }, (_, i) => node(1 + k * 20 + i, p)));
    const servers = Array.from({ length: 100 }, (_, i) => node(100 + i, null, { tags: ['tag:server'] }));
    const nodes = [...devices, ...servers];
    const { hub, sessions } = setup(
      nodes,
      `{
        "tagOwners": { "tag:server": ["alice@example.com"] },
        "acls": [
          { "action": "accept", "src": ["autogroup:member"], "dst": ["autogroup:self:*"] },
          { "action": "accept", "src": ["autogroup:member"], "dst": ["tag:server:443"] },
        ],
      }`,
    );
    for (const d of devices) hub.disconnect(sessions.get(d.id) as Session);
    // A record each would be 100 records of 60 devices (48,000 bytes or more).
    expect(hub.recordBytes()).toBeLessThan(40 * nodes.length);
    expect(sessions.get('n100')?.peers()).toHaveLength(devices.length);
  });

  it('shares records again after a policy change splits or merges classes', () => {
    const devices = [alice, bob].flatMap((p, k) =>
      Array.from({ length: 30 }, (_, i) => node(1 + k * 30 + i, p)),
    );
    const servers = Array.from({ length: 100 }, (_, i) =>
      node(100 + i, null, { tags: [i % 2 === 0 ? 'tag:web' : 'tag:db'] }),
    );
    const nodes = [...devices, ...servers];
    const policy = (web: string, db: string) => `{
      "tagOwners": { "tag:web": ["alice@example.com"], "tag:db": ["alice@example.com"] },
      "acls": [
        { "action": "accept", "src": ["autogroup:member"], "dst": ["tag:web:${web}", "tag:db:${db}"] },
        { "action": "accept", "src": ["tag:db"], "dst": ["tag:db:5432"] },
      ],
    }`;
    // tag:db sees tag:db, tag:web does not: two classes.
    const { hub, sessions, setPolicy } = setup(nodes, policy('443', '443'));
    for (const d of devices) hub.disconnect(sessions.get(d.id) as Session);
    // At most a record of every node per class (16 bytes a slot); per stream: 100 records of 60 or
    // more peers (96,000 bytes or more).
    const oneRecord = 16 * nodes.length;
    expect(hub.recordBytes()).toBeLessThanOrEqual(2 * oneRecord);
    // One class: each group's members take its new key; the two are merged.
    setPolicy(
      policy('443', '443').replace(
        '"tag:db"], "dst": ["tag:db:5432"]',
        '"tag:db", "tag:web"], "dst": ["tag:db:5432", "tag:web:5432"]',
      ),
    );
    expect(hub.recordBytes()).toBeLessThanOrEqual(oneRecord);
    // Two classes again (tag:db only on port 22 now): tag:db's servers leave with a copy, and form one.
    setPolicy(policy('443', '22'));
    expect(hub.recordBytes()).toBeLessThanOrEqual(2 * oneRecord);
    expect(sessions.get('n101')?.peers()).toEqual(
      [
        ...devices.map((d) => d.id),
        ...servers.filter((s) => s.tags[0] === 'tag:db' && s.id !== 'n101').map((s) => s.id),
      ].sort(),
    );
    const serverIds = new Set(servers.map((s) => s.id));
    expectCompiled(new Map([...sessions].filter(([id]) => serverIds.has(id))), nodes, policy('443', '22'));
  });

  // A policy change that moves no one's peers re-keys groups without comparing them: the group's
  // record must still hold each member as its new class sees it (review of the shared records).
  const TAGS =
    '"tagOwners": { "tag:a": ["alice@example.com"], "tag:b": ["alice@example.com"], "tag:c": ["alice@example.com"], "tag:s": ["alice@example.com"] }';

  it("tells a later member of a lone member's removal when a policy made their class see itself", () => {
    const { hub, sessions, setPolicy } = setup(
      [node(1, null, { tags: ['tag:a'] }), node(2, null, { tags: ['tag:s'] })],
      `{ ${TAGS}, "acls": [{ "action": "accept", "src": ["tag:a", "tag:c"], "dst": ["tag:s:443"] }] }`,
    );
    // n1 is alone in its class: seeing its own class moves none of its peers.
    setPolicy(
      `{ ${TAGS}, "acls": [{ "action": "accept", "src": ["tag:a", "tag:c"], "dst": ["tag:s:443", "tag:a:22", "tag:c:22"] }] }`,
    );
    hub.apply(['n3'], [node(3, null, { tags: ['tag:c'] })]);
    const c = new Session('n3');
    hub.connect(c);
    expect(c.peers()).toEqual(['n1', 'n2']);
    hub.apply(['n1'], []);
    expect(sessions.get('n2')?.peers()).toEqual(['n3']);
    expect(c.peers()).toEqual(['n2']);
  });

  it('tells every member of two merged groups of a removal', () => {
    const { hub, sessions, setPolicy } = setup(
      [
        node(1, null, { tags: ['tag:a'] }),
        node(2, null, { tags: ['tag:b'] }),
        node(9, null, { tags: ['tag:s'] }),
      ],
      `{ ${TAGS}, "acls": [
        { "action": "accept", "src": ["tag:a"], "dst": ["tag:b:22"] },
        { "action": "accept", "src": ["tag:a", "tag:b"], "dst": ["tag:s:443"] } ] }`,
    );
    // tag:a and tag:b become one class that sees itself; each already saw the other.
    setPolicy(`{ ${TAGS}, "acls": [
        { "action": "accept", "src": ["tag:a", "tag:b"], "dst": ["tag:a:22", "tag:b:22"] },
        { "action": "accept", "src": ["tag:a", "tag:b"], "dst": ["tag:s:443"] } ] }`);
    expect(sessions.get('n2')?.peers()).toEqual(['n1', 'n9']);
    hub.apply(['n1'], []);
    expect(sessions.get('n2')?.peers()).toEqual(['n9']);
  });

  it('a join is sent only to the nodes it concerns', () => {
    const nodes = [
      node(1, alice),
      node(2, bob),
      node(3, null, { tags: ['tag:web'] }),
      node(4, null, { tags: ['tag:db'] }),
    ];
    const { hub, sessions } = setup(nodes);
    for (const s of sessions.values()) s.messages.length = 0;
    // Alice's second laptop: it reaches the web server and her other laptop (autogroup:self).
    const next = [...nodes, node(5, alice)];
    hub.update(next);
    expectCompiled(sessions, next);
    expect(sessions.get('n2')?.messages).toEqual([]);
    expect(sessions.get('n4')?.messages).toEqual([]);
    expect(sessions.get('n1')?.messages).toEqual([
      expect.objectContaining({ type: 'delta', peersUpserted: [expect.objectContaining({ id: 'n5' })] }),
    ]);
    expect(sessions.get('n3')?.messages).toEqual([
      expect.objectContaining({
        peersUpserted: [expect.objectContaining({ id: 'n5' })],
        packetFilter: expect.any(Array),
      }),
    ]);
  });

  it("works a node's packet filter out again only after a change that may move it", () => {
    const nodes = [node(1, alice), node(2, bob), node(3, null, { tags: ['tag:web'] })];
    const { hub, visibility, sessions } = connectedHub(nodes, POLICY, (id) => new Session(id));
    const filterOf = (id: string, all: NodeRecord[]) =>
      visibility.visibilityOf(hub.record(id) as NodeRecord, new Map(all.map((n) => [n.id, n]))).packetFilter;
    const before = filterOf('n1', nodes);
    // A second web server: a new peer for alice, not a new filter (nothing it runs reaches her).
    const withWeb = [...nodes, node(4, null, { tags: ['tag:web'] })];
    hub.update(withWeb);
    expectCompiled(sessions, withWeb);
    expect(filterOf('n1', withWeb)).toBe(before);
    // Her second laptop may reach her first (autogroup:self): that filter is worked out again.
    const withLaptop = [...withWeb, node(5, alice)];
    hub.update(withLaptop);
    expectCompiled(sessions, withLaptop);
    expect(filterOf('n1', withLaptop)).not.toBe(before);
  });

  it("gives a policy change's equal deltas one message, without serialising any filter's JSON again", () => {
    const everyone = (port: number) =>
      `{ "acls": [{ "action": "accept", "src": ["*"], "dst": ["*:${port}"] }] }`;
    const nodes = [node(1, alice), node(2, bob), node(3, null, { tags: ['tag:web'] })];
    const { sessions, setPolicy } = setup(nodes, everyone(22));
    const stringify = vi.spyOn(JSON, 'stringify');
    setPolicy(everyone(23));
    const sent = [...sessions.values()].map((s) => s.messages.at(-1));
    expect(sent[0]).toMatchObject({ type: 'delta', packetFilter: [{ DstPorts: [{ IP: '*' }] }] });
    for (const message of sent) expect(message).toBe(sent[0]);
    // A filter's JSON is made once per node to compare it; the key that shares a delta joins it as is.
    const isFilterJson = (v: unknown) => typeof v === 'string' && v.startsWith('[{"SrcIPs"');
    const again = stringify.mock.calls.filter(
      ([v]) => isFilterJson(v) || (Array.isArray(v) && v.some(isFilterJson)),
    );
    expect(again).toEqual([]);
    stringify.mockRestore();
    expectCompiled(sessions, nodes, everyone(23));
  });

  it("steps only the streams a person's new device concerns through it", () => {
    const visibility = new PolicyVisibility(wildcardSourcesOf(TEST_RANGES));
    visibility.setPolicy(parsePolicy(POLICY));
    // Which streams were asked whether they see a node.
    const asked = new Set<string>();
    const hub = new NetmapHub(
      {
        visibilityOf: (n, all) => {
          const v = visibility.visibilityOf(n, all);
          return { ...v, canSee: (peer) => asked.add(n.id) && v.canSee(peer) };
        },
        affectedBy: (changed, all) => visibility.affectedBy(changed, all),
      },
      TEST_RANGES,
    );
    const nodes = [node(1, alice), node(2, bob), node(3, bob), node(4, null, { tags: ['tag:web'] })];
    hub.update(nodes);
    const sessions = new Map(nodes.map((n) => [n.id, new Session(n.id)]));
    for (const s of sessions.values()) hub.connect(s);
    asked.clear();
    for (const s of sessions.values()) s.messages.length = 0;
    const next = [...nodes, node(5, alice)];
    hub.update(next);
    expectCompiled(sessions, next);
    // Bob's devices see neither alice nor the web server: they are not visited.
    expect(asked.has('n2') || asked.has('n3')).toBe(false);
    expect(sessions.get('n2')?.messages).toEqual([]);
  });

  it('follows tags and identity-provider groups as they change', () => {
    const nodes = [node(1, alice), node(2, bob), node(3, null, { tags: ['tag:web'] })];
    const { hub, sessions } = setup(nodes);
    expect(sessions.get('n2')?.peers()).toEqual([]);

    // Bob signs in again and his provider now puts him in "eng" (declared empty in the policy).
    const bobEng = { ...bob, groups: ['/eng'] };
    const step1 = [node(1, alice), node(2, bobEng), node(3, null, { tags: ['tag:web'] })];
    hub.update(step1);
    expectCompiled(sessions, step1);
    expect(sessions.get('n2')?.peers()).toEqual(['n3']);

    // The web server is re-tagged as a database: dev and eng lose it, nothing else moves.
    const step2 = [node(1, alice), node(2, bobEng), node(3, null, { tags: ['tag:db'] })];
    hub.update(step2);
    expectCompiled(sessions, step2);
    expect(sessions.get('n2')?.peers()).toEqual([]);

    // Deleted: gone from every map.
    const step3 = [node(1, alice), node(2, bobEng)];
    hub.update(step3);
    expectCompiled(sessions, step3);
  });

  it('after any sequence of joins, leaves and re-tags, every node holds what a full compile gives', () => {
    let seed = 7;
    const random = (n: number) => {
      seed = (seed * 1103515245 + 12345) % 2 ** 31;
      return seed % n;
    };
    const owners: (TestOwner | null)[] = [alice, bob, { name: 'carol', groups: ['eng'] }, null];
    const tagsets = [[], ['tag:web'], ['tag:db'], ['tag:web', 'tag:db']];
    const make = (i: number) => {
      const owner = owners[random(owners.length)] ?? null;
      const tags = owner === null ? (tagsets[1 + random(3)] as string[]) : random(4) === 0 ? ['tag:web'] : [];
      return node(i, owner, { tags });
    };
    let nodes = Array.from({ length: 12 }, (_, i) => make(i + 1));
    const { hub, sessions } = setup(nodes);
    for (let step = 0; step < 60; step++) {
      const i = 1 + random(16);
      const rest = nodes.filter((n) => n.id !== `n${i}`);
      nodes = random(4) === 0 ? rest : [...rest, make(i)];
      hub.update(nodes);
      for (const n of nodes) {
        if (!hub.isOnline(n.id)) {
          const s = new Session(n.id);
          hub.connect(s);
          sessions.set(n.id, s);
        }
      }
      for (const id of sessions.keys()) if (!nodes.some((n) => n.id === id)) sessions.delete(id);
      expectCompiled(sessions, nodes);
    }
  });
});
