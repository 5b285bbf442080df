import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ControlServer, type Host, Lab, scratchDir, stopTailnet, WeftNode, waitFor } from '../lab/index.js';

// The tunnel MTU follows the paths, on real control, engines, helpers and wireguard-go:
//   a (198.18.60.2) and b (.3) share a 1500-byte segment: their tunnel gets 1500 - 60 = 1440;
//   c (198.18.61.2) sits behind a router whose link to it carries only 1400 bytes: once c is up,
//   large packets between a and c still arrive (no black hole) and the MTU fits that link.
//
//   ctl .60.5, a .60.2, b .60.3, router .60.1 ─ 198.18.60.0/24 (1500)
//   router .61.1 ─ 198.18.61.0/24 (1400) ─ c .61.2

let lab: Lab;
let dir = '';
let control: ControlServer;
const nodes: Record<'a' | 'b' | 'c', WeftNode> = {} as never;
const ip: Record<'a' | 'b' | 'c', string> = { a: '', b: '', c: '' };

async function mtuOf(node: WeftNode): Promise<number> {
  return Number((await node.host.must(['cat', `/sys/class/net/${node.iface}/mtu`])).trim());
}

/** Don't-fragment pings of exactly `size` bytes through the tunnel; true when one came back. */
async function dfPing(from: Host, to: string, size: number): Promise<boolean> {
  const r = await from.exec(
    ['ping', '-n', '-q', '-M', 'do', '-s', String(size - 28), '-c', '3', '-W', '1', '-w', '4', to],
    {
      timeoutMs: 8000,
    },
  );
  return r.code === 0;
}

/** Pings of `size` bytes the kernel may fragment inside the tunnel; true when one came back. */
async function bigPing(from: Host, to: string, size: number): Promise<boolean> {
  const r = await from.exec(
    ['ping', '-n', '-q', '-s', String(size - 28), '-c', '3', '-W', '1', '-w', '4', to],
    {
      timeoutMs: 8000,
    },
  );
  return r.code === 0;
}

beforeAll(async () => {
  lab = await Lab.create();
  dir = scratchDir(`mtu-${lab.id}`);
  const wide = await lab.addSegment();
  const narrow = await lab.addSegment();
  const router = await lab.addHost('r', { segment: wide, address: '198.18.60.1/24' });
  await lab.attach(router.ns, narrow, 'eth1', '198.18.61.1/24');
  await router.must(['sysctl', '-qw', 'net.ipv4.ip_forward=1']);
  await router.must(['ip', 'link', 'set', 'eth1', 'mtu', '1400']);
  const ctl = await lab.addHost('ctl', { segment: wide, address: '198.18.60.5/24', gateway: '198.18.60.1' });
  const hosts = {
    a: await lab.addHost('a', { segment: wide, address: '198.18.60.2/24', gateway: '198.18.60.1' }),
    b: await lab.addHost('b', { segment: wide, address: '198.18.60.3/24', gateway: '198.18.60.1' }),
    c: await lab.addHost('c', { segment: narrow, address: '198.18.61.2/24', gateway: '198.18.61.1' }),
  };
  await hosts.c.must(['ip', 'link', 'set', 'eth0', 'mtu', '1400']);
  control = new ControlServer(ctl, dir);
  await control.start();
  await control.cli(['users', 'create', 'mtu']);
  for (const [name, host] of Object.entries(hosts) as [keyof typeof hosts, Host][]) {
    nodes[name] = new WeftNode(host, scratchDir(`mtu-${lab.id}-${name}`), lab.name(`t${name}`));
    await nodes[name].start();
  }
}, 120_000);

afterAll(async () => {
  await stopTailnet({ nodes: Object.values(nodes), control, lab, dir });
});

describe('the tunnel MTU', () => {
  it('two nodes on a 1500-byte segment get 1440, and a full-size packet crosses unfragmented', async () => {
    const key = await control.cli(['preauthkey', 'create', '--user', 'mtu', '--reusable']);
    await nodes.a.up(control.url, key, 'a');
    await nodes.b.up(control.url, key, 'b');
    ip.a = await nodes.a.ip4();
    ip.b = await nodes.b.ip4();
    await waitFor('a to reach b', () => nodes.a.host.ping(ip.b, { deadlineS: 1 }), 30_000);
    for (const n of [nodes.a, nodes.b]) {
      await waitFor(`1440 on ${n.iface}`, async () => (await n.status()).mtu?.mtu === 1440, 20_000);
      expect(await mtuOf(n)).toBe(1440);
      expect((await n.status()).mtu?.reason).toMatch(/1500 bytes \(eth0\) minus 60 for WireGuard over IPv4/);
    }
    expect(await dfPing(nodes.a.host, ip.b, 1440)).toBe(true);
    // `weft status` says it in words too.
    const text = await nodes.a.weft(['status']);
    expect(text.stdout).toMatch(/^MTU 1440: direct paths/m);
  });

  it('a node behind a 1400-byte link: large packets still cross both ways, and the MTU fits the link', async () => {
    const key = await control.cli(['preauthkey', 'create', '--user', 'mtu']);
    await nodes.c.up(control.url, key, 'c');
    ip.c = await nodes.c.ip4();
    await waitFor('c to reach a', () => nodes.c.host.ping(ip.a, { deadlineS: 1 }), 30_000);
    // c sees its own 1400-byte link: 1340. a learns the narrow link from its probe (the router
    // answers "fragmentation needed") and comes down to what crosses it.
    for (const n of [nodes.c, nodes.a]) {
      await waitFor(`${n.iface} to fit the narrow link`, async () => (await mtuOf(n)) <= 1340, 30_000);
    }
    // Settled: every size up to the interface MTU crosses unfragmented, larger ones in fragments.
    for (const [from, to] of [
      [nodes.a, ip.c],
      [nodes.c, ip.a],
    ] as const) {
      const mtu = await mtuOf(from);
      expect(await dfPing(from.host, to, mtu)).toBe(true);
      expect(await bigPing(from.host, to, 4000)).toBe(true);
    }
    // a and b between themselves keep working whatever the MTU became.
    expect(await dfPing(nodes.a.host, ip.b, await mtuOf(nodes.a))).toBe(true);
    console.log(
      `MTU a ${await mtuOf(nodes.a)} (${(await nodes.a.status()).mtu?.reason}); c ${await mtuOf(nodes.c)} (${(await nodes.c.status()).mtu?.reason})`,
    );
  });
});
