import type { ChildProcess } from 'node:child_process';
import type { DesiredState, FilterRuleSpec } from '@weft/protocol';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Host, run, type Segment, waitFor } from '../lab/index.js';
import {
  Helper,
  helperLab,
  installLeakCounter,
  keyPair,
  leakCount,
  startTcpServer,
  tcpProbe,
} from './helper-harness.js';

// Exit nodes and subnet routers, OS side, for real: the built helpers in lab namespaces, driven with
// desired states as the engine will send them, over wireguard-go, `ip rule` and nftables.
//
//   client 198.18.20.2 ─┬─ LAN 198.18.20.0/24 ─ gw (router, counts leaks) ─ WAN 198.18.30.0/24 ─┬─ exit 198.18.30.2
//   lan    198.18.20.3 ─┘        the "control server" 198.18.30.1:8443 is on gw               └─ subnet router 198.18.30.3
//   exit 198.18.10.2 ─ "internet" 198.18.10.0/24 ─ web 198.18.10.10 (no route anywhere else)
//   subnet router 198.51.100.1 ─ private subnet 198.51.100.0/24 ─ priv 198.51.100.10 (no route anywhere else)
//
// The web host is reachable only from the exit node. The gw router has no route to it either, and
// counts every packet from the client's own address to it: a leak would show up there.

const env = helperLab();

const CLIENT = { lan: '198.18.20.2', tunnel: '100.64.3.1', tunnel6: 'fd00:67::1' };
const EXIT = { wan: '198.18.30.2', inet: '198.18.10.2', tunnel: '100.64.3.2', tunnel6: 'fd00:67::2' };
const SUBNET = { wan: '198.18.30.3', priv: '198.51.100.1', tunnel: '100.64.3.3', tunnel6: 'fd00:67::3' };
const WEB = '198.18.10.10';
/** The web host and the exit node's uplink also speak IPv6 (the client's LAN does not). */
const WEB6 = 'fd00:10::10';
const EXIT_INET6 = 'fd00:10::2';
const PRIV = '198.51.100.10';
const LAN_HOST = '198.18.20.3';
const CONTROL = '198.18.30.1';

const everything = (src: string[]): FilterRuleSpec[] => [
  {
    src,
    dst: [
      { prefix: '0.0.0.0/0', ports: { first: 0, last: 65535 } },
      { prefix: '::/0', ports: { first: 0, last: 65535 } },
    ],
    protos: [1, 6, 17, 58],
  },
];

/**
 * Sends one DNS-sized UDP datagram to `server`:53 from the host; `refused` when the kernel refused
 * to send it (the kill switch's reject), `sent` when it left.
 */
async function dnsQuery(host: Host, server: string): Promise<string> {
  const script = `
    const s = require('node:dgram').createSocket('udp4');
    s.send(Buffer.alloc(32), 53, ${JSON.stringify(server)}, (e) => { console.log(e ? 'refused' : 'sent'); s.close(); });`;
  const r = await host.exec(['timeout', '5', 'node', '-e', script], { timeoutMs: 7000 });
  return r.stdout.trim();
}

/** The one wireguard-go process in a host's namespace. */
async function wireguardGo(host: Host, helper: Helper): Promise<number> {
  const pids = (await run(['ip', 'netns', 'pids', host.ns])).stdout.split(/\s+/).filter(Boolean).map(Number);
  for (const pid of pids) {
    if (pid === helper.child.pid) continue;
    const comm = (await run(['cat', `/proc/${pid}/comm`])).stdout.trim();
    if (comm === 'wireguard-go') return pid;
  }
  throw new Error(`no wireguard-go in ${host.ns}`);
}

describe('exit node and subnet router (real ip rule, nftables, wireguard-go)', () => {
  let lanSeg: Segment;
  let client: Host;
  let gw: Host;
  let exit: Host;
  let subnet: Host;
  let lanHost: Host;
  const helpers: Record<'client' | 'exit' | 'subnet', Helper> = {} as never;
  const servers: ChildProcess[] = [];
  const keys = { client: keyPair(), exit: keyPair(), subnet: keyPair() };
  const names = { client: '', exit: '', subnet: '' };
  const before: Record<'client' | 'exit' | 'subnet', string> = { client: '', exit: '', subnet: '' };

  const clientState = (exitNode?: { allowLan: boolean }): DesiredState => ({
    interface: {
      name: names.client,
      privateKey: keys.client.privateKey,
      listenPort: 51820,
      addresses: [`${CLIENT.tunnel}/32`, `${CLIENT.tunnel6}/128`],
      mtu: 1420,
    },
    peers: [
      {
        publicKey: keys.exit.publicKey,
        allowedIPs: [
          `${EXIT.tunnel}/32`,
          `${EXIT.tunnel6}/128`,
          ...(exitNode === undefined ? [] : ['0.0.0.0/0', '::/0']),
        ],
        endpoint: `${EXIT.wan}:51820`,
      },
      {
        publicKey: keys.subnet.publicKey,
        allowedIPs: [`${SUBNET.tunnel}/32`, `${SUBNET.tunnel6}/128`, '198.51.100.0/24'],
        endpoint: `${SUBNET.wan}:51820`,
      },
    ],
    routes: [
      `${EXIT.tunnel}/32`,
      `${EXIT.tunnel6}/128`,
      `${SUBNET.tunnel}/32`,
      `${SUBNET.tunnel6}/128`,
      '198.51.100.0/24',
    ],
    filter: [],
    ...(exitNode === undefined
      ? {}
      : {
          exitNode: {
            allowedLan: exitNode.allowLan ? ['198.18.20.0/24'] : [],
            bypass: [`${CONTROL}/32`],
          },
        }),
  });

  const routerState = (
    who: 'exit' | 'subnet',
    me: { tunnel: string; tunnel6: string },
    routes: string[],
    filter: FilterRuleSpec[],
  ): DesiredState => ({
    interface: {
      name: names[who],
      privateKey: keys[who].privateKey,
      listenPort: 51820,
      addresses: [`${me.tunnel}/32`, `${me.tunnel6}/128`],
      mtu: 1420,
    },
    peers: [
      {
        publicKey: keys.client.publicKey,
        allowedIPs: [`${CLIENT.tunnel}/32`, `${CLIENT.tunnel6}/128`],
        endpoint: `${CLIENT.lan}:51820`,
      },
    ],
    routes: [`${CLIENT.tunnel}/32`, `${CLIENT.tunnel6}/128`],
    filter,
    router: { routes, masquerade: true },
  });
  const exitState = () =>
    routerState(
      'exit',
      EXIT,
      ['0.0.0.0/0', '::/0'],
      everything([`${CLIENT.tunnel}/32`, `${CLIENT.tunnel6}/128`]),
    );
  const subnetState = () =>
    routerState(
      'subnet',
      SUBNET,
      ['198.51.100.0/24'],
      [
        {
          src: [`${CLIENT.tunnel}/32`],
          dst: [
            { prefix: '198.51.100.0/24', ports: { first: 80, last: 80 } },
            { prefix: `${SUBNET.tunnel}/32`, ports: { first: 0, last: 0 } },
          ],
          protos: [1, 6],
        },
      ],
    );

  beforeAll(async () => {
    lanSeg = await env.lab.addSegment();
    const wan = await env.lab.addSegment();
    const inet = await env.lab.addSegment();
    const priv = await env.lab.addSegment();
    client = await env.lab.addHost('cl', {
      segment: lanSeg,
      address: `${CLIENT.lan}/24`,
      gateway: '198.18.20.1',
    });
    lanHost = await env.lab.addHost('ln', { segment: lanSeg, address: `${LAN_HOST}/24` });
    gw = await env.lab.addHost('gw', { segment: lanSeg, address: '198.18.20.1/24' });
    await env.lab.attach(gw.ns, wan, 'eth1', `${CONTROL}/24`);
    await gw.must(['sysctl', '-qw', 'net.ipv4.ip_forward=1']);
    exit = await env.lab.addHost('ex', { segment: wan, address: `${EXIT.wan}/24`, gateway: CONTROL });
    await env.lab.attach(exit.ns, inet, 'eth1', `${EXIT.inet}/24`);
    subnet = await env.lab.addHost('sr', { segment: wan, address: `${SUBNET.wan}/24`, gateway: CONTROL });
    await env.lab.attach(subnet.ns, priv, 'eth1', `${SUBNET.priv}/24`);
    const web = await env.lab.addHost('web', { segment: inet, address: `${WEB}/24` });
    await exit.must(['ip', 'address', 'add', `${EXIT_INET6}/64`, 'dev', 'eth1']);
    await web.must(['ip', 'address', 'add', `${WEB6}/64`, 'dev', 'eth0']);
    const privHost = await env.lab.addHost('pv', { segment: priv, address: `${PRIV}/24` });
    // The leak detector: every packet from the client's own address to the web host, seen by its router.
    await installLeakCounter(gw, CLIENT.lan, WEB);

    servers.push(await startTcpServer(web, [80]), await startTcpServer(privHost, [80]));
    servers.push(await startTcpServer(gw, [8443]), await startTcpServer(lanHost, [80]));
    names.client = env.lab.name('cl');
    names.exit = env.lab.name('ex');
    names.subnet = env.lab.name('sr');
    for (const [who, host] of [
      ['client', client],
      ['exit', exit],
      ['subnet', subnet],
    ] as const) {
      before[who] = await host.osSnapshot();
      helpers[who] = await Helper.startIn(host, env.scratch);
    }
  });

  afterAll(async () => {
    for (const h of Object.values(helpers)) await h.terminate();
  });

  let plain = '';

  it('without an exit node the web host is out of reach, and the leak detector sees the attempt', async () => {
    await helpers.exit.apply(exitState());
    await helpers.subnet.apply(subnetState());
    await helpers.client.apply(clientState());
    plain = await client.osSnapshot();
    expect(await client.ping(EXIT.tunnel, { deadlineS: 5 })).toBe(true);
    expect(await tcpProbe(client, WEB, 80, 2)).toBeNull();
    expect(await tcpProbe(client, WEB6, 80, 2)).toBeNull();
    expect(await leakCount(gw)).toBeGreaterThan(0);
  });

  it('a subnet route reaches the private host through the router, masqueraded', async () => {
    expect(await tcpProbe(client, PRIV, 80)).toBe(`hello 80 from ${SUBNET.priv}`);
    expect(await client.ping(PRIV, { deadlineS: 3 })).toBe(true);
    // The router forwards only what the filter allows there: not port 22 (nothing listens, but the
    // SYN must not even get out: the private host would answer with a reset, which is not a timeout).
    const before22 = await subnet.must([
      'nft',
      'list',
      'chain',
      'inet',
      `weft-${names.subnet}`,
      'tunnel_fwd',
    ]);
    expect(await tcpProbe(client, PRIV, 22, 2)).toBeNull();
    const after22 = await subnet.must(['nft', 'list', 'chain', 'inet', `weft-${names.subnet}`, 'tunnel_fwd']);
    expect(after22).not.toBe(before22);
    expect(await subnet.must(['sysctl', '-n', 'net.ipv4.ip_forward'])).toBe('1\n');
  });

  it('with the exit node selected the web host answers, and sees the exit node as the source', async () => {
    await helpers.client.apply(clientState({ allowLan: false }));
    const baseline = await leakCount(gw);
    expect(await tcpProbe(client, WEB, 80)).toBe(`hello 80 from ${EXIT.inet}`);
    expect(await client.ping(WEB, { deadlineS: 3 })).toBe(true);
    expect(await leakCount(gw)).toBe(baseline);
    // ::/0 goes through the tunnel as well, out of the exit node's IPv6 uplink.
    expect(await tcpProbe(client, WEB6, 80)).toBe(`hello 80 from ${EXIT_INET6}`);
    // The control server stays outside the tunnel: it sees the client's own address.
    expect(await tcpProbe(client, CONTROL, 8443)).toBe(`hello 8443 from ${CLIENT.lan}`);
    // Tunnel peers and routed subnets still work.
    expect(await tcpProbe(client, PRIV, 80)).toBe(`hello 80 from ${SUBNET.priv}`);
    const rules = await client.must(['ip', 'rule', 'show']);
    expect(rules).toContain('5330:\tnot from all fwmark 0x5746 lookup 22342');
  });

  it('allow-LAN off: the LAN is out of reach; on: it is reachable', async () => {
    expect(await client.ping(LAN_HOST, { count: 2, deadlineS: 2 })).toBe(false);
    expect(await tcpProbe(client, LAN_HOST, 80, 2)).toBeNull();
    await helpers.client.apply(clientState({ allowLan: true }));
    expect(await client.ping(LAN_HOST, { deadlineS: 3 })).toBe(true);
    expect(await tcpProbe(client, LAN_HOST, 80)).toBe(`hello 80 from ${CLIENT.lan}`);
    expect(await tcpProbe(client, WEB, 80)).toBe(`hello 80 from ${EXIT.inet}`);
    await helpers.client.apply(clientState({ allowLan: false }));
    expect(await client.ping(LAN_HOST, { count: 2, deadlineS: 2 })).toBe(false);
  });

  it('clearing the exit node puts rules, routes, nftables and sysctls back exactly', async () => {
    await helpers.client.apply(clientState());
    expect(await client.osSnapshot()).toBe(plain);
    expect(await tcpProbe(client, WEB, 80, 2)).toBeNull();
    expect(await tcpProbe(client, PRIV, 80)).toBe(`hello 80 from ${SUBNET.priv}`);
  });

  it("the client's own tunnel dying blocks internet traffic instead of leaking it", async () => {
    await helpers.client.apply(clientState({ allowLan: false }));
    expect(await tcpProbe(client, WEB, 80)).toBe(`hello 80 from ${EXIT.inet}`);
    const baseline = await leakCount(gw);
    process.kill(await wireguardGo(client, helpers.client), 'SIGKILL');
    await waitFor(
      'the client interface to go',
      async () => (await client.exec(['ip', 'link', 'show', 'dev', names.client])).code !== 0,
    );
    expect(await tcpProbe(client, WEB, 80, 2)).toBeNull();
    expect(await client.ping(WEB, { count: 2, deadlineS: 2 })).toBe(false);
    // A DNS query to a resolver out on the internet is refused too, not sent in the clear.
    expect(await dnsQuery(client, WEB)).toBe('refused');
    // Refused on the way out by the kill switch, never seen by the router.
    expect(await leakCount(gw)).toBe(baseline);
    const killswitch = await client.must([
      'nft',
      'list',
      'chain',
      'inet',
      `weft-${names.client}`,
      'killswitch',
    ]);
    expect(killswitch).toMatch(/counter packets [1-9]\d* bytes \d+ reject/);
    // The control server is still reachable, outside the tunnel.
    expect(await tcpProbe(client, CONTROL, 8443)).toBe(`hello 8443 from ${CLIENT.lan}`);
    // The next apply brings it all back.
    await waitFor('the helper to notice', async () =>
      helpers.client.log.some((l) => l.includes('the next apply recreates')),
    );
    await helpers.client.apply(clientState({ allowLan: false }));
    await waitFor('the web host again', async () => (await tcpProbe(client, WEB, 80, 2)) !== null, 20_000);
  });

  it("the exit node's tunnel dying blocks the client's internet traffic instead of leaking it", async () => {
    const baseline = await leakCount(gw);
    process.kill(await wireguardGo(exit, helpers.exit), 'SIGKILL');
    await waitFor(
      'the exit interface to go',
      async () => (await exit.exec(['ip', 'link', 'show', 'dev', names.exit])).code !== 0,
    );
    expect(await tcpProbe(client, WEB, 80, 2)).toBeNull();
    expect(await client.ping(WEB, { count: 2, deadlineS: 2 })).toBe(false);
    expect(await leakCount(gw)).toBe(baseline);
    await waitFor('the exit helper to notice', async () =>
      helpers.exit.log.some((l) => l.includes('the next apply recreates')),
    );
    await helpers.exit.apply(exitState());
    await waitFor('the web host again', async () => (await tcpProbe(client, WEB, 80, 2)) !== null, 20_000);
  });

  it('helper SIGTERM (a restart or upgrade) with the exit node selected leaks no packet; the next helper takes over', async () => {
    await helpers.client.apply(clientState({ allowLan: false }));
    expect(await tcpProbe(client, WEB, 80)).toBe(`hello 80 from ${EXIT.inet}`);
    const baseline = await leakCount(gw);
    const socket = helpers.client.socket;
    const tunnelGo = await wireguardGo(client, helpers.client);
    expect(await helpers.client.terminate('SIGTERM')).toBe(0);
    // The kill switch and the exit routing stay.
    expect(await client.must(['ip', 'rule', 'show'])).toContain(
      '5330:\tnot from all fwmark 0x5746 lookup 22342',
    );
    // systemd stops the whole service, wireguard-go included: the tunnel is gone until the next helper.
    process.kill(tunnelGo, 'SIGTERM');
    await waitFor(
      'the client interface to go',
      async () => (await client.exec(['ip', 'link', 'show', 'dev', names.client])).code !== 0,
    );
    expect(await tcpProbe(client, WEB, 80, 2)).toBeNull();
    expect(await client.ping(WEB, { count: 2, deadlineS: 2 })).toBe(false);
    expect(await dnsQuery(client, WEB)).toBe('refused');
    // Measured on the router: not one packet from the client to the internet host went out in the clear.
    expect(await leakCount(gw)).toBe(baseline);

    helpers.client = await Helper.start(client, socket);
    await waitFor('the new helper to take over', async () =>
      helpers.client.log.some((l) => l.includes(`took over ${names.client} (exit node on ${names.client}`)),
    );
    expect(await tcpProbe(client, WEB, 80, 2)).toBeNull();
    // The engine reconnects and applies again: traffic flows through the exit node once more.
    await helpers.client.apply(clientState({ allowLan: false }));
    await waitFor('the web host again', async () => (await tcpProbe(client, WEB, 80, 2)) !== null, 20_000);
    expect(await tcpProbe(client, WEB, 80)).toBe(`hello 80 from ${EXIT.inet}`);
    expect(await leakCount(gw)).toBe(baseline);
  });

  it('after a SIGKILL, the next helper finds what the last one set up and SIGINT takes it all down', async () => {
    const socket = helpers.client.socket;
    expect(await helpers.client.terminate('SIGKILL')).toBeNull();
    process.kill(await wireguardGo(client, helpers.client), 'SIGKILL');
    helpers.client = await Helper.start(client, socket);
    expect(await helpers.client.terminate('SIGINT')).toBe(0);
    expect(await client.osSnapshot()).toBe(before.client);
    helpers.client = await Helper.start(client, socket);
  });

  it('down on every node leaves the OS exactly as before', async () => {
    await helpers.client.apply(clientState({ allowLan: true }));
    for (const who of ['client', 'exit', 'subnet'] as const) {
      await helpers[who].down(names[who]);
      expect(await { client, exit, subnet }[who].osSnapshot()).toBe(before[who]);
    }
  });

  it('SIGINT restores the OS too, for an exit-node client and a router', async () => {
    await helpers.client.apply(clientState({ allowLan: false }));
    await helpers.exit.apply(exitState());
    expect(await client.osSnapshot()).not.toBe(before.client);
    expect(await helpers.client.terminate()).toBe(0);
    expect(await helpers.exit.terminate()).toBe(0);
    expect(await client.osSnapshot()).toBe(before.client);
    expect(await exit.osSnapshot()).toBe(before.exit);
  });
});
