import { applyStreamMessage, type NetMap, type NodeView, type StreamServerMessage } from '@weft/protocol';
import { describe, expect, it, vi } from 'vitest';
import { parsePolicy } from '../policy/index.js';
import type { NodeRecord } from '../tailnet/records.js';
import { withApproved, withoutApproved } from '../tailnet/routes.js';
import { connectedHub, testNode } from '../testing/nodes.js';
import type { StreamSession } from './hub.js';

// Subnet routers and exit nodes in the netmap: advertised routes are used only once approved (by an
// admin or autoApprovers); a peer's allowedIPs carry the approved routes the viewer may use, and a
// peer with an approved exit node is marked exitNodeOption.

const EXIT = ['0.0.0.0/0', '::/0'];

const alice = { name: 'alice', email: 'alice@example.com' };

function node(i: number, extra: Partial<NodeRecord> = {}): NodeRecord {
  return testNode(i, alice, { ipv6: `fd00:1:2::${i}`, createdAt: `2026-01-01T00:00:0${i}.000Z`, ...extra });
}

class Session implements StreamSession {
  netmap: NetMap | null = null;
  constructor(readonly nodeId: string) {}
  send(m: StreamServerMessage) {
    this.netmap = applyStreamMessage(this.netmap, m);
  }
  close() {}
  peer(id: string): NodeView | undefined {
    return this.netmap?.peers.find((p) => p.id === id);
  }
  routesOf(id: string): string[] {
    return (this.peer(id)?.allowedIPs ?? []).filter(
      (r) => !r.startsWith('100.64.0.') && !r.startsWith('fd00:1:2:'),
    );
  }
}

function setup(nodes: NodeRecord[], policy: string | null = null) {
  const { hub, visibility, sessions } = connectedHub(nodes, policy, (id) => new Session(id));
  const setPolicy = (text: string | null) => {
    visibility.setPolicy(text === null ? null : parsePolicy(text));
    hub.policyChanged('all');
  };
  const s = (id: string) => sessions.get(id) as Session;
  return { hub, s, setPolicy };
}

describe('routes in the netmap, without a policy', () => {
  it('advertised routes are not used until an admin approves them; then peers get them', () => {
    const client = node(1);
    let router = node(2, { advertisedRoutes: ['198.51.100.0/24'] });
    let exit = node(3, { advertisedRoutes: EXIT });
    const { hub, s } = setup([client, router, exit]);
    expect(s('n1').routesOf('n2')).toEqual([]);
    expect(s('n1').routesOf('n3')).toEqual([]);
    expect(s('n1').peer('n3')?.exitNodeOption).toBeUndefined();
    expect(s('n2').netmap?.self.allowedIPs).toEqual(['100.64.0.2/32', 'fd00:1:2::2/128']);

    router = { ...router, approvedRoutes: withApproved([], ['198.51.100.0/24']) };
    exit = { ...exit, approvedRoutes: withApproved([], ['0.0.0.0/0']) };
    hub.update([client, router, exit]);
    expect(s('n1').routesOf('n2')).toEqual(['198.51.100.0/24']);
    expect(s('n1').peer('n2')?.exitNodeOption).toBeUndefined();
    // Approving one exit route approves the pair.
    expect(s('n1').routesOf('n3')).toEqual(EXIT);
    expect(s('n1').peer('n3')?.exitNodeOption).toBe(true);
    expect(s('n2').peer('n3')?.exitNodeOption).toBe(true);
    // The router's own view carries its approved routes (what its helper forwards), unmarked.
    expect(s('n2').netmap?.self.allowedIPs).toContain('198.51.100.0/24');
    expect(s('n3').netmap?.self.allowedIPs).toEqual(expect.arrayContaining(EXIT));
    expect(s('n3').netmap?.self.exitNodeOption).toBeUndefined();

    exit = { ...exit, approvedRoutes: withoutApproved(exit.approvedRoutes, ['::/0']) };
    hub.update([client, router, exit]);
    expect(s('n1').routesOf('n3')).toEqual([]);
    expect(s('n1').peer('n3')?.exitNodeOption).toBeUndefined();
  });

  it('a route approved but no longer advertised is not used', () => {
    const client = node(1);
    let router = node(2, { advertisedRoutes: ['198.51.100.0/24'], approvedRoutes: ['198.51.100.0/24'] });
    const { hub, s } = setup([client, router]);
    expect(s('n1').routesOf('n2')).toEqual(['198.51.100.0/24']);
    router = { ...router, advertisedRoutes: [] };
    hub.update([client, router]);
    expect(s('n1').routesOf('n2')).toEqual([]);
    expect(s('n2').netmap?.self.allowedIPs).not.toContain('198.51.100.0/24');
  });

  it('two routers of one subnet: peers route it to the first; to the other once the first goes', () => {
    const client = node(1);
    const first = node(2, { advertisedRoutes: ['198.51.100.0/24'], approvedRoutes: ['198.51.100.0/24'] });
    const second = node(3, { advertisedRoutes: ['198.51.100.0/24'], approvedRoutes: ['198.51.100.0/24'] });
    const { hub, s } = setup([client, first, second]);
    expect(s('n1').routesOf('n2')).toEqual(['198.51.100.0/24']);
    expect(s('n1').routesOf('n3')).toEqual([]);
    hub.update([client, { ...first, approvedRoutes: [] }, second]);
    expect(s('n1').routesOf('n2')).toEqual([]);
    expect(s('n1').routesOf('n3')).toEqual(['198.51.100.0/24']);
  });
});

describe('routes in the netmap, with a policy', () => {
  const base = `"acls": [{ "action": "accept", "src": ["*"], "dst": ["*:*"] }]`;

  it('autoApprovers approve an exit node and subnets without an admin', () => {
    const client = node(1);
    const router = node(2, { advertisedRoutes: ['198.51.100.0/24', '203.0.113.0/24'] });
    const exit = node(3, { advertisedRoutes: EXIT });
    const { s, setPolicy } = setup([client, router, exit], `{ ${base} }`);
    expect(s('n1').routesOf('n2')).toEqual([]);
    expect(s('n1').peer('n3')?.exitNodeOption).toBeUndefined();

    setPolicy(`{ ${base}, "autoApprovers": {
      "routes": { "198.51.100.0/24": ["alice@example.com"] },
      "exitNode": ["alice@example.com"] } }`);
    expect(s('n1').routesOf('n2')).toEqual(['198.51.100.0/24']);
    expect(s('n1').routesOf('n3')).toEqual(EXIT);
    expect(s('n1').peer('n3')?.exitNodeOption).toBe(true);
    expect(s('n3').netmap?.self.allowedIPs).toEqual(expect.arrayContaining(EXIT));

    setPolicy(`{ ${base} }`);
    expect(s('n1').routesOf('n2')).toEqual([]);
    expect(s('n1').peer('n3')?.exitNodeOption).toBeUndefined();
    expect(s('n3').netmap?.self.allowedIPs).not.toContain('0.0.0.0/0');
  });

  it('a policy change decides approved routes again for the routers alone, not for every node', () => {
    const nodes = [node(1), node(2, { advertisedRoutes: ['198.51.100.0/24'] }), node(3), node(4)];
    const { hub, visibility, sessions } = connectedHub(nodes, `{ ${base} }`, (id) => new Session(id));
    const asked = vi.spyOn(visibility, 'approvedRoutes');
    hub.policyChanged(
      visibility.setPolicy(
        parsePolicy(
          `{ ${base}, "autoApprovers": { "routes": { "198.51.100.0/24": ["alice@example.com"] } } }`,
        ),
      ),
    );
    expect(sessions.get('n2')?.netmap?.self.allowedIPs).toContain('198.51.100.0/24');
    expect(sessions.get('n1')?.routesOf('n2')).toEqual(['198.51.100.0/24']);
    expect(new Set(asked.mock.calls.map(([n]) => n.id))).toEqual(new Set(['n2']));
  });

  it('when the policy that auto-approved the primary router goes, the admin-approved one takes the subnet', () => {
    const subnet = '198.51.100.0/24';
    const older = node(2, { advertisedRoutes: [subnet] });
    const approved = node(3, { advertisedRoutes: [subnet], approvedRoutes: withApproved([], [subnet]) });
    const { hub, s, setPolicy } = setup(
      [node(1), older, approved],
      `{ ${base}, "autoApprovers": { "routes": { "${subnet}": ["alice@example.com"] } } }`,
    );
    expect(s('n1').routesOf('n2')).toEqual([subnet]);
    expect(s('n1').routesOf('n3')).toEqual([]);
    // Any write while the policy is in force elects the primaries under it: the older router.
    hub.update([node(1), older, approved]);
    setPolicy(null);
    expect(s('n1').routesOf('n2')).toEqual([]);
    expect(s('n1').routesOf('n3')).toEqual([subnet]);
  });

  it('a node the policy does not let use the internet is not offered the exit node', () => {
    const client = node(1, { tags: ['tag:kiosk'], userName: null, userId: null });
    const other = node(4);
    const exit = node(3, { advertisedRoutes: EXIT, approvedRoutes: EXIT });
    const { s } = setup(
      [client, other, exit],
      `{ "tagOwners": { "tag:kiosk": ["alice@example.com"] },
         "acls": [
           { "action": "accept", "src": ["tag:kiosk"], "dst": ["alice@example.com:*"] },
           { "action": "accept", "src": ["alice@example.com"], "dst": ["autogroup:internet:*", "alice@example.com:*"] },
         ] }`,
    );
    expect(s('n1').peer('n3')).toBeDefined();
    expect(s('n1').peer('n3')?.exitNodeOption).toBeUndefined();
    expect(s('n4').peer('n3')?.exitNodeOption).toBe(true);
  });
});

describe('exit nodes under autogroup:internet', () => {
  it('the exit node is sent a filter letting its users through to public addresses only', () => {
    const client = node(1);
    const exit = node(3, { advertisedRoutes: EXIT, approvedRoutes: EXIT });
    const { s } = setup(
      [client, exit],
      `{ "acls": [{ "action": "accept", "src": ["alice@example.com"], "dst": ["autogroup:internet:*"] }] }`,
    );
    expect(s('n1').peer('n3')?.exitNodeOption).toBe(true);
    expect(s('n1').netmap?.packetFilter).toEqual([]);
    const [rule] = s('n3').netmap?.packetFilter ?? [];
    const dsts = rule && 'DstPorts' in rule ? (rule.DstPorts ?? []).map((d) => d.IP) : [];
    expect(dsts).toContain('2000::/3');
    expect(dsts).toContain('192.169.0.0-255.255.255.255');
    // Not the exit node's private neighbours, nor the tailnet.
    expect(dsts.some((d) => d.startsWith('10.') || d.startsWith('192.168.') || d.startsWith('100.64.'))).toBe(
      false,
    );
  });
});
