import { ALLOW_ALL, applyStreamMessage, type NetMap, type StreamServerMessage } from '@weft/protocol';
import { describe, expect, it } from 'vitest';
import { compilePolicy, parsePolicy } from '../policy/index.js';
import type { NodeRecord } from '../tailnet/records.js';
import { connectedHub, TEST_RANGES, type TestOwner, testNode } from '../testing/nodes.js';
import type { StreamSession } from './hub.js';
import { policyTailnet, wildcardSourcesOf } from './policy-visibility.js';

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
