import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  addRouter,
  bothPaths,
  type ControlServer,
  type Host,
  Lab,
  type NamedNodes,
  type RelayServer,
  scratchDir,
  startRelayedTailnet,
  stopTailnet,
  WeftNode,
  waitFor,
} from '../lab/index.js';

// The tunnel MTU when a peer is relayed, on real control, relays, engines, helpers and wireguard-go:
// n1 and n2 share a 1500-byte segment and get 1440 while they are each other's only peer; once u,
// whose network blocks UDP, comes online through the relay, every interface that has u as a peer
// keeps 1280 (the size that fits any path), and a 1280-byte don't-fragment ping crosses the relay.
//
//   control 198.18.0.1, relays .2 and .3, n1 .10, n2 .11, u's router .105 ─ 198.18.0.0/24 (1500)
//   u 198.18.15.2 behind the router (UDP blocked: TCP to the relay only)

let lab: Lab;
let dir = '';
let control: ControlServer;
let relays: RelayServer[] = [];
let key = '';
const nodes: Record<string, WeftNode> = {};
const ips: Record<string, string> = {};
const t: NamedNodes = { nodes, ips };

function node(host: Host, name: string): WeftNode {
  const n = new WeftNode(host, scratchDir(`mtu-relayed-${lab.id}-${name}`), lab.name(`t${name}`));
  nodes[name] = n;
  return n;
}

async function mtuOf(n: WeftNode): Promise<number> {
  return Number((await n.host.must(['cat', `/sys/class/net/${n.iface}/mtu`])).trim());
}

/** Don't-fragment pings of exactly `size` bytes through the tunnel; true when one came back. */
async function dfPing(from: WeftNode, to: string, size: number): Promise<boolean> {
  const r = await from.host.exec(
    ['ping', '-n', '-q', '-M', 'do', '-s', String(size - 28), '-c', '3', '-W', '1', '-w', '4', to],
    { timeoutMs: 8000 },
  );
  return r.code === 0;
}

beforeAll(async () => {
  lab = await Lab.create();
  dir = scratchDir(`mtu-relayed-${lab.id}`);
  const net = await lab.addSegment();
  let rs: RelayServer[];
  ({ control, relays: rs, key } = await startRelayedTailnet(lab, net, dir));
  relays = rs;
  node(await lab.addHost('n1', { segment: net, address: '198.18.0.10/24' }), 'n1');
  node(await lab.addHost('n2', { segment: net, address: '198.18.0.11/24' }), 'n2');
  const router = await addRouter(lab, 'ru', {
    kind: 'udp-block',
    wan: net,
    wanAddress: '198.18.0.105/24',
    lanAddress: '198.18.15.1/24',
  });
  node(await router.addHost('u', '198.18.15.2/24'), 'u');
  await Promise.all(Object.values(nodes).map((n) => n.start()));
}, 240_000);

afterAll(async () => {
  await Promise.all(relays.map((r) => r.stop()));
  await stopTailnet({ nodes: Object.values(nodes), control, lab, dir });
});

describe('the tunnel MTU with a relayed peer', () => {
  it('two direct peers on a 1500-byte segment get 1440', async () => {
    for (const name of ['n1', 'n2']) {
      await (nodes[name] as WeftNode).up(control.url, key, name);
      ips[name] = await (nodes[name] as WeftNode).ip4();
    }
    await bothPaths(t, 'n1', 'n2', 'direct', 30_000);
    for (const name of ['n1', 'n2']) {
      const n = nodes[name] as WeftNode;
      await waitFor(`1440 on ${n.iface}`, async () => (await n.status()).mtu?.mtu === 1440, 20_000);
      expect(await mtuOf(n)).toBe(1440);
    }
    expect(await dfPing(nodes.n1 as WeftNode, ips.n2 as string, 1440)).toBe(true);
  });

  it('a relayed peer brings its peers to 1280, and a 1280-byte DF ping crosses the relay', async () => {
    const u = nodes.u as WeftNode;
    await u.up(control.url, key, 'u');
    ips.u = await u.ip4();
    await bothPaths(t, 'n1', 'u', 'relay', 60_000);
    for (const name of ['u', 'n1', 'n2']) {
      const n = nodes[name] as WeftNode;
      await waitFor(`1280 on ${n.iface}`, async () => (await mtuOf(n)) === 1280, 20_000);
      const reason = (await n.status()).mtu?.reason ?? '';
      expect(reason).toMatch(/ is relayed: the size that fits any path$/);
      if (name !== 'u') expect(reason).toMatch(/^u is relayed/);
    }
    for (const [from, to] of [
      ['n1', 'u'],
      ['u', 'n1'],
    ] as const) {
      expect((await nodes[from]?.status())?.peers.find((p) => p.name === to)?.path).toBe('relay');
      // Pings may be lost while a direct candidate is tried (a couple of seconds now and then); a
      // path that cannot carry 1280 bytes would never answer.
      await waitFor(
        `a 1280-byte DF ping ${from} → ${to} over the relay`,
        () => dfPing(nodes[from] as WeftNode, ips[to] as string, 1280),
        30_000,
      );
    }
    // The direct pair shares the one interface MTU: still full-size packets at 1280 between them.
    expect(await dfPing(nodes.n1 as WeftNode, ips.n2 as string, 1280)).toBe(true);
  });
});
