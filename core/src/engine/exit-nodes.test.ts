import { type DesiredState, type NetMap, type Prefs, type Status, withDefaults } from '@weft/protocol';
import { describe, expect, it } from 'vitest';
import { nodeView } from '../testing/standin-control.js';
import {
  advertisedRoutes,
  applyRoutes,
  exitNodeList,
  exitNodeProblem,
  localPrefixes,
  recommend,
  routeStatus,
  ServerAddresses,
} from './exit-nodes.js';

// The routing parts of the desired state and of the status, from the netmap and the user's choices.

const K = (n: number) => `${String(n).padStart(42, 'A')}=`;
const EXIT = ['0.0.0.0/0', '::/0'];
const own = (n: number) => [`100.64.0.${n}/32`, `fd7a:115c:a1e0::${n}/128`];

const router = nodeView(2, K(2), { name: 'router', allowedIPs: [...own(2), '198.51.100.0/24'] });
const exit = nodeView(3, K(3), { name: 'exit', allowedIPs: [...own(3), ...EXIT], exitNodeOption: true });
const plain = nodeView(4, K(4), { name: 'plain' });

function map(self = nodeView(1, K(1), { name: 'me' }), peers = [router, exit, plain]): NetMap {
  return { self, peers, packetFilter: [], tailnetRanges: ['100.64.0.0/10', 'fd7a:115c:a1e0::/48'] };
}

/** The state desiredState gives: every peer with its own addresses only. */
function base(m: NetMap): DesiredState {
  return {
    interface: { name: 'weft0', privateKey: K(9), listenPort: 41641, addresses: m.self.addresses, mtu: 1280 },
    peers: m.peers.map((p) => ({ publicKey: p.nodeKey, allowedIPs: p.allowedIPs })),
    routes: m.tailnetRanges,
  };
}

const prefs = (over: Partial<Prefs> = {}): Prefs =>
  withDefaults({ controlUrl: null, hostname: null, wantRunning: true, listenPort: 41641, ...over });

const inputs = (p: Prefs) => ({
  prefs: p,
  localPrefixes: ['198.18.20.0/24'],
  bypass: ['198.18.30.5/32'],
});

const allowed = (s: DesiredState, key: string) => s.peers.find((p) => p.publicKey === key)?.allowedIPs;

describe('applyRoutes', () => {
  it('routes approved subnets into the tunnel, never the exit routes of an unchosen exit node', () => {
    const m = map();
    const s = applyRoutes(base(m), m, inputs(prefs()));
    expect(s.routes).toEqual([...m.tailnetRanges, '198.51.100.0/24']);
    expect(allowed(s, K(2))).toEqual([...own(2), '198.51.100.0/24']);
    expect(allowed(s, K(3))).toEqual(own(3));
    expect(s.exitNode).toBeUndefined();
    expect(s.router).toBeUndefined();
  });

  it('with accept-routes off, subnets stay out', () => {
    const m = map();
    const s = applyRoutes(base(m), m, inputs(prefs({ acceptRoutes: false })));
    expect(s.routes).toEqual(m.tailnetRanges);
    expect(allowed(s, K(2))).toEqual(own(2));
  });

  it('a subnet this machine is on is not routed into the tunnel (the helper would refuse it)', () => {
    const m = map(undefined, [nodeView(2, K(2), { allowedIPs: [...own(2), '198.18.20.0/24'] })]);
    const s = applyRoutes(base(m), m, inputs(prefs()));
    expect(s.routes).toEqual(m.tailnetRanges);
    expect(allowed(s, K(2))).toEqual(own(2));
  });

  it('subnets that would make the routes an exit route (a /1 pair) are left out, the rest routed', () => {
    const halves = nodeView(2, K(2), {
      allowedIPs: [...own(2), '0.0.0.0/1', '128.0.0.0/1', '198.51.100.0/24'],
    });
    const m = map(undefined, [halves]);
    const s = applyRoutes(base(m), m, inputs(prefs()));
    // 0.0.0.0/1 alone is already more than 1/64 of IPv4; 128.0.0.0/1 too.
    expect(s.routes).toEqual([...m.tailnetRanges, '198.51.100.0/24']);
    expect(allowed(s, K(2))).toEqual([...own(2), '198.51.100.0/24']);
  });

  it('the chosen exit node carries 0.0.0.0/0 and ::/0 (not in routes); bypass and LAN as asked', () => {
    const m = map();
    const off = applyRoutes(base(m), m, inputs(prefs({ exitNodeId: exit.id })));
    expect(allowed(off, K(3))).toEqual([...own(3), ...EXIT]);
    expect(off.routes).not.toContain('0.0.0.0/0');
    expect(off.exitNode).toEqual({ allowedLan: [], bypass: ['198.18.30.5/32'] });
    const on = applyRoutes(base(m), m, inputs(prefs({ exitNodeId: exit.id, exitNodeAllowLan: true })));
    expect(on.exitNode).toEqual({ allowedLan: ['198.18.20.0/24'], bypass: ['198.18.30.5/32'] });
  });

  it('a chosen exit node no longer offered still sets exitNode: traffic is blocked, not leaked', () => {
    const gone = map(undefined, [router, plain]);
    const s = applyRoutes(base(gone), gone, inputs(prefs({ exitNodeId: exit.id })));
    expect(s.exitNode).toEqual({ allowedLan: [], bypass: ['198.18.30.5/32'] });
    expect(s.peers.some((p) => p.allowedIPs.includes('0.0.0.0/0'))).toBe(false);
    expect(exitNodeProblem(gone, prefs({ exitNodeId: exit.id }))).toMatch(/not available.*blocked/);
    // A peer that is not offered as an exit node never gets the default route.
    const m = map(undefined, [nodeView(3, K(3), { allowedIPs: [...own(3), ...EXIT] })]);
    const t = applyRoutes(base(m), m, inputs(prefs({ exitNodeId: 'n3' })));
    expect(allowed(t, K(3))).toEqual(own(3));
  });

  it('a router serves its approved routes that it still advertises, masqueraded', () => {
    const self = nodeView(1, K(1), { allowedIPs: [...own(1), '198.51.100.0/24', ...EXIT] });
    const m = map(self, [plain]);
    const both = prefs({ advertiseRoutes: ['198.51.100.0/24'], advertiseExitNode: true });
    expect(applyRoutes(base(m), m, inputs(both)).router).toEqual({
      routes: ['198.51.100.0/24', ...EXIT],
      masquerade: true,
    });
    // Stopped advertising: the role goes at once, before control says so.
    const subnetOnly = prefs({ advertiseRoutes: ['198.51.100.0/24'] });
    expect(applyRoutes(base(m), m, inputs(subnetOnly)).router?.routes).toEqual(['198.51.100.0/24']);
    expect(applyRoutes(base(m), m, inputs(prefs())).router).toBeUndefined();
    expect(advertisedRoutes(both)).toEqual(['198.51.100.0/24', ...EXIT]);
  });
});

describe('status and suggestions', () => {
  const status = (m: NetMap): Status => ({
    backendState: 'Running',
    controlUrl: null,
    authUrl: null,
    self: { id: m.self.id, name: m.self.name, addresses: [] },
    peers: m.peers.map((p) => ({
      id: p.id,
      name: p.name,
      user: null,
      tags: [],
      os: 'linux',
      addresses: p.addresses.map((a) => a.replace(/\/\d+$/, '')),
      online: p.online,
      lastSeen: null,
      endpoint: null,
      lastHandshake: null,
      rxBytes: 0,
      txBytes: 0,
    })),
    health: [],
  });

  it('marks exit-node options, the one in use, latencies, routes and the advertised prefs', () => {
    const m = map();
    const p = prefs({ exitNodeId: exit.id, advertiseRoutes: ['203.0.113.0/24'] });
    const s = routeStatus(status(m), m, p, new Map([[exit.id, 4.2]]));
    expect(s.exitNode).toEqual({ id: exit.id, allowLan: false });
    expect(s.recommendedExitNodeId).toBe(exit.id);
    expect(s.prefs).toEqual({
      exitNodeAllowLan: false,
      advertiseExitNode: false,
      advertiseRoutes: ['203.0.113.0/24'],
      useTailnetDns: true,
    });
    const by = (name: string) => s.peers.find((x) => x.name === name);
    expect(by('exit')).toMatchObject({ exitNodeOption: true, exitNode: true, latencyMs: 4.2 });
    expect(by('router')).toMatchObject({
      exitNodeOption: false,
      exitNode: false,
      routes: ['198.51.100.0/24'],
    });
    expect(by('plain')).toMatchObject({ exitNodeOption: false });
    expect(routeStatus(status(m), m, prefs(), new Map()).exitNode).toBeNull();
  });

  it('suggests the online exit node with the lowest latency', () => {
    const opts = [
      { id: 'a', name: 'a', online: true },
      { id: 'b', name: 'b', online: true },
      { id: 'c', name: 'c', online: false },
      { id: 'd', name: 'd', online: true },
    ];
    const lat = new Map<string, number | null>([
      ['a', 12],
      ['b', 3.5],
      ['c', 1],
      ['d', null],
    ]);
    expect(recommend(opts, lat)).toBe('b');
    expect(recommend(opts, new Map())).toBeNull();
    const m = map(undefined, [
      exit,
      nodeView(5, K(5), { name: 'exit2', allowedIPs: [...own(5), ...EXIT], exitNodeOption: true }),
    ]);
    const list = exitNodeList(
      m,
      prefs({ exitNodeId: 'n5' }),
      new Map([
        ['n3', 9],
        ['n5', 20],
      ]),
    );
    expect(list.exitNodes.map((n) => [n.name, n.selected, n.latencyMs])).toEqual([
      ['exit', false, 9],
      ['exit2', true, 20],
    ]);
    expect(list.recommended).toBe('n3');
  });
});

describe('machine facts', () => {
  it('local prefixes: from the interfaces, without the tunnel, loopback, link-local or the tailnet', () => {
    const got = localPrefixes(
      () => [
        { iface: 'eth0', address: '198.18.20.2', cidr: '198.18.20.2/24' },
        { iface: 'eth0', address: 'fd00:20::2', cidr: 'fd00:20::2/64' },
        { iface: 'eth0', address: 'fe80::1', cidr: 'fe80::1/64' },
        { iface: 'weft0', address: '100.64.0.1', cidr: '100.64.0.1/32' },
        { iface: 'cgnat', address: '100.70.0.1', cidr: '100.70.0.1/16' },
        { iface: 'lo', address: '127.0.0.1', cidr: '127.0.0.1/8' },
      ],
      'weft0',
      ['100.64.0.0/10'],
    );
    expect(got).toEqual(['198.18.20.0/24', 'fd00:20::/64']);
  });

  it('server addresses: IP literals at once, host names resolved, as /32 and /128', async () => {
    const asked: string[] = [];
    const servers = new ServerAddresses(async (h) => {
      asked.push(h);
      return h === 'control.example' ? ['198.18.30.5', 'fd00:30::5'] : [];
    });
    let changes = 0;
    servers.on('change', () => changes++);
    servers.set(['ws://198.18.30.7:8443/relay', 'http://[fd00:30::7]:80', 'https://control.example']);
    await new Promise((r) => setImmediate(r));
    expect(servers.prefixes()).toEqual([
      '198.18.30.5/32',
      '198.18.30.7/32',
      'fd00:30::5/128',
      'fd00:30::7/128',
    ]);
    expect(asked).toEqual(['control.example']);
    expect(changes).toBe(3);
    servers.close();
  });
});
