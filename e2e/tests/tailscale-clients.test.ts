import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Status } from '@weft/protocol';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  addRouter,
  ControlServer,
  type Host,
  Lab,
  RelayServer,
  removeScratch,
  type Segment,
  scratchDir,
  TAILSCALE_GATEWAY,
  TailscaleNode,
  tailscaleMissing,
  tsPeers,
  WeftNode,
  waitFor,
} from '../lab/index.js';
import { connectUntilOpen, startTcpServer, tcpProbe } from './helper-harness.js';

// A mixed tailnet: official Tailscale clients (real tailscaled + CLI, tailscale.com v1.102.5) and
// Weft nodes (real weftd, helper, wireguard-go) under one real weft-control and weft-relay.
//
//   "internet" 198.18.0.0/24: control .1, relay .2, tc .11 (Tailscale), wn .12 (Weft),
//                             wx .13 (Weft exit node), tx .14 (Tailscale exit node + subnet router)
//   exits' uplink 198.18.40.0/24: wx .2, tx .3, router r2 .1 ─ 198.18.41.0/24 ─ far .10
//   tx's private subnet 198.51.100.0/24: tx .1, priv .10
//
// tc and tx have a default route to nowhere (TAILSCALE_GATEWAY).
// Only the exit nodes have a route to far (through r2: a Tailscale exit node does not forward to
// its own directly attached LAN); only tx reaches priv.
// Tests run in order and share the tailnet.

const missing = tailscaleMissing();
if (missing) console.log(`tailscale-clients: skipped: ${missing}`);

const FAR = '198.18.41.10';
const PRIV = '198.51.100.10';
const EXIT_UPLINK = { wx: '198.18.40.2', tx: '198.18.40.3' };

let lab: Lab;
let dir: string;
let control: ControlServer;
let relay: RelayServer;
const weft: Record<'wn' | 'wx', WeftNode> = {} as never;
const ts: Record<'tc' | 'tx', TailscaleNode> = {} as never;
/** Nodes a single test adds (stopped by it, and again at the end if it failed midway). */
const extra: (TailscaleNode | WeftNode)[] = [];
let net: Segment;

const weftPeer = (st: Status, name: string) => st.peers.find((p) => p.name === name);

async function weftCli(node: WeftNode, args: string[]): Promise<string> {
  const r = await node.weft(args, 60_000);
  if (r.code !== 0) throw new Error(`weft ${args.join(' ')} failed: ${r.stderr || r.stdout}`);
  return r.stdout;
}

/** `weft-control nodes list --json`, the fields these tests read. */
async function controlNodes(): Promise<
  { name: string; kind: string; version: string | null; user: string | null }[]
> {
  return JSON.parse(await control.cli(['nodes', 'list', '--json']));
}

async function setPolicy(name: string, text: string): Promise<void> {
  const file = join(dir, name);
  writeFileSync(file, text);
  await control.cli(['policy', 'set', file]);
}

/**
 * How long a Weft node and a Tailscale client may take to first reach each other: a few seconds
 * (the time is printed where measured). The bound is loose for a loaded machine: a Weft node never
 * moves a Tailscale peer to the relay (it gets nothing there), it tries its candidates in turn.
 */
const FIRST_CONTACT_MS = 60_000;

/** Everyone reaches everything (as with no policy), so the next tests start from a known state. */
const ALLOW_ALL = `{ "acls": [{ "action": "accept", "src": ["*"], "dst": ["*:*"] }] }\n`;

/** Everyone may reach tc on `ports` only; everything else but tc stays open. */
const tcOnly = (tcIp: string, ports: number[]) => `{
  "hosts": { "tc": "${tcIp}/32" },
  "acls": [
    { "action": "accept", "src": ["*"], "dst": [${ports.map((p) => `"tc:${p}"`).join(', ')}] },
    { "action": "accept", "src": ["tc"], "dst": ["*:*"] },
  ],
}
`;

describe.skipIf(missing !== null)('Tailscale clients and Weft nodes in one tailnet', () => {
  beforeAll(async () => {
    lab = await Lab.create();
    dir = scratchDir(`${lab.id}-tsmix`);
    net = await lab.addSegment();
    const uplink = await lab.addSegment();
    const farNet = await lab.addSegment();
    const privNet = await lab.addSegment();
    const ctl = await lab.addHost('ctl', { segment: net, address: '198.18.0.1/24' });
    const rly = await lab.addHost('rly', { segment: net, address: '198.18.0.2/24' });
    const hosts: Record<'tc' | 'wn' | 'wx' | 'tx', Host> = {
      tc: await lab.addHost('tc', { segment: net, address: '198.18.0.11/24', gateway: TAILSCALE_GATEWAY }),
      wn: await lab.addHost('wn', { segment: net, address: '198.18.0.12/24' }),
      wx: await lab.addHost('wx', { segment: net, address: '198.18.0.13/24' }),
      tx: await lab.addHost('tx', { segment: net, address: '198.18.0.14/24', gateway: TAILSCALE_GATEWAY }),
    };
    const r2 = await lab.addHost('r2', { segment: uplink, address: '198.18.40.1/24' });
    await lab.attach(r2.ns, farNet, 'eth1', '198.18.41.1/24');
    await r2.must(['sysctl', '-qw', 'net.ipv4.ip_forward=1']);
    const far = await lab.addHost('far', { segment: farNet, address: `${FAR}/24`, gateway: '198.18.41.1' });
    for (const x of ['wx', 'tx'] as const) {
      await lab.attach(hosts[x].ns, uplink, 'eth1', `${EXIT_UPLINK[x]}/24`);
      await hosts[x].must(['ip', 'route', 'add', '198.18.41.0/24', 'via', '198.18.40.1']);
    }
    // A subnet router forwards as its admin set it up (Tailscale's docs: enable IP forwarding).
    await hosts.tx.must(['sysctl', '-qw', 'net.ipv4.ip_forward=1']);
    await hosts.tx.must(['sysctl', '-qw', 'net.ipv6.conf.all.forwarding=1']);
    await lab.attach(hosts.tx.ns, privNet, 'eth2', '198.51.100.1/24');
    const priv = await lab.addHost('pv', { segment: privNet, address: `${PRIV}/24` });
    await startTcpServer(far, [80]);
    await startTcpServer(priv, [80]);
    await startTcpServer(hosts.tc, [22, 80]);

    mkdirSync(join(dir, 'relay'));
    relay = new RelayServer(rly, join(dir, 'relay'));
    control = new ControlServer(ctl, dir, 8080, ['--relays', await relay.mapEntry(1, 'lab')]);
    await control.start();
    await relay.start(control);
    await control.cli(['users', 'create', 'alice', '--email', 'alice@example.com']);
    const key = await control.cli(['preauthkey', 'create', '--user', 'alice', '--reusable']);

    for (const name of ['wn', 'wx'] as const) {
      weft[name] = new WeftNode(hosts[name], scratchDir(`${lab.id}-${name}`), lab.name(`t${name}`));
    }
    for (const name of ['tc', 'tx'] as const) {
      ts[name] = new TailscaleNode(hosts[name], scratchDir(`${lab.id}-${name}`), lab.name(`s${name}`));
    }
    await Promise.all([...Object.values(weft), ...Object.values(ts)].map((n) => n.start()));
    await Promise.all([
      weft.wn.up(control.url, key, 'wn'),
      weftCli(weft.wx, [
        'up',
        '--control-url',
        control.url,
        '--insecure-http',
        '--authkey',
        key,
        '--hostname',
        'wx',
        '--advertise-exit-node',
      ]),
      ts.tc.up({ loginServer: control.url, authKey: key, hostname: 'tc' }),
      ts.tx.up({
        loginServer: control.url,
        authKey: key,
        hostname: 'tx',
        advertiseExitNode: true,
        advertiseRoutes: ['198.51.100.0/24'],
      }),
    ]);
  }, 150_000);

  afterAll(async () => {
    const all = [...Object.values(weft), ...Object.values(ts), ...extra];
    await Promise.all(all.map((n) => n.stop()));
    await control?.stop();
    await relay?.stop();
    await lab?.cleanup();
    for (const n of all) removeScratch(n.dir);
    if (dir) removeScratch(dir);
  });

  it('both kinds show in each other’s status, and in `weft-control nodes list` with kind and version', async () => {
    const [tcIp, wnIp] = [await ts.tc.ip4(), await weft.wn.ip4()];
    const wnSeen = await waitFor('tc to list wn', async () => await ts.tc.peer('wn'), 20_000);
    expect(wnSeen.TailscaleIPs).toContain(wnIp);
    const tcSeen = await waitFor('wn to list tc', async () => weftPeer(await weft.wn.status(), 'tc'), 20_000);
    expect(tcSeen.addresses).toContain(tcIp);
    const listed = await controlNodes();
    expect(listed.find((n) => n.name === 'tc')).toMatchObject({
      kind: 'tailscale',
      version: expect.stringMatching(/^1\.102\.5\b/),
    });
    expect(listed.find((n) => n.name === 'tx')).toMatchObject({ kind: 'tailscale' });
    expect(listed.find((n) => n.name === 'wn')).toMatchObject({ kind: 'weft' });
  });

  it('a Tailscale client and a Weft node ping each other, over a direct path on one segment', async () => {
    const [tcIp, wnIp] = [await ts.tc.ip4(), await weft.wn.ip4()];
    const t0 = Date.now();
    await waitFor('tc → wn ping', () => ts.tc.host.ping(wnIp, { count: 1, deadlineS: 1 }), FIRST_CONTACT_MS);
    console.log(`Tailscale client and Weft node on one segment: first ping after ${Date.now() - t0} ms`);
    expect(await weft.wn.host.ping(tcIp, { count: 3, deadlineS: 5 })).toBe(true);
    const seen = await waitFor(
      'wn to report a direct path to tc',
      async () => {
        await weft.wn.host.ping(tcIp, { count: 1, deadlineS: 1 });
        const p = weftPeer(await weft.wn.status(), 'tc');
        return p?.path === 'direct' && p;
      },
      20_000,
    );
    expect(seen.endpoint).toMatch(/^198\.18\.0\.11:\d+$/);
    expect((await ts.tc.peer('wn'))?.CurAddr).toMatch(/^198\.18\.0\.12:\d+$/);
  });

  it('behind endpoint-independent NATs a Tailscale client and a Weft node punch a direct path', async () => {
    const key = await control.cli(['preauthkey', 'create', '--user', 'alice', '--reusable']);
    const behindNat = async (name: 'tm' | 'wm', i: number) =>
      (
        await addRouter(lab, `r${name}`, {
          kind: 'eim',
          wan: net,
          wanAddress: `198.18.0.${100 + i}/24`,
          lanAddress: `198.18.${10 + i}.1/24`,
        })
      ).addHost(name, `198.18.${10 + i}.2/24`);
    const tm = new TailscaleNode(await behindNat('tm', 1), scratchDir(`${lab.id}-tm`), lab.name('stm'));
    const wm = new WeftNode(await behindNat('wm', 2), scratchDir(`${lab.id}-wm`), lab.name('twm'));
    extra.push(tm, wm);
    try {
      await Promise.all([tm.start(), wm.start()]);
      const t0 = Date.now();
      await Promise.all([
        tm.up({ loginServer: control.url, authKey: key, hostname: 'tm' }),
        wm.up(control.url, key, 'wm'),
      ]);
      const [tmIp, wmIp] = [await tm.ip4(), await wm.ip4()];
      await waitFor('tm → wm ping', () => tm.host.ping(wmIp, { count: 1, deadlineS: 1 }), FIRST_CONTACT_MS);
      console.log(`Tailscale client and Weft node behind EIM NATs: up → first ping ${Date.now() - t0} ms`);
      expect(await wm.host.ping(tmIp, { count: 3, deadlineS: 5 })).toBe(true);
      // Each side's endpoint for the other is the other's NAT mapping: a direct path, no relay.
      const seen = await waitFor(
        'wm to report a direct path to tm',
        async () => {
          await wm.host.ping(tmIp, { count: 1, deadlineS: 1 });
          const p = weftPeer(await wm.status(), 'tm');
          return p?.path === 'direct' && p;
        },
        20_000,
      );
      expect(seen.endpoint).toMatch(/^198\.18\.0\.101:\d+$/);
      expect((await tm.peer('wm'))?.CurAddr).toMatch(/^198\.18\.0\.102:\d+$/);
    } finally {
      await Promise.all([tm.stop(), wm.stop()]);
    }
  });

  it('a subnet route a Tailscale client advertises is unused until an admin approves it', async () => {
    await waitFor(
      'tx’s routes at control',
      async () => (await control.cli(['routes', 'list'])).includes('198.51.100.0/24'),
      15_000,
    );
    const listed = JSON.parse(await control.cli(['routes', 'list', '--json'])) as {
      node: string;
      advertised: string[];
      enabled: string[];
    }[];
    expect(listed.find((r) => r.node === 'tx')).toMatchObject({ enabled: [] });
    expect(listed.find((r) => r.node === 'tx')?.advertised).toEqual(
      expect.arrayContaining(['198.51.100.0/24', '0.0.0.0/0', '::/0']),
    );
    await waitFor(
      'wn to reach tx',
      async () => weft.wn.host.ping(await ts.tx.ip4(), { deadlineS: 2 }),
      FIRST_CONTACT_MS,
    );
    expect(weftPeer(await weft.wn.status(), 'tx')?.routes).toBeUndefined();
    expect(await tcpProbe(weft.wn.host, PRIV, 80, 2)).toBeNull();

    await control.cli(['routes', 'approve', 'tx', '198.51.100.0/24']);
    await waitFor(
      'priv through tx',
      async () => (await tcpProbe(weft.wn.host, PRIV, 80, 2)) !== null,
      20_000,
    );
    // tailscaled masquerades subnet traffic: priv sees tx's address on its subnet.
    expect(await tcpProbe(weft.wn.host, PRIV, 80)).toBe('hello 80 from 198.51.100.1');
    expect((await ts.tx.status()).Self?.PrimaryRoutes).toEqual(['198.51.100.0/24']);
  });

  it('a Tailscale client uses a Weft exit node', async () => {
    expect(await tcpProbe(ts.tc.host, FAR, 80, 2)).toBeNull();
    await control.cli(['routes', 'approve', 'wx', '0.0.0.0/0']);
    await waitFor('wx offered to tc', async () => (await ts.tc.peer('wx'))?.ExitNodeOption === true, 15_000);
    await ts.tc.set([`--exit-node=${await weft.wx.ip4()}`]);
    await waitFor('far through wx', async () => (await tcpProbe(ts.tc.host, FAR, 80, 2)) !== null, 20_000);
    expect(await tcpProbe(ts.tc.host, FAR, 80)).toBe(`hello 80 from ${EXIT_UPLINK.wx}`);
    expect((await ts.tc.peer('wx'))?.ExitNode).toBe(true);
    await ts.tc.set(['--exit-node=']);
    await waitFor('far out of reach again', async () => (await tcpProbe(ts.tc.host, FAR, 80, 2)) === null);
  });

  it('a Weft node uses a Tailscale exit node (the target beyond the exit node’s router)', async () => {
    expect(await tcpProbe(weft.wn.host, FAR, 80, 2)).toBeNull();
    await control.cli(['routes', 'approve', 'tx', '0.0.0.0/0']);
    await waitFor(
      'tx offered to wn',
      async () => weftPeer(await weft.wn.status(), 'tx')?.exitNodeOption === true,
      15_000,
    );
    await weftCli(weft.wn, ['set', '--exit-node', 'tx']);
    await waitFor('far through tx', async () => (await tcpProbe(weft.wn.host, FAR, 80, 2)) !== null, 20_000);
    expect(await tcpProbe(weft.wn.host, FAR, 80)).toBe(`hello 80 from ${EXIT_UPLINK.tx}`);
    expect(weftPeer(await weft.wn.status(), 'tx')?.exitNode).toBe(true);
    await weftCli(weft.wn, ['set', '--exit-node=']);
    await waitFor('far out of reach again', async () => (await tcpProbe(weft.wn.host, FAR, 80, 2)) === null);
  });

  it('a denied port is dropped at the receiving Tailscale client; a policy change reaches it', async () => {
    const tcIp = await ts.tc.ip4();
    await setPolicy('tc-80.hujson', tcOnly(tcIp, [80]));
    await waitFor('22 closed', async () => (await tcpProbe(weft.wn.host, tcIp, 22, 2)) === null, 15_000);
    // tc listens on both: no answer on 22 means tc's own filter dropped it (a Weft sender filters nothing).
    expect(await tcpProbe(weft.wn.host, tcIp, 80)).toBe(`hello 80 from ${await weft.wn.ip4()}`);
    expect(await tcpProbe(weft.wn.host, tcIp, 22, 2)).toBeNull();

    // Connect attempts every 50 ms while the policy opens 22; the first answer's time is printed.
    const until = connectUntilOpen(weft.wn.host, tcIp, 22, 20_000);
    await setPolicy('tc-80-22.hujson', tcOnly(tcIp, [80, 22]));
    const set = Date.now();
    const opened = await until;
    expect(opened).not.toBeNull();
    console.log(`policy set → port 22 on the Tailscale client answered after ${(opened as number) - set} ms`);
    expect(await tcpProbe(weft.wn.host, tcIp, 22)).toBe(`hello 22 from ${await weft.wn.ip4()}`);
    await setPolicy('allow-all.hujson', ALLOW_ALL);
  });

  it('a deleted node leaves every map', async () => {
    await waitFor('tc sees tx', async () => (await ts.tc.peer('tx')) !== undefined, 15_000);
    await control.cli(['nodes', 'delete', 'tx']);
    await waitFor(
      'tx gone from every map',
      async () => {
        const [tc, wn, wx] = await Promise.all([ts.tc.status(), weft.wn.status(), weft.wx.status()]);
        return (
          !tsPeers(tc).some((p) => p.HostName === 'tx') &&
          weftPeer(wn, 'tx') === undefined &&
          weftPeer(wx, 'tx') === undefined
        );
      },
      15_000,
    );
    expect((await controlNodes()).map((n) => n.name)).not.toContain('tx');
  });

  it('`weft-control nodes expire` logs the Tailscale client out', async () => {
    const tcIp = await ts.tc.ip4();
    expect(await weft.wn.host.ping(tcIp, { deadlineS: 3 })).toBe(true);
    await control.cli(['nodes', 'expire', 'tc']);
    await waitFor(
      'tc to need login',
      async () => (await ts.tc.status()).BackendState === 'NeedsLogin',
      20_000,
    );
    await waitFor(
      'wn to stop reaching tc',
      async () => !(await weft.wn.host.ping(tcIp, { deadlineS: 1 })),
      15_000,
    );
  });
});
