import { describe, expect, it, vi } from 'vitest';
import { readPolicyCases } from '../testing/conformance-cases.js';
import { checkPolicy } from './check.js';
import { CompiledPolicy, compilePolicy, type NodePolicy, type PolicyChange } from './compiler.js';
import { compareFilters } from './filter-meaning.js';
import { IPSet, parseFilterIP } from './ipset.js';
import { parsePolicy } from './parse.js';
import { parseTailnet, type Tailnet, type TailnetInput } from './tailnet.js';

/** Every tenth accepted conformance case: realistic policies and tailnets with routers and tags. */
function sampleCases(): { id: string; policy: string; tailnet: Tailnet }[] {
  return readPolicyCases<{
    id: string;
    policy: string;
    users: unknown;
    nodes: unknown;
    expectError?: unknown;
  }>()
    .filter((c) => !c.expectError)
    .filter((_, i) => i % 10 === 0)
    .map((c) => ({ id: c.id, policy: c.policy, tailnet: parseTailnet({ users: c.users, nodes: c.nodes }) }));
}

function snapshot(engine: CompiledPolicy): Record<string, NodePolicy> {
  return JSON.parse(JSON.stringify(engine.all()));
}

/** The change must name every node whose policy moved, with the exact peer delta. */
function expectChangeCovers(
  change: PolicyChange,
  before: Record<string, NodePolicy>,
  after: Record<string, NodePolicy>,
) {
  for (const [name, now] of Object.entries(after)) {
    const was = before[name];
    if (!was) continue;
    const added = now.peers.filter((p) => !was.peers.includes(p));
    const removed = was.peers.filter((p) => !now.peers.includes(p));
    const delta = change.peers.get(name) ?? { added: [], removed: [] };
    expect([...delta.added].sort(), `peers added for ${name}`).toEqual(added);
    expect([...delta.removed].sort(), `peers removed for ${name}`).toEqual(removed);
    if (JSON.stringify(was.packetFilter) !== JSON.stringify(now.packetFilter)) {
      expect(change.filters.has(name), `filter of ${name} changed unannounced`).toBe(true);
    }
    if (JSON.stringify(was.peerRoutes) !== JSON.stringify(now.peerRoutes)) {
      expect(change.routes.has(name), `routes of ${name} changed unannounced`).toBe(true);
    }
  }
}

describe('incremental compilation', () => {
  it.each(sampleCases().map((c) => [c.id, c] as const))(
    '%s: node by node equals a full compile',
    (_id, c) => {
      const policy = parsePolicy(c.policy);
      const names = Object.keys(c.tailnet.nodes);
      const engine = new CompiledPolicy(policy, c.tailnet.users);
      for (const name of names) {
        const before = snapshot(engine);
        const change = engine.upsertNode(name, c.tailnet.nodes[name] as Tailnet['nodes'][string]);
        expectChangeCovers(change, before, snapshot(engine));
      }
      expect(snapshot(engine)).toEqual(snapshot(compilePolicy(policy, c.tailnet)));

      // Take each node out and put it back: it registers again, so it goes last.
      let order = [...names];
      const inOrder = (list: string[]) =>
        Object.fromEntries(list.map((n) => [n, c.tailnet.nodes[n] as Tailnet['nodes'][string]]));
      for (const name of names) {
        let before = snapshot(engine);
        let change = engine.removeNode(name);
        expectChangeCovers(change, before, snapshot(engine));
        order = order.filter((n) => n !== name);
        expect(snapshot(engine)).toEqual(
          snapshot(compilePolicy(policy, { ...c.tailnet, nodes: inOrder(order) })),
        );
        before = snapshot(engine);
        change = engine.upsertNode(name, c.tailnet.nodes[name] as Tailnet['nodes'][string]);
        expectChangeCovers(change, before, snapshot(engine));
        order.push(name);
      }
      expect(snapshot(engine)).toEqual(
        snapshot(compilePolicy(policy, { ...c.tailnet, nodes: inOrder(order) })),
      );
    },
  );

  it('reports a route change to everyone who sees the router', () => {
    const policy = parsePolicy(`{
      "tagOwners": { "tag:router": ["alice@example.com"] },
      "autoApprovers": { "routes": { "198.18.0.0/15": ["tag:router"] } },
      "acls": [{ "action": "accept", "src": ["autogroup:member"], "dst": ["198.18.0.0/15:*"] }],
    }`);
    const tailnet = parseTailnet({
      users: [{ name: 'alice', email: 'alice@example.com' }],
      nodes: {
        laptop: { user: 'alice', ipv4: '100.64.0.1' },
        router: { tags: ['tag:router'], ipv4: '100.64.0.2' },
      },
    });
    const engine = compilePolicy(policy, tailnet);
    expect(engine.forNode('laptop').peers).toEqual([]);
    const change = engine.upsertNode('router', {
      tags: ['tag:router'],
      ipv4: '100.64.0.2',
      advertisedRoutes: ['198.18.1.0/24'],
    });
    expect(change.peers.get('laptop')).toEqual({ added: ['router'], removed: [] });
    expect(change.routes.has('laptop')).toBe(true);
    expect(engine.forNode('laptop').peerRoutes).toEqual({ router: ['198.18.1.0/24'] });
    expect(engine.packetFilter('router')).toEqual([
      { SrcIPs: ['100.64.0.1'], DstPorts: [{ IP: '198.18.0.0/15', Ports: { First: 0, Last: 65535 } }] },
    ]);
  });
});

describe('peers one at a time', () => {
  it('are each visible peer once, as visiblePeers lists them (sample cases, and autogroup:self)', () => {
    const self = parsePolicy(`{
      "acls": [
        { "action": "accept", "src": ["autogroup:member"], "dst": ["autogroup:self:*"] },
        { "action": "accept", "src": ["alice@example.com"], "dst": ["*:22"] },
      ],
    }`);
    const tailnet = parseTailnet({
      users: [{ name: 'alice', email: 'alice@example.com' }, { name: 'bob' }],
      nodes: {
        a1: { user: 'alice', ipv4: '100.64.0.1' },
        a2: { user: 'alice', ipv4: '100.64.0.2' },
        b1: { user: 'bob', ipv4: '100.64.0.3' },
        b2: { user: 'bob', ipv4: '100.64.0.4' },
      },
    });
    const cases = [...sampleCases(), { id: 'self', policy: null, tailnet }];
    for (const c of cases) {
      const engine = compilePolicy(c.policy === null ? self : parsePolicy(c.policy), c.tailnet);
      for (const name of engine.nodeNames()) {
        const listed = [...engine.eachVisiblePeer(name)];
        expect(listed.length, `${c.id} ${name}`).toBe(new Set(listed).size);
        expect(new Set(listed), `${c.id} ${name}`).toEqual(engine.visiblePeers(name));
      }
    }
  });
});

describe('canSee', () => {
  it("answers for the classes a node sees without working out its user's own nodes until asked of one", () => {
    const policy = parsePolicy(`{
      "tagOwners": { "tag:server": ["alice@example.com"] },
      "acls": [
        { "action": "accept", "src": ["autogroup:member"], "dst": ["autogroup:self:*"] },
        { "action": "accept", "src": ["autogroup:member"], "dst": ["tag:server:22"] },
      ],
    }`);
    const tailnet = parseTailnet({
      users: [{ name: 'alice', email: 'alice@example.com' }, { name: 'bob' }],
      nodes: {
        a1: { user: 'alice', ipv4: '100.64.0.1' },
        a2: { user: 'alice', ipv4: '100.64.0.2' },
        b1: { user: 'bob', ipv4: '100.64.0.3' },
        s1: { tags: ['tag:server'], ipv4: '100.64.0.9' },
      },
    });
    const engine = compilePolicy(policy, tailnet);
    // biome-ignore lint/suspicious/noExplicitAny: counting calls of a private method
    const self = vi.spyOn(engine as any, 'selfPeers');
    const canSee = engine.canSee('a1');
    expect(canSee('s1')).toBe(true);
    expect(self).not.toHaveBeenCalled();
    expect([canSee('a2'), canSee('b1'), canSee('a1'), canSee('nobody')]).toEqual([true, false, false, false]);
    expect(self).toHaveBeenCalledTimes(1);
  });
});

describe('autogroup:self sources', () => {
  it("are worked out once per user, and follow the user's nodes as they come and go", () => {
    const policy = parsePolicy(`{
      "acls": [{ "action": "accept", "src": ["autogroup:member"], "dst": ["autogroup:self:22"] }],
    }`);
    const tailnet = parseTailnet({
      users: [{ name: 'alice' }, { name: 'bob' }],
      nodes: {
        a1: { user: 'alice', ipv4: '100.64.0.1' },
        a2: { user: 'alice', ipv4: '100.64.0.2' },
        a3: { user: 'alice', ipv4: '100.64.0.3' },
        b1: { user: 'bob', ipv4: '100.64.0.9' },
      },
    });
    const engine = compilePolicy(policy, tailnet);
    const src = (n: string) => engine.packetFilter(n)[0]?.SrcIPs;
    expect(src('a1')).toEqual(['100.64.0.1-100.64.0.3']);
    // One list for all three (a policy change asks every node: once per user, not per node).
    expect(src('a2')).toBe(src('a1'));
    expect(src('a3')).toBe(src('a1'));
    engine.removeNode('a2');
    expect(src('a1')).toEqual(['100.64.0.1', '100.64.0.3']);
    engine.upsertNode('a4', { user: 'alice', ipv4: '100.64.0.4' });
    expect(src('a3')).toEqual(['100.64.0.1', '100.64.0.3-100.64.0.4']);
    expect(src('b1')).toEqual(['100.64.0.9']);
  });
});

describe('filters', () => {
  it("make a node's address space only for a destination with prefixes", () => {
    const policy = parsePolicy(`{
      "tagOwners": { "tag:server": ["alice@example.com"] },
      "acls": [
        { "action": "accept", "src": ["autogroup:member"], "dst": ["autogroup:self:22"] },
        { "action": "accept", "src": ["autogroup:member"], "dst": ["tag:server:443"] },
        { "action": "accept", "src": ["*"], "dst": ["*:80"] },
      ],
    }`);
    const tailnet = parseTailnet({
      users: [{ name: 'alice', email: 'alice@example.com' }, { name: 'bob' }],
      nodes: {
        a1: { user: 'alice', ipv4: '100.64.0.1' },
        b1: { user: 'bob', ipv4: '100.64.0.9' },
        s1: { tags: ['tag:server'], ipv4: '100.64.0.20' },
      },
    });
    const engine = compilePolicy(policy, tailnet);
    const unions = vi.spyOn(IPSet.prototype, 'union');
    try {
      expect(engine.packetFilter('s1').map((r) => r.DstPorts?.map((d) => d.IP))).toEqual([
        ['100.64.0.20'],
        ['*'],
      ]);
      engine.packetFilter('a1');
      engine.packetFilter('b1');
      expect(unions).not.toHaveBeenCalled();
    } finally {
      unions.mockRestore();
    }
  });
});

describe('peersNotAll', () => {
  it('names exactly the nodes that do not see every other node (sample cases)', () => {
    for (const c of sampleCases()) {
      const engine = compilePolicy(parsePolicy(c.policy), c.tailnet);
      const names = engine.nodeNames();
      const notAll = names.filter((n) => engine.peers(n).length !== names.length - 1);
      expect([...engine.peersNotAll()].sort(), c.id).toEqual(notAll.sort());
    }
  });
});

describe('users', () => {
  it('moves a user’s nodes in and out of rules when the user changes', () => {
    const policy = parsePolicy(`{
      "tagOwners": { "tag:web": ["alice@example.com"] },
      "acls": [{ "action": "accept", "src": ["user:*@example.com"], "dst": ["tag:web:443"] }],
    }`);
    const engine = compilePolicy(
      policy,
      parseTailnet({
        users: [{ name: 'bob', email: 'bob@elsewhere.org' }],
        nodes: { phone: { user: 'bob', ipv4: '100.64.0.2' }, web: { tags: ['tag:web'], ipv4: '100.64.0.3' } },
      }),
    );
    expect(engine.peers('web')).toEqual([]);
    const change = engine.upsertUser({ name: 'bob', email: 'bob@example.com' });
    expect(change.peers.get('web')).toEqual({ added: ['phone'], removed: [] });
    expect(change.filters.has('web')).toBe(true);
    expect(engine.packetFilter('web')[0]?.SrcIPs).toEqual(['100.64.0.2']);
  });
});

describe('a user’s upsert', () => {
  it('visits that user’s nodes only, as they move between users and go', () => {
    const policy = parsePolicy(`{ "acls": [{ "action": "accept", "src": ["*"], "dst": ["*:*"] }] }`);
    const nodes: TailnetInput['nodes'] = {
      phone: { user: 'bob', ipv4: '100.64.0.2' },
      laptop: { user: 'bob', ipv4: '100.64.0.3' },
    };
    for (let i = 0; i < 200; i++) nodes[`n${i}`] = { user: 'carol', ipv4: `100.64.1.${i}` };
    const engine = compilePolicy(
      policy,
      parseTailnet({
        users: [
          { name: 'bob', email: 'bob@example.com' },
          { name: 'carol', email: 'carol@example.com' },
        ],
        nodes,
      }),
    );
    // What an upsert visits: the nodes it recompiles, and whether it went through every node.
    const internals = engine as unknown as {
      nodes: Map<string, unknown>;
      replace: (name: string) => unknown;
    };
    const everyNode = vi.spyOn(internals.nodes, 'values');
    const visited = vi.spyOn(internals, 'replace');
    const visits = (user: string) => {
      everyNode.mockClear();
      visited.mockClear();
      engine.upsertUser({ name: user, email: `${user}@example.com` });
      expect(everyNode).not.toHaveBeenCalled();
      return visited.mock.calls.map((c) => c[0]).sort();
    };
    expect(visits('bob')).toEqual(['laptop', 'phone']);
    engine.upsertNode('phone', { user: 'carol', ipv4: '100.64.0.2' });
    expect(visits('bob')).toEqual(['laptop']);
    engine.removeNode('laptop');
    expect(visits('bob')).toEqual([]);
    expect(visits('carol')).toHaveLength(201);
  });
});

describe('route election', () => {
  const policy = parsePolicy(`{ "acls": [{ "action": "accept", "src": ["*"], "dst": ["*:*"] }] }`);
  const tailnet = (primary?: string): TailnetInput => ({
    users: [{ name: 'alice', email: 'alice@example.com' }],
    nodes: {
      laptop: { user: 'alice', ipv4: '100.64.0.1' },
      first: {
        user: 'alice',
        ipv4: '100.64.0.2',
        advertisedRoutes: ['198.19.9.0/24'],
        approvedRoutes: ['198.19.9.0/24'],
      },
      second: {
        user: 'alice',
        ipv4: '100.64.0.3',
        advertisedRoutes: ['198.19.9.0/24'],
        approvedRoutes: ['198.19.9.0/24'],
        ...(primary === 'second' ? { primaryRoutes: ['198.19.9.0/24'] } : {}),
      },
    },
  });

  it('makes the first router in registration order primary', () => {
    const engine = compilePolicy(policy, parseTailnet(tailnet()));
    expect(engine.peerRoutes('laptop')).toEqual({ first: ['198.19.9.0/24'] });
    expect(engine.peerRoutes('second')).toEqual({ first: ['198.19.9.0/24'] });
    expect(engine.peerRoutes('first')).toEqual({});
  });

  it('follows the primary that control elected', () => {
    const engine = compilePolicy(policy, parseTailnet(tailnet('second')));
    expect(engine.peerRoutes('laptop')).toEqual({ second: ['198.19.9.0/24'] });
  });
});

describe('wildcard sources', () => {
  it('stand for the tailnet ranges given by control, plus approved subnet routes', () => {
    const policy = parsePolicy(
      `{ "acls": [{ "action": "accept", "src": ["*"], "dst": ["autogroup:member:22"] }] }`,
    );
    const tailnet = parseTailnet({
      users: [{ name: 'alice', email: 'alice@example.com' }],
      nodes: { laptop: { user: 'alice', ipv4: '100.64.0.1', ipv6: 'fd12:3456:789a::6440:1' } },
    });
    const ranges = IPSet.unionAll(
      ['100.64.0.0/10', 'fd12:3456:789a::/48'].map((p) => parseFilterIP(p) as IPSet),
    );
    const engine = compilePolicy(policy, tailnet, { wildcardSources: ranges });
    expect(engine.packetFilter('laptop')[0]?.SrcIPs).toEqual(['100.64.0.0/10', 'fd12:3456:789a::/48']);
  });
});

describe('autogroup:internet on an exit node', () => {
  const tailnet = parseTailnet({
    users: [{ name: 'alice', email: 'alice@example.com' }],
    nodes: {
      laptop: { user: 'alice', ipv4: '100.64.0.1', ipv6: 'fd7a:115c:a1e0::1' },
      exit: {
        tags: ['tag:exit'],
        ipv4: '100.64.0.2',
        advertisedRoutes: ['0.0.0.0/0', '::/0'],
        approvedRoutes: ['0.0.0.0/0', '::/0'],
      },
    },
  });
  /** As recorded from Tailscale's control plane for an exit node that alice may use. */
  const tailscale = [
    {
      SrcIPs: ['100.64.0.1', 'fd7a:115c:a1e0::1'],
      DstPorts: [
        '0.0.0.0-9.255.255.255',
        '11.0.0.0-100.63.255.255',
        '100.128.0.0-169.253.255.255',
        '169.255.0.0-172.15.255.255',
        '172.32.0.0-192.167.255.255',
        '192.169.0.0-255.255.255.255',
        '2000::-3fff:ffff:ffff:ffff:ffff:ffff:ffff:ffff',
      ].map((IP) => ({ IP, Ports: { First: 0, Last: 65535 } })),
    },
  ];
  const owners = `"tagOwners": { "tag:exit": ["alice@example.com"] }`;

  it('is the set Tailscale sends: IPv4 but private, CGNAT and link-local; IPv6 global unicast', () => {
    const policy = parsePolicy(
      `{ ${owners}, "acls": [{ "action": "accept", "src": ["alice@example.com"], "dst": ["autogroup:internet:*"] }] }`,
    );
    const engine = compilePolicy(policy, tailnet);
    expect(compareFilters(engine.packetFilter('exit'), tailscale)).toEqual({ onlyA: [], onlyB: [] });
    expect(engine.packetFilter('laptop')).toEqual([]);
  });

  it('is the same set through a via grant (not the whole of 0.0.0.0/0 and ::/0)', () => {
    const policy = parsePolicy(`{ ${owners}, "grants": [
      { "src": ["autogroup:member"], "dst": ["autogroup:internet"], "ip": ["*"], "via": ["tag:exit"] },
    ] }`);
    const engine = compilePolicy(policy, tailnet);
    expect(compareFilters(engine.packetFilter('exit'), tailscale)).toEqual({ onlyA: [], onlyB: [] });
    expect(engine.peerRoutes('laptop')).toEqual({ exit: ['0.0.0.0/0', '::/0'] });
  });
});

describe('IP literals as destinations', () => {
  const tailnet = parseTailnet({
    users: [],
    nodes: {
      server: { tags: ['tag:server'], ipv4: '100.64.0.16', ipv6: 'fd7a:115c:a1e0::10' },
      client: { tags: ['tag:client'], ipv4: '100.64.0.14', ipv6: 'fd7a:115c:a1e0::e' },
    },
  });
  const compile = (dst: string) =>
    compilePolicy(
      parsePolicy(`{
        "tagOwners": { "tag:server": [], "tag:client": [] },
        "grants": [{ "src": ["tag:client"], "dst": ["${dst}"], "ip": ["tcp:22"] }],
      }`),
      tailnet,
    );

  it('name a node by its IPv4 address: it gets the rule, and the two see each other', () => {
    const engine = compile('100.64.0.16');
    expect(engine.packetFilter('server')).toEqual([
      {
        SrcIPs: ['100.64.0.14', 'fd7a:115c:a1e0::e'],
        DstPorts: [{ IP: '100.64.0.16', Ports: { First: 22, Last: 22 } }],
        IPProto: [6],
      },
    ]);
    expect(engine.peers('client')).toEqual(['server']);
  });

  it('do not name a node by its IPv6 address: no rule, no peers (as Tailscale recorded)', () => {
    const engine = compile('fd7a:115c:a1e0::10');
    expect(engine.all()).toEqual({
      server: { packetFilter: [], peers: [], peerRoutes: {} },
      client: { packetFilter: [], peers: [], peerRoutes: {} },
    });
  });
});

describe('groups from the identity provider', () => {
  const policy = parsePolicy(`{
    "groups": { "group:eng": ["carol@example.com"] },
    "tagOwners": { "tag:web": ["group:eng"] },
    "acls": [{ "action": "accept", "src": ["group:eng"], "dst": ["tag:web:443"] }],
    "tests": [{ "src": "group:eng", "accept": ["tag:web:443"], "deny": ["tag:web:22"] }],
  }`);
  const tailnet = (aliceGroups: string[]) =>
    parseTailnet({
      users: [
        { name: 'alice', email: 'alice@example.com', groups: aliceGroups },
        { name: 'carol', email: 'carol@example.com' },
      ],
      nodes: {
        laptop: { user: 'alice', ipv4: '100.64.0.1' },
        desk: { user: 'carol', ipv4: '100.64.0.2' },
        web: { tags: ['tag:web'], ipv4: '100.64.0.3' },
      },
    });

  it('add their members to the policy group of the same name', () => {
    const engine = compilePolicy(policy, tailnet(['group:eng']));
    expect(engine.peers('web')).toEqual(['desk', 'laptop']);
    expect(engine.packetFilter('web')[0]?.SrcIPs).toEqual(['100.64.0.1-100.64.0.2']);
    expect(compilePolicy(policy, tailnet(['group:sales'])).peers('web')).toEqual(['desk']);
  });

  it('move a user’s nodes when the user’s groups change', () => {
    const engine = compilePolicy(policy, tailnet([]));
    const change = engine.upsertUser({ name: 'alice', email: 'alice@example.com', groups: ['group:eng'] });
    expect(change.peers.get('web')).toEqual({ added: ['laptop'], removed: [] });
    expect(engine.canSee('laptop')('web')).toBe(true);
    expect(engine.canSee('laptop')('desk')).toBe(false);
    expect(engine.canSee('laptop')('laptop')).toBe(false);
    expect([...engine.visiblePeers('web')].sort()).toEqual(['desk', 'laptop']);
  });

  it('count in the policy’s tests', () => {
    const checked = checkPolicy(
      `{
        "groups": { "group:eng": [] },
        "tagOwners": { "tag:web": ["group:eng"] },
        "acls": [{ "action": "accept", "src": ["group:eng"], "dst": ["tag:web:443"] }],
        "tests": [{ "src": "group:eng", "accept": ["tag:web:443"], "deny": ["tag:web:22"] }],
      }`,
      tailnet(['group:eng']),
    );
    expect(checked.ok).toBe(true);
    const empty = checkPolicy(
      `{
        "groups": { "group:eng": [] },
        "tagOwners": { "tag:web": ["group:eng"] },
        "tests": [{ "src": "group:eng", "deny": ["tag:web:22"] }],
      }`,
      tailnet([]),
    );
    expect(empty.ok ? [] : empty.issues.map((i) => i.message)).toEqual([
      'test failed: src "group:eng" names no user of the tailnet',
    ]);
  });
});

describe('a policy change', () => {
  /** Each person reaches their own devices on `ports`, every member the servers' SSH; then `more` rules. */
  const selfAndServers = (ports: string, ...more: string[]) => `{
    "tagOwners": { "tag:server": ["ops@example.com"] },
    "acls": [
      { "action": "accept", "src": ["autogroup:member"], "dst": ["autogroup:self:${ports}"] },
      { "action": "accept", "src": ["autogroup:member"], "dst": ["tag:server:22"] },
      ${more.map((r) => `${r},`).join('\n      ')}
    ],
  }`;

  it('names exactly the nodes whose peers moved (sample cases, each policy against the next)', () => {
    const cases = sampleCases();
    for (const [i, c] of cases.entries()) {
      const next = cases[(i + 1) % cases.length] as (typeof cases)[number];
      const before = compilePolicy(parsePolicy(c.policy), c.tailnet);
      const after = compilePolicy(parsePolicy(next.policy), c.tailnet);
      const moved = Object.keys(c.tailnet.nodes).filter(
        (n) => JSON.stringify(before.peers(n)) !== JSON.stringify(after.peers(n)),
      );
      expect([...after.peersChangedFrom(before)].sort(), `${c.id} → ${next.id}`).toEqual(moved.sort());
      expect([...after.peersChangedFrom(after)]).toEqual([]);
    }
  });

  it("compares autogroup:self peers once per user, not once per node (every replica decides every node's)", () => {
    const people = ['alice', 'bob', 'carol'];
    const nodes: TailnetInput['nodes'] = { s1: { tags: ['tag:server'], ipv4: '100.64.1.1' } };
    for (const [p, person] of people.entries())
      for (let d = 0; d < 4; d++)
        nodes[`${person}${d}`] = { user: person, ipv4: `100.64.0.${p * 4 + d + 1}` };
    const tailnet = parseTailnet({ users: [...people.map((name) => ({ name })), { name: 'ops' }], nodes });
    const before = compilePolicy(parsePolicy(selfAndServers('*')), tailnet);
    const after = before.withPolicy(parsePolicy(selfAndServers('22')));
    // biome-ignore lint/suspicious/noExplicitAny: counting calls of a private method
    const self = [vi.spyOn(before as any, 'selfPeers'), vi.spyOn(after as any, 'selfPeers')];
    expect([...after.peersChangedFrom(before)]).toEqual([]);
    // One per person and engine, and one for the tagged server (none of its own); before, one per node.
    expect(self.map((s) => s.mock.calls.length)).toEqual([people.length + 1, people.length + 1]);
  });

  it('builds no address set for a node without routes when taken over (every replica rebuilds every node)', () => {
    const nodes: TailnetInput['nodes'] = {
      r1: { user: 'alice', ipv4: '100.64.1.1', advertisedRoutes: ['198.51.100.0/24'] },
    };
    for (let i = 0; i < 20; i++) nodes[`a${i}`] = { user: 'alice', ipv4: `100.64.0.${i + 1}` };
    const tailnet = parseTailnet({ users: [{ name: 'alice', email: 'alice@example.com' }], nodes });
    const text = (ports: string) => `{
      "autoApprovers": { "routes": { "198.51.100.0/24": ["alice@example.com"] } },
      "acls": [{ "action": "accept", "src": ["autogroup:member"], "dst": ["autogroup:self:${ports}"] }],
    }`;
    const before = compilePolicy(parsePolicy(text('*')), tailnet);
    const next = parsePolicy(text('22'));
    const sets = vi.spyOn(IPSet, 'fromRanges');
    const taken = before.withPolicy(next);
    // The router's routes only (each node's addresses are taken over): one per node before.
    expect(sets.mock.calls.length).toBeLessThanOrEqual(2);
    sets.mockRestore();
    expect(snapshot(taken)).toEqual(snapshot(compilePolicy(next, tailnet)));
  });

  it("takes the sources' texts over from the engine in force: none worked out again unless its nodes moved", () => {
    const text = (ports: string) =>
      selfAndServers(ports, '{ "action": "accept", "src": ["*"], "dst": ["tag:server:80"] }');
    const people = ['alice', 'bob', 'carol'];
    const nodes: TailnetInput['nodes'] = {
      s1: { tags: ['tag:server'], ipv4: '100.64.1.1', ipv6: 'fd7a:115c:a1e0::101' },
      r1: { user: 'alice', ipv4: '100.64.1.2', advertisedRoutes: ['198.51.100.0/24'] },
    };
    for (const [p, person] of people.entries())
      for (let d = 0; d < 3; d++)
        nodes[`${person}${d}`] = {
          user: person,
          ipv4: `100.64.0.${p * 3 + d + 1}`,
          ipv6: `fd7a:115c:a1e0::${p * 3 + d + 1}`,
        };
    const users = [...people.map((name) => ({ name })), { name: 'ops', email: 'ops@example.com' }];
    const before = compilePolicy(parsePolicy(text('*')), parseTailnet({ users, nodes }));
    snapshot(before);
    const { bob1: _gone, ...rest } = nodes;
    const { carol0: _also, ...fewer } = rest;
    const fresh = [
      compilePolicy(parsePolicy(text('22')), parseTailnet({ users, nodes })),
      compilePolicy(parsePolicy(text('443')), parseTailnet({ users, nodes: rest })),
      compilePolicy(parsePolicy(text('22')), parseTailnet({ users, nodes: fewer })),
    ].map(snapshot);
    const unions = vi.spyOn(IPSet, 'unionAll');
    try {
      const taken = before.withPolicy(parsePolicy(text('22')));
      expect(snapshot(taken)).toEqual(fresh[0]);
      expect(unions).not.toHaveBeenCalled();
      // A node gone: its person's sources and the members' are worked out again, then taken over.
      taken.removeNode('bob1');
      snapshot(taken);
      unions.mockClear();
      const again = taken.withPolicy(parsePolicy(text('443')));
      expect(snapshot(again)).toEqual(fresh[1]);
      expect(unions).not.toHaveBeenCalled();
      // Gone between two engines: worked out in the next, as it was never asked in this one.
      again.removeNode('carol0');
      const third = again.withPolicy(parsePolicy(text('22')));
      expect(snapshot(third)).toEqual(fresh[2]);
      // carol's own devices and the members (the server's port 22); `*` names no node's addresses.
      expect(unions).toHaveBeenCalledTimes(2);
    } finally {
      unions.mockRestore();
    }
  });

  it('gives the nodes of one class one pair of rule sets, not a pair each (every replica rebuilds every node)', () => {
    const nodes: TailnetInput['nodes'] = { s1: { tags: ['tag:server'], ipv4: '100.64.1.1' } };
    for (let i = 0; i < 20; i++)
      nodes[`a${i}`] = { user: i % 2 ? 'alice' : 'bob', ipv4: `100.64.0.${i + 1}` };
    const tailnet = parseTailnet({
      users: [{ name: 'alice' }, { name: 'bob' }, { name: 'ops', email: 'ops@example.com' }],
      nodes,
    });
    const taken = compilePolicy(parsePolicy(selfAndServers('*')), tailnet).withPolicy(
      parsePolicy(selfAndServers('22')),
    );
    // biome-ignore lint/suspicious/noExplicitAny: the engine's per-node facts
    const facts = [...(taken as any).nodes.values()] as { src: Set<number>; dst: Set<number> }[];
    const distinct = (pick: (f: (typeof facts)[number]) => unknown) => new Set(facts.map(pick)).size;
    // Two classes (the members, the server): two of each, not one per node.
    expect([distinct((f) => f.src), distinct((f) => f.dst)]).toEqual([2, 2]);
    expect(snapshot(taken)).toEqual(snapshot(compilePolicy(parsePolicy(selfAndServers('22')), tailnet)));
  });

  it("keys a new engine's sources without joining any node's addresses again (every replica asks every filter)", () => {
    /** Joins while a new policy's filters are asked of every node, over `people` people of 3 devices. */
    const joins = (people: number) => {
      const nodes: TailnetInput['nodes'] = { s1: { tags: ['tag:server'], ipv4: '100.64.1.1' } };
      for (let i = 0; i < people * 3; i++)
        nodes[`d${i}`] = { user: `p${Math.floor(i / 3)}`, ipv4: `100.64.0.${i + 1}` };
      const users = [...Array.from({ length: people }, (_, p) => ({ name: `p${p}` })), { name: 'ops' }];
      const tailnet = parseTailnet({ users, nodes });
      const before = compilePolicy(parsePolicy(selfAndServers('*')), tailnet);
      for (const name of Object.keys(nodes)) before.packetFilter(name);
      const policy = parsePolicy(selfAndServers('22'));
      const join = vi.spyOn(Array.prototype, 'join');
      let taken: CompiledPolicy;
      let calls: number;
      try {
        taken = before.withPolicy(policy);
        for (const name of Object.keys(nodes)) taken.packetFilter(name);
        calls = join.mock.calls.length;
      } finally {
        join.mockRestore();
      }
      expect(snapshot(taken)).toEqual(snapshot(compilePolicy(policy, tailnet)));
      return calls;
    };
    // As many for 20 people as for 2: per rule, none per node.
    expect(joins(20)).toBe(joins(2));
  });

  it('taken over from the engine in force is the engine compiled afresh (sample cases, each to the next)', () => {
    const cases = sampleCases();
    for (const [i, c] of cases.entries()) {
      const next = cases[(i + 1) % cases.length] as (typeof cases)[number];
      const before = compilePolicy(parsePolicy(c.policy), c.tailnet);
      const fresh = compilePolicy(parsePolicy(next.policy), c.tailnet);
      // Every filter asked first, as control does: their sources' texts are taken over.
      snapshot(before);
      const taken = before.withPolicy(parsePolicy(next.policy));
      expect(snapshot(taken), `${c.id} → ${next.id}`).toEqual(snapshot(fresh));
      // It goes on from there as a fresh one would: a node's change moves the same peers.
      const [name, node] = Object.entries(c.tailnet.nodes)[0] as [string, Tailnet['nodes'][string]];
      const moved = { ...node, tags: [...node.tags, 'tag:moved'] };
      expect(taken.upsertNode(name, moved).peers).toEqual(fresh.upsertNode(name, moved).peers);
      expect(snapshot(taken)).toEqual(snapshot(fresh));
    }
  });
});
