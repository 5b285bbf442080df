import type { NetcheckReport } from '@weft/protocol';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  addRouter,
  bothPaths,
  type ControlServer,
  Lab,
  type NamedNodes,
  type RelayServer,
  type Router,
  removeScratch,
  scratchDir,
  startRelayedTailnet,
  WeftNode,
  waitFor,
} from '../lab/index.js';

// Port mapping end to end: nodes behind endpoint-dependent ("symmetric") NAT routers, which keep
// two such nodes on the relay (nat-matrix.test.ts), unless the router maps a port. Routers a-c
// run the lab's port-mapping daemon (e2e/lab/port-mapping-daemon.ts), which installs a real
// nftables DNAT/SNAT pair for every mapping it grants; e and f run Debian's miniupnpd with UPnP
// IGD only, g with PCP, NAT-PMP and UPnP IGD (it installs its own DNAT rule, no SNAT).
//
//   a  EDM NAT, PCP          198.18.21.2  behind 198.18.0.121
//   b  EDM NAT, NAT-PMP only 198.18.22.2  behind 198.18.0.122
//   c  EDM NAT, a daemon answering garbage (PCP, NAT-PMP, SSDP, XML, SOAP)  198.18.23.2 behind 198.18.0.123
//   d  EDM NAT, no daemon    198.18.24.2  behind 198.18.0.124
//   e  EDM NAT, miniupnpd UPnP only  198.18.25.2  behind 198.18.0.125
//   f  EDM NAT, miniupnpd UPnP only  198.18.26.2  behind 198.18.0.126
//   g  EDM NAT, miniupnpd PCP + NAT-PMP + UPnP  198.18.27.2  behind 198.18.0.127

let lab: Lab;
let dir: string;
let control: ControlServer;
let relay1: RelayServer;
let relay2: RelayServer;
const nodes: Record<string, WeftNode> = {};
const routers: Record<string, Router> = {};
const ips: Record<string, string> = {};
const t: NamedNodes = { nodes, ips };
let key: string;

async function netcheck(name: string): Promise<NetcheckReport> {
  const r = await nodes[name]!.weft(['netcheck', '--json']);
  expect(r.code, r.stderr).toBe(0);
  return JSON.parse(r.stdout) as NetcheckReport;
}

beforeAll(async () => {
  lab = await Lab.create();
  dir = scratchDir(lab.id);
  const net = await lab.addSegment();
  ({
    control,
    relays: [relay1, relay2],
    key,
  } = await startRelayedTailnet(lab, net, dir));

  const setups = [
    ['a', 21, 'pcp'],
    ['b', 22, 'nat-pmp'],
    ['c', 23, 'garbage'],
    ['d', 24, null],
    ['e', 25, 'miniupnpd'],
    ['f', 26, 'miniupnpd'],
    ['g', 27, 'miniupnpd-all'],
  ] as const;
  for (const [name, n, mode] of setups) {
    const router = await addRouter(lab, `r${name}`, {
      kind: 'edm',
      wan: net,
      wanAddress: `198.18.0.${100 + n}/24`,
      lanAddress: `198.18.${n}.1/24`,
    });
    routers[name] = router;
    // Before weftd starts: its first look at the gateway finds the daemon.
    if (mode === 'miniupnpd' || mode === 'miniupnpd-all')
      await router.startMiniupnpd({
        dir,
        stun: { host: relay1.host.ip, port: relay1.stunPort },
        natPmp: mode === 'miniupnpd-all',
      });
    else if (mode) await router.startPortMapping(mode);
    const host = await router.addHost(name, `198.18.${n}.2/24`);
    nodes[name] = new WeftNode(host, scratchDir(`${lab.id}-${name}`), lab.name(`t${name}`));
  }
  await Promise.all(Object.values(nodes).map((n) => n.start()));
  await Promise.all(Object.entries(nodes).map(([name, n]) => n.up(control.url, key, name)));
  for (const [name, n] of Object.entries(nodes)) ips[name] = await n.ip4();
}, 240_000);

afterAll(async () => {
  await Promise.all(Object.values(nodes).map((n) => n.stop()));
  await Promise.all([control?.stop(), relay1?.stop(), relay2?.stop()]);
  await lab?.cleanup();
  if (process.env.WEFT_KEEP_LAB) {
    console.log(
      `lab logs kept in ${dir} and ${Object.values(nodes)
        .map((n) => n.dir)
        .join(' ')}`,
    );
    return;
  }
  for (const n of Object.values(nodes)) removeScratch(n.dir);
  if (dir) removeScratch(dir);
});

describe('port mapping', () => {
  it('netcheck says which protocol the gateway answered and the mapped endpoint', async () => {
    const a = await waitFor('a mapped', async () => {
      const r = await netcheck('a');
      return r.portMapping.answered !== null && r;
    });
    expect(a.portMapping.answered).toBe('pcp');
    expect(a.portMapping.endpoint).toMatch(/^198\.18\.0\.121:\d+$/);
    const b = await netcheck('b');
    expect(b.portMapping.answered).toBe('nat-pmp');
    expect(b.portMapping.endpoint).toMatch(/^198\.18\.0\.122:\d+$/);
    // The hostile gateway's answers were all ignored; the node runs on.
    const c = await waitFor('c tried', async () => {
      const r = await netcheck('c');
      return r.portMapping.answered !== null && r;
    });
    expect(c.portMapping).toEqual({ answered: 'none', endpoint: null });
    expect(routers.c!.portMappingLog).toContain('request upnp search');
    expect(routers.c!.portMappingLog).toContain('request upnp description');
    expect((await netcheck('d')).portMapping).toEqual({ answered: 'none', endpoint: null });
    const text = await nodes.a!.weft(['netcheck']);
    expect(text.stdout).toMatch(/Port mapping: 198\.18\.0\.121:\d+ \(pcp\)/);
    expect(routers.a!.portMappingLog).toMatch(/mapping 198\.18\.0\.121:\d+ → 198\.18\.21\.2:\d+ for 7200 s/);
  });

  it('EDM + PCP ↔ EDM + NAT-PMP: direct over the mapped ports', async () => {
    const mappedA = (await netcheck('a')).portMapping.endpoint;
    const mappedB = (await netcheck('b')).portMapping.endpoint;
    const [pa, pb] = await bothPaths(t, 'a', 'b', 'direct', 90_000);
    expect(pa.endpoint).toBe(mappedB);
    expect(pb.endpoint).toBe(mappedA);
    expect(pa.relayReason).toBeNull();
  }, 120_000);

  it('EDM + UPnP only (miniupnpd) ↔ the same: mapped, then direct', async () => {
    const [e, f] = await Promise.all(
      ['e', 'f'].map((name) =>
        waitFor(`${name} mapped`, async () => {
          const r = await netcheck(name);
          return r.portMapping.answered !== null && r;
        }),
      ),
    );
    expect(e!.portMapping.answered).toBe('upnp');
    expect(e!.portMapping.endpoint).toMatch(/^198\.18\.0\.125:\d+$/);
    expect(f!.portMapping).toEqual({
      answered: 'upnp',
      endpoint: expect.stringMatching(/^198\.18\.0\.126:\d+$/),
    });
    expect((await nodes.e!.weft(['netcheck'])).stdout).toMatch(/Port mapping: 198\.18\.0\.125:\d+ \(upnp\)/);
    expect(routers.e!.portMappingLog).toMatch(
      /AddPortMapping: ext port \d+ to 198\.18\.25\.2:\d+ protocol UDP for: weft \d+ leaseduration=7200/,
    );
    // miniupnpd forwards the mapped port in, but the node's own packets still leave through the
    // EDM masquerade with a new port per peer; WireGuard follows the peer to that port, which
    // conntrack keeps open while the path carries traffic. The d row shows the same pair without
    // a mapping stays relayed.
    await bothPaths(t, 'e', 'f', 'direct', 90_000);
  }, 180_000);

  it('EDM + miniupnpd with PCP, NAT-PMP and UPnP ↔ EDM + UPnP only: mapped by PCP, then direct', async () => {
    const g = await waitFor('g mapped', async () => {
      const r = await netcheck('g');
      return r.portMapping.answered !== null && r;
    });
    expect(g.portMapping).toEqual({
      answered: 'pcp',
      endpoint: expect.stringMatching(/^198\.18\.0\.127:\d+$/),
    });
    await bothPaths(t, 'g', 'f', 'direct', 90_000);
  }, 180_000);

  it('EDM with a hostile gateway ↔ EDM without port mapping: relayed, and pings work', async () => {
    const [pc] = await bothPaths(t, 'c', 'd', 'relay', 90_000);
    expect(pc.relayRegion).toMatch(/^lab[12]$/);
    expect(pc.relayReason).toContain('peer’s NAT maps per destination');
    await waitFor('d → c ping', () => nodes.d!.host.ping(ips.c!, { count: 1, deadlineS: 1 }), 10_000);
  }, 120_000);

  it('a node going down deletes its UPnP mapping on miniupnpd', async () => {
    const rules = () =>
      routers.e!.host.must(['nft', 'list', 'chain', 'inet', 'miniupnpd', 'prerouting_miniupnpd']);
    // The rule is there first, so its absence below means the delete removed it.
    expect(await rules()).toMatch(/dnat .*198\.18\.25\.2:\d+/);
    await nodes.e!.weft(['down']);
    await waitFor('the delete', async () => /DeletePortMapping/.test(routers.e!.portMappingLog), 10_000);
    expect(await rules()).not.toMatch(/dnat/);
  }, 30_000);

  it('a node going down deletes its mapping on the router', async () => {
    await nodes.a!.weft(['down']);
    await waitFor('the delete', async () => /for 0 s/.test(routers.a!.portMappingLog), 10_000);
    const rules = await routers.a!.host.must(['nft', 'list', 'table', 'ip', 'weftpm']);
    expect(rules).not.toMatch(/dnat to/);
  }, 30_000);
});
