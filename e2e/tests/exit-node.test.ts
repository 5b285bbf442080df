import { writeFileSync } from 'node:fs';
import { ExitNodeList, type Status } from '@weft/protocol';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ControlServer, type Host, Lab, scratchDir, stopTailnet, WeftNode, waitFor } from '../lab/index.js';
import { installLeakCounter, leakCount, startDnsServer, startTcpServer, tcpProbe } from './helper-harness.js';

// Exit nodes and subnet routers end to end: real control, real helpers + wireguard-go, real engines
// and CLIs on lab hosts. A client uses a subnet router and an exit node once an admin (or the
// policy's autoApprovers) approves what they advertise.
//
//   client 198.18.20.2 ─┬─ LAN 198.18.20.0/24 ─ gw (router, counts leaks) ─ WAN 198.18.30.0/24 ─┬─ control 198.18.30.5
//   lan    198.18.20.3 ─┘                                                                       ├─ exit 198.18.30.2
//                                                                                               └─ subnet router 198.18.30.3
//   exit 198.18.10.2 ─ "internet" 198.18.10.0/24 (and fd00:10::/64) ─ web 198.18.10.10 (no route anywhere else)
//   subnet router 198.51.100.1 ─ private subnet 198.51.100.0/24 ─ priv 198.51.100.10 (no route anywhere else)
//
// Only the exit node reaches the web host; only the subnet router reaches the private host. The gw
// router has no route to either, and counts every packet from the client's own address to the web
// host: a leak would show up there.

const CLIENT_LAN = '198.18.20.2';
const LAN_HOST = '198.18.20.3';
const CONTROL = '198.18.30.5';
const EXIT = { wan: '198.18.30.2', inet: '198.18.10.2', inet6: 'fd00:10::2' };
const SUBNET = { wan: '198.18.30.3', priv: '198.51.100.1' };
const WEB = '198.18.10.10';
const WEB6 = 'fd00:10::10';
const PRIV = '198.51.100.10';

let lab: Lab;
let dir: string;
let control: ControlServer;
let gw: Host;
let web: Host;
let privHost: Host;
const nodes: Record<'cl' | 'ex' | 'sr', WeftNode> = {} as never;
const before: Record<string, string> = {};

async function weft(node: WeftNode, args: string[]): Promise<string> {
  const r = await node.weft(args, 60_000);
  if (r.code !== 0) throw new Error(`weft ${args.join(' ')} failed: ${r.stderr || r.stdout}`);
  return r.stdout;
}

const peer = (st: Status, name: string) => st.peers.find((p) => p.name === name);

describe('exit nodes and subnet routers (real control, engines, helpers, wireguard-go, nftables)', () => {
  let client: Host;

  beforeAll(async () => {
    lab = await Lab.create();
    dir = scratchDir(`${lab.id}-exit`);
    const lan = await lab.addSegment();
    const wan = await lab.addSegment();
    const inet = await lab.addSegment();
    const priv = await lab.addSegment();
    gw = await lab.addHost('gw', { segment: lan, address: '198.18.20.1/24' });
    await lab.attach(gw.ns, wan, 'eth1', '198.18.30.1/24');
    await gw.must(['sysctl', '-qw', 'net.ipv4.ip_forward=1']);
    client = await lab.addHost('cl', { segment: lan, address: `${CLIENT_LAN}/24`, gateway: '198.18.20.1' });
    const lanHost = await lab.addHost('ln', { segment: lan, address: `${LAN_HOST}/24` });
    const ctl = await lab.addHost('ctl', { segment: wan, address: `${CONTROL}/24`, gateway: '198.18.30.1' });
    const ex = await lab.addHost('ex', { segment: wan, address: `${EXIT.wan}/24`, gateway: '198.18.30.1' });
    await lab.attach(ex.ns, inet, 'eth1', `${EXIT.inet}/24`);
    await ex.must(['ip', 'address', 'add', `${EXIT.inet6}/64`, 'dev', 'eth1']);
    const sr = await lab.addHost('sr', { segment: wan, address: `${SUBNET.wan}/24`, gateway: '198.18.30.1' });
    await lab.attach(sr.ns, priv, 'eth1', `${SUBNET.priv}/24`);
    web = await lab.addHost('web', { segment: inet, address: `${WEB}/24` });
    await web.must(['ip', 'address', 'add', `${WEB6}/64`, 'dev', 'eth0']);
    privHost = await lab.addHost('pv', { segment: priv, address: `${PRIV}/24` });
    // The leak detector: every packet from the client's own address to the web host, seen by its router.
    await installLeakCounter(gw, CLIENT_LAN, WEB);
    await startTcpServer(web, [80]);
    await startTcpServer(privHost, [80]);
    await startTcpServer(lanHost, [80]);

    control = new ControlServer(ctl, dir);
    await control.start();
    await control.cli(['users', 'create', 'alice', '--email', 'alice@example.com']);
    for (const [name, host] of [
      ['cl', client],
      ['ex', ex],
      ['sr', sr],
    ] as const) {
      before[name] = await host.osSnapshot();
      const node = new WeftNode(host, scratchDir(`${lab.id}-${name}`), lab.name(`t${name}`));
      await node.start();
      nodes[name] = node;
    }
    const key = await control.cli(['preauthkey', 'create', '--user', 'alice', '--reusable']);
    await weft(nodes.sr, [
      'up',
      '--control-url',
      control.url,
      '--insecure-http',
      '--authkey',
      key,
      '--hostname',
      'sr',
      '--advertise-routes',
      '198.51.100.0/24',
    ]);
    await weft(nodes.ex, [
      'up',
      '--control-url',
      control.url,
      '--insecure-http',
      '--authkey',
      key,
      '--hostname',
      'ex',
      '--advertise-exit-node',
    ]);
    await weft(nodes.cl, [
      'up',
      '--control-url',
      control.url,
      '--insecure-http',
      '--authkey',
      key,
      '--hostname',
      'cl',
    ]);
  }, 120_000);

  afterAll(async () => {
    await stopTailnet({ nodes: Object.values(nodes), control, lab, dir });
  });

  let plain = '';

  it('before approval nothing routes: the routes are advertised, listed as pending, and unused', async () => {
    await waitFor(
      'the routes at control',
      async () => (await control.cli(['routes', 'list'])).includes('198.51.100.0/24'),
      15_000,
    );
    const listed = JSON.parse(await control.cli(['routes', 'list', '--json']));
    expect(listed).toEqual([
      expect.objectContaining({
        node: 'ex',
        advertised: ['0.0.0.0/0', '::/0'],
        enabled: [],
        exitNode: false,
      }),
      expect.objectContaining({ node: 'sr', advertised: ['198.51.100.0/24'], enabled: [] }),
    ]);
    await waitFor('cl to reach ex', async () => client.ping(await nodes.ex.ip4(), { deadlineS: 2 }), 20_000);
    const st = await nodes.cl.status();
    expect(peer(st, 'ex')?.exitNodeOption).toBe(false);
    expect(peer(st, 'sr')?.routes).toBeUndefined();
    expect(await client.must(['ip', 'route', 'show', 'table', 'all'])).not.toContain('198.51.100.0/24');
    expect(await tcpProbe(client, PRIV, 80, 2)).toBeNull();
    const refused = await nodes.cl.weft(['set', '--exit-node', 'ex']);
    expect(refused.code).not.toBe(0);
    expect(refused.stderr).toMatch(/ex does not offer an exit node/);
    expect(await tcpProbe(client, WEB, 80, 2)).toBeNull();
  });

  it('after an admin approves the subnet route, the client reaches the private host through the router', async () => {
    await control.cli(['routes', 'approve', 'sr', '198.51.100.0/24']);
    await waitFor('the private host', async () => (await tcpProbe(client, PRIV, 80, 2)) !== null, 20_000);
    // Masqueraded by the router: the private host needs no route back.
    expect(await tcpProbe(client, PRIV, 80)).toBe(`hello 80 from ${SUBNET.priv}`);
    expect(peer(await nodes.cl.status(), 'sr')?.routes).toEqual(['198.51.100.0/24']);
    expect(await nodes.sr.host.must(['sysctl', '-n', 'net.ipv4.ip_forward'])).toBe('1\n');
    // The web host is still out of reach: no exit node is in use.
    expect(await tcpProbe(client, WEB, 80, 2)).toBeNull();
    plain = await client.osSnapshot();
  });

  it('with the exit node approved and chosen, the web host answers and sees the exit node as the source', async () => {
    await control.cli(['routes', 'approve', 'ex', '0.0.0.0/0']);
    await waitFor(
      'ex offered as an exit node',
      async () => peer(await nodes.cl.status(), 'ex')?.exitNodeOption === true,
      15_000,
    );
    const baseline = await leakCount(gw);
    await weft(nodes.cl, ['set', '--exit-node', 'ex']);
    await waitFor(
      'the web host through ex',
      async () => (await tcpProbe(client, WEB, 80, 2)) !== null,
      20_000,
    );
    expect(await tcpProbe(client, WEB, 80)).toBe(`hello 80 from ${EXIT.inet}`);
    expect(await client.ping(WEB, { deadlineS: 3 })).toBe(true);
    // ::/0 goes through the tunnel too, out of the exit node's IPv6 uplink.
    expect(await tcpProbe(client, WEB6, 80)).toBe(`hello 80 from ${EXIT.inet6}`);
    expect(await leakCount(gw)).toBe(baseline);
    // The private subnet still goes to its router; control stays outside the tunnel and healthy.
    expect(await tcpProbe(client, PRIV, 80)).toBe(`hello 80 from ${SUBNET.priv}`);
    const st = await nodes.cl.status();
    expect(st.exitNode).toEqual({ id: peer(st, 'ex')?.id, allowLan: false });
    expect(peer(st, 'ex')).toMatchObject({ exitNodeOption: true, exitNode: true });
    expect(st.health).toEqual([]);
    const rules = await client.must(['ip', 'rule', 'show']);
    expect(rules).toContain(`to ${CONTROL} lookup main`);
    expect(await weft(nodes.cl, ['status'])).toMatch(/Exit node: ex/);
  });

  it('tailnet DNS: a split domain reaches the private resolver through the subnet router; other names reach the internet resolver only through the exit node', async () => {
    const corp = await startDnsServer(privHost, { 'wiki.corp.example': PRIV });
    const internet = await startDnsServer(web, { 'www.example.com': WEB });
    await control.cli(['dns', 'set', '--nameservers', WEB, '--split-dns', `corp.example=${PRIV}`]);
    const baseline = await leakCount(gw);
    const lookup = async (name: string) => {
      const r = await client.exec(['getent', 'ahostsv4', name], { timeoutMs: 10_000 });
      return r.code === 0 ? r.stdout.split(/\s+/)[0] : null;
    };
    await waitFor(
      'the split domain answers',
      async () => (await lookup('wiki.corp.example')) === PRIV,
      10_000,
    );
    await waitFor('the internet name answers', async () => (await lookup('www.example.com')) === WEB, 10_000);
    // Each resolver was asked through the tunnel: by the subnet router and by the exit node (both
    // masquerade), never by the client's own address; the client's router saw nothing go to the web host.
    expect(
      corp()
        .filter((q) => q.name === 'wiki.corp.example')
        .map((q) => q.from),
    ).toContain(SUBNET.priv);
    expect(new Set(internet().map((q) => q.from))).toEqual(new Set([EXIT.inet]));
    expect(corp().some((q) => q.name === 'www.example.com')).toBe(false);
    expect(await leakCount(gw)).toBe(baseline);
    await control.cli(['dns', 'set', '--nameservers', '', '--split-dns', '']);
  });

  it('allow-LAN off: the LAN is out of reach; on: it is reachable', async () => {
    expect(await tcpProbe(client, LAN_HOST, 80, 2)).toBeNull();
    expect(await client.ping(LAN_HOST, { count: 2, deadlineS: 2 })).toBe(false);
    await weft(nodes.cl, ['set', '--exit-node-allow-lan-access']);
    await waitFor('the LAN host', async () => (await tcpProbe(client, LAN_HOST, 80, 2)) !== null, 10_000);
    expect(await tcpProbe(client, LAN_HOST, 80)).toBe(`hello 80 from ${CLIENT_LAN}`);
    expect(await tcpProbe(client, WEB, 80)).toBe(`hello 80 from ${EXIT.inet}`);
    expect((await nodes.cl.status()).exitNode?.allowLan).toBe(true);
    await weft(nodes.cl, ['set', '--exit-node-allow-lan-access=false']);
    await waitFor(
      'the LAN gone again',
      async () => (await tcpProbe(client, LAN_HOST, 80, 2)) === null,
      10_000,
    );
  });

  it('exit-node list shows the exit node online with its latency; suggest picks it', async () => {
    const list = ExitNodeList.parse(JSON.parse(await weft(nodes.cl, ['exit-node', 'list', '--json'])));
    expect(list.exitNodes).toEqual([expect.objectContaining({ name: 'ex', online: true, selected: true })]);
    expect(list.exitNodes[0]?.latencyMs).toBeGreaterThan(0);
    console.log(`exit node latency through the tunnel: ${list.exitNodes[0]?.latencyMs} ms`);
    expect(list.recommended).toBe(list.exitNodes[0]?.id);
    expect(await weft(nodes.cl, ['exit-node', 'list'])).toMatch(/\*\s+ex\s+100\.\S+\s+-\s+yes\s+[\d.]+ ms/);
    expect((await weft(nodes.cl, ['exit-node', 'suggest'])).trim()).toBe('ex');
    expect((await nodes.cl.status()).recommendedExitNodeId).toBe(list.recommended);
  });

  it('weft set --exit-node= puts ip rule, every routing table and nftables back exactly', async () => {
    await weft(nodes.cl, ['set', '--exit-node=']);
    await waitFor('the exit node cleared', async () => (await client.osSnapshot()) === plain, 10_000);
    expect(await client.osSnapshot()).toBe(plain);
    expect((await nodes.cl.status()).exitNode).toBeNull();
    expect(await tcpProbe(client, WEB, 80, 2)).toBeNull();
    expect(await tcpProbe(client, PRIV, 80)).toBe(`hello 80 from ${SUBNET.priv}`);
  });

  it('autoApprovers: a policy approves the exit node; autogroup:internet lets the client use it', async () => {
    await control.cli(['routes', 'unapprove', 'ex', 'exit']);
    await waitFor(
      'ex no longer offered',
      async () => peer(await nodes.cl.status(), 'ex')?.exitNodeOption === false,
      15_000,
    );
    expect((await nodes.cl.weft(['set', '--exit-node', 'ex'])).code).not.toBe(0);
    const policy = `${dir}/policy.hujson`;
    writeFileSync(
      policy,
      `{
  "acls": [{
    "action": "accept",
    "src": ["alice@example.com"],
    "dst": ["alice@example.com:*", "198.51.100.0/24:80", "autogroup:internet:*"],
  }],
  "autoApprovers": { "exitNode": ["alice@example.com"] },
}
`,
    );
    await control.cli(['policy', 'set', policy]);
    await waitFor(
      'ex offered again',
      async () => peer(await nodes.cl.status(), 'ex')?.exitNodeOption === true,
      15_000,
    );
    expect(JSON.parse(await control.cli(['routes', 'list', '--json']))).toContainEqual(
      expect.objectContaining({ node: 'ex', approved: [], enabled: ['0.0.0.0/0', '::/0'], exitNode: true }),
    );
    // Chosen by its address this time.
    await weft(nodes.cl, ['set', '--exit-node', await nodes.ex.ip4()]);
    await waitFor(
      'the web host through ex',
      async () => (await tcpProbe(client, WEB, 80, 2)) !== null,
      20_000,
    );
    expect(await tcpProbe(client, WEB, 80)).toBe(`hello 80 from ${EXIT.inet}`);
    // autogroup:internet is public address space: not the ULA the web host also has.
    expect(await tcpProbe(client, WEB6, 80, 2)).toBeNull();
    // The subnet route, approved by the admin, still works under the policy (port 80 only).
    expect(await tcpProbe(client, PRIV, 80)).toBe(`hello 80 from ${SUBNET.priv}`);
  });

  it("killing the exit node's engine and helper blocks the client's internet traffic instead of leaking it", async () => {
    expect(await tcpProbe(client, WEB, 80)).toBe(`hello 80 from ${EXIT.inet}`);
    const baseline = await leakCount(gw);
    await nodes.ex.stop();
    expect(await tcpProbe(client, WEB, 80, 2)).toBeNull();
    expect(await client.ping(WEB, { count: 2, deadlineS: 2 })).toBe(false);
    expect(await leakCount(gw)).toBe(baseline);
    await waitFor(
      'health to say so',
      async () => (await nodes.cl.status()).health.some((h) => /exit node ex is offline/.test(h)),
      15_000,
    );
    // Still blocked once control has marked it offline; control itself stays reachable.
    expect(await tcpProbe(client, WEB, 80, 2)).toBeNull();
    expect(await leakCount(gw)).toBe(baseline);
    // It comes back by itself (the engine resumes where it was), and so does the client's traffic.
    await nodes.ex.start();
    await waitFor('the web host again', async () => (await tcpProbe(client, WEB, 80, 2)) !== null, 30_000);
    expect(await tcpProbe(client, WEB, 80)).toBe(`hello 80 from ${EXIT.inet}`);
  });

  it('weft down, with the exit node in use, and on the routers, leaves the OS exactly as before', async () => {
    for (const name of ['cl', 'ex', 'sr'] as const) {
      await weft(nodes[name], ['down']);
      await waitFor(
        `${name} restored`,
        async () => (await nodes[name].host.osSnapshot()) === before[name],
        10_000,
      );
      expect(await nodes[name].host.osSnapshot()).toBe(before[name]);
    }
  });
});
