import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import type { NetcheckReport, PeerStatus } from '@weft/protocol';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  addRouter,
  ControlServer,
  Lab,
  RelayServer,
  type Router,
  removeScratch,
  scratchDir,
  WeftNode,
  waitFor,
} from '../lab/index.js';

// Port mapping end to end: nodes behind endpoint-dependent ("symmetric") NAT routers, which keep
// two such nodes on the relay (nat-matrix.test.ts), unless the router maps a port. Each router
// runs the lab's port-mapping daemon (e2e/lab/port-mapping-daemon.ts), which installs a real
// nftables DNAT/SNAT pair for every mapping it grants.
//
//   a  EDM NAT, PCP          198.18.21.2  behind 198.18.0.121
//   b  EDM NAT, NAT-PMP only 198.18.22.2  behind 198.18.0.122
//   c  EDM NAT, a daemon answering garbage   198.18.23.2 behind 198.18.0.123
//   d  EDM NAT, no daemon    198.18.24.2  behind 198.18.0.124

let lab: Lab;
let dir: string;
let control: ControlServer;
let relay1: RelayServer;
let relay2: RelayServer;
const nodes: Record<string, WeftNode> = {};
const routers: Record<string, Router> = {};
const ips: Record<string, string> = {};

async function peerOf(a: string, b: string): Promise<PeerStatus | undefined> {
  return (await nodes[a]!.status()).peers.find((p) => p.name === b);
}

async function netcheck(name: string): Promise<NetcheckReport> {
  const r = await nodes[name]!.weft(['netcheck', '--json']);
  expect(r.code, r.stderr).toBe(0);
  return JSON.parse(r.stdout) as NetcheckReport;
}

/** Both ends report `path` for each other, pinging meanwhile so the paths carry traffic. */
async function bothPaths(a: string, b: string, path: 'direct' | 'relay', timeoutMs: number) {
  return waitFor(
    `${a} ↔ ${b} ${path}`,
    async () => {
      await nodes[a]!.host.ping(ips[b]!, { count: 1, deadlineS: 1 });
      const [pa, pb] = await Promise.all([peerOf(a, b), peerOf(b, a)]);
      const settled =
        path === 'direct' ||
        (pa?.endpoint?.startsWith('127.0.0.1:') && pb?.endpoint?.startsWith('127.0.0.1:'));
      return pa?.path === path && pb?.path === path && settled && ([pa, pb] as const);
    },
    timeoutMs,
  );
}

beforeAll(async () => {
  lab = await Lab.create();
  dir = scratchDir(lab.id);
  const net = await lab.addSegment();
  const ctlHost = await lab.addHost('ctl', { segment: net, address: '198.18.0.1/24' });
  const r1Host = await lab.addHost('rly1', { segment: net, address: '198.18.0.2/24' });
  const r2Host = await lab.addHost('rly2', { segment: net, address: '198.18.0.3/24' });
  for (const d of ['r1', 'r2']) mkdirSync(join(dir, d));
  relay1 = new RelayServer(r1Host, join(dir, 'r1'));
  relay2 = new RelayServer(r2Host, join(dir, 'r2'));
  const relays = `${await relay1.mapEntry(1, 'lab1')};${await relay2.mapEntry(2, 'lab2')}`;
  control = new ControlServer(ctlHost, dir, 8080, ['--relays', relays]);
  await control.start();
  await Promise.all([relay1.start(control), relay2.start(control)]);
  await control.cli(['users', 'create', 'alice', '--email', 'alice@example.com']);
  const key = await control.cli(['preauthkey', 'create', '--user', 'alice', '--reusable']);

  const setups = [
    ['a', 21, 'pcp'],
    ['b', 22, 'nat-pmp'],
    ['c', 23, 'garbage'],
    ['d', 24, null],
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
    if (mode) await router.startPortMapping(mode);
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
    expect((await netcheck('d')).portMapping).toEqual({ answered: 'none', endpoint: null });
    const text = await nodes.a!.weft(['netcheck']);
    expect(text.stdout).toMatch(/Port mapping: 198\.18\.0\.121:\d+ \(pcp\)/);
    expect(routers.a!.portMappingLog).toMatch(/mapping 198\.18\.0\.121:\d+ → 198\.18\.21\.2:\d+ for 7200 s/);
  });

  it('EDM + PCP ↔ EDM + NAT-PMP: direct over the mapped ports', async () => {
    const mappedA = (await netcheck('a')).portMapping.endpoint;
    const mappedB = (await netcheck('b')).portMapping.endpoint;
    const [pa, pb] = await bothPaths('a', 'b', 'direct', 90_000);
    expect(pa.endpoint).toBe(mappedB);
    expect(pb.endpoint).toBe(mappedA);
    expect(pa.relayReason).toBeNull();
  }, 120_000);

  it('EDM with a hostile gateway ↔ EDM without port mapping: relayed, and pings work', async () => {
    const [pc] = await bothPaths('c', 'd', 'relay', 90_000);
    expect(pc.relayRegion).toMatch(/^lab[12]$/);
    expect(pc.relayReason).toContain('peer’s NAT maps per destination');
    await waitFor('d → c ping', () => nodes.d!.host.ping(ips.c!, { count: 1, deadlineS: 1 }), 10_000);
  }, 120_000);

  it('a node going down deletes its mapping on the router', async () => {
    await nodes.a!.weft(['down']);
    await waitFor('the delete', async () => /for 0 s/.test(routers.a!.portMappingLog), 10_000);
    const rules = await routers.a!.host.must(['nft', 'list', 'table', 'ip', 'weftpm']);
    expect(rules).not.toMatch(/dnat to/);
  }, 30_000);
});
