import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  addRouter,
  ControlServer,
  type Host,
  Lab,
  makeLabCa,
  RelayServer,
  removeScratch,
  scratchDir,
  startTlsFront,
  TAILSCALE_GATEWAY,
  TailscaleNode,
  tailscaleMissing,
  tsPeers,
  waitFor,
} from '../lab/index.js';

// The official Tailscale client (real tailscaled in TUN mode and the real tailscale CLI, built from
// tailscale.com v1.102.5) joins a Weft tailnet: real weft-control and weft-relay on lab hosts.
//
//   "internet" 198.18.0.0/24: control .1 (and its TLS front on :443), relay .2, t1 .11, t2 .12,
//                             NAT routers .101 and .102 (endpoint-dependent: a new port per peer)
//   t3 198.18.11.2 behind the first router, t4 198.18.12.2 behind the second
//
// t1 signs in through the TLS front (https, the lab CA in SSL_CERT_FILE), the others over plain
// http. t1 and t2 share a segment and must go direct; t3 and t4 can only meet through the relay.

const missing = tailscaleMissing();
if (missing) console.log(`tailscale-lab: skipped: ${missing}`);

let lab: Lab;
let dir: string;
let control: ControlServer;
let relay: RelayServer;
const ts: Record<'t1' | 't2' | 't3' | 't4', TailscaleNode> = {} as never;

describe.skipIf(missing !== null)('official Tailscale clients on a Weft tailnet (real tailscaled)', () => {
  beforeAll(async () => {
    lab = await Lab.create();
    dir = scratchDir(`${lab.id}-tslab`);
    const net = await lab.addSegment();
    const ctl = await lab.addHost('ctl', { segment: net, address: '198.18.0.1/24' });
    const rly = await lab.addHost('rly', { segment: net, address: '198.18.0.2/24' });
    mkdirSync(join(dir, 'relay'));
    relay = new RelayServer(rly, join(dir, 'relay'));
    control = new ControlServer(ctl, dir, 8080, ['--relays', await relay.mapEntry(1, 'lab')]);
    await control.start();
    await relay.start(control);
    const ca = await makeLabCa(dir, ctl.ip);
    await startTlsFront(ctl, ca, `${ctl.ip}:443`, `${ctl.ip}:8080`);

    const hosts: Record<keyof typeof ts, Host> = {
      t1: await lab.addHost('t1', { segment: net, address: '198.18.0.11/24', gateway: TAILSCALE_GATEWAY }),
      t2: await lab.addHost('t2', { segment: net, address: '198.18.0.12/24', gateway: TAILSCALE_GATEWAY }),
      t3: await (
        await addRouter(lab, 'r3', {
          kind: 'edm',
          wan: net,
          wanAddress: '198.18.0.101/24',
          lanAddress: '198.18.11.1/24',
        })
      ).addHost('t3', '198.18.11.2/24'),
      t4: await (
        await addRouter(lab, 'r4', {
          kind: 'edm',
          wan: net,
          wanAddress: '198.18.0.102/24',
          lanAddress: '198.18.12.1/24',
        })
      ).addHost('t4', '198.18.12.2/24'),
    };
    for (const name of Object.keys(hosts) as (keyof typeof ts)[]) {
      const env = name === 't1' ? { SSL_CERT_FILE: ca.caFile } : {};
      ts[name] = new TailscaleNode(hosts[name], scratchDir(`${lab.id}-${name}`), lab.name(`s${name}`), env);
    }
    await Promise.all(Object.values(ts).map((n) => n.start()));
    await control.cli(['users', 'create', 'alice', '--email', 'alice@example.com']);
  }, 120_000);

  afterAll(async () => {
    await Promise.all(Object.values(ts).map((n) => n.stop()));
    await control?.stop();
    await relay?.stop();
    await lab?.cleanup();
    for (const n of Object.values(ts)) removeScratch(n.dir);
    if (dir) removeScratch(dir);
  });

  it('joins with a pre-auth key, over https through the TLS front and over plain http', async () => {
    const key = await control.cli(['preauthkey', 'create', '--user', 'alice', '--reusable']);
    await ts.t1.up({ loginServer: 'https://198.18.0.1', authKey: key, hostname: 't1' });
    await ts.t2.up({ loginServer: control.url, authKey: key, hostname: 't2' });
    for (const n of [ts.t1, ts.t2]) {
      const st = await n.status();
      expect(st.BackendState).toBe('Running');
      expect(await n.ip4()).toMatch(/^100\.(6[4-9]|[7-9]\d|1[01]\d|12[0-7])\.\d+\.\d+$/);
    }
    const listed = await control.cli(['nodes', 'list']);
    expect(listed).toMatch(/\bt1\b/);
    expect(listed).toMatch(/\bt2\b/);
  });

  it('`tailscale status` and `tailscale ip` show the peer and its addresses', async () => {
    const [ip1, ip2] = [await ts.t1.ip4(), await ts.t2.ip4()];
    const st1 = await waitFor('t1 to see t2', async () => {
      const s = await ts.t1.status();
      return tsPeers(s).some((p) => p.HostName === 't2') && s;
    });
    expect(st1.Self?.HostName).toBe('t1');
    expect(st1.Self?.TailscaleIPs).toContain(ip1);
    const t2 = tsPeers(st1).find((p) => p.HostName === 't2');
    expect(t2?.TailscaleIPs).toContain(ip2);
    expect(t2?.Online).toBe(true);
    // The human-readable status names the peer with its address, as a user reads it.
    expect(await ts.t1.mustCli(['status'])).toMatch(new RegExp(`${ip2.replaceAll('.', '\\.')}\\s+t2\\b`));
    // `tailscale ip PEER` resolves a peer's name to its addresses through the netmap.
    expect((await ts.t1.mustCli(['ip', '-4', 't2'])).trim()).toBe(ip2);
  });

  it('netcheck gets UDP from the relay’s STUN port (in the DERP map control sends) and picks its region', async () => {
    const report = await ts.t2.mustCli(['netcheck'], 30_000);
    expect(report).toMatch(/\* UDP: true/);
    expect(report).toMatch(/\* IPv4: yes, 198\.18\.0\.12:\d+/);
    expect(report).toMatch(/\* Nearest DERP: lab/);
  });

  it('two clients on one segment ping each other over a direct path', async () => {
    const ip2 = await ts.t2.ip4();
    await waitFor('t1 → t2 ping', () => ts.t1.host.ping(ip2, { count: 1, deadlineS: 1 }), 20_000);
    expect(await ts.t2.host.ping(await ts.t1.ip4(), { count: 3, deadlineS: 5 })).toBe(true);
    const pong = await waitFor(
      'a direct disco pong t1 → t2',
      async () => {
        const p = await ts.t1.tsPing(ip2);
        return p?.via === 'direct' && p;
      },
      20_000,
    );
    expect(pong.detail).toMatch(/^198\.18\.0\.12:\d+$/);
    expect((await ts.t1.peer('t2'))?.CurAddr).toMatch(/^198\.18\.0\.12:\d+$/);
  });

  it('two clients behind endpoint-dependent NATs reach each other through the relay (DERP)', async () => {
    const key = await control.cli(['preauthkey', 'create', '--user', 'alice', '--reusable']);
    await Promise.all([
      ts.t3.up({ loginServer: control.url, authKey: key, hostname: 't3' }),
      ts.t4.up({ loginServer: control.url, authKey: key, hostname: 't4' }),
    ]);
    const ip4 = await ts.t4.ip4();
    await waitFor('t3 → t4 ping', () => ts.t3.host.ping(ip4, { count: 1, deadlineS: 1 }), 30_000);
    expect(await ts.t4.host.ping(await ts.t3.ip4(), { count: 3, deadlineS: 5 })).toBe(true);
    const pong = await ts.t3.tsPing(ip4);
    expect(pong).toEqual({ via: 'derp', detail: expect.any(String) });
    const peer = await ts.t3.peer('t4');
    expect(peer?.CurAddr).toBe('');
    expect(peer?.Relay).toBe(pong?.detail);
    // Each client's home relay is Weft's relay, found through the DERP map control sent.
    expect((await ts.t3.status()).Self?.Relay).toBe(pong?.detail);
  });
});
