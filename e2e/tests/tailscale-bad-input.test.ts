import { mkdirSync, readFileSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  ControlServer,
  Lab,
  REPO,
  RelayServer,
  removeScratch,
  scratchDir,
  TailscaleNode,
  tailscaleMissing,
  waitFor,
} from '../lab/index.js';
import { joinRoot } from '../lab/signin.js';

// Bad input to the real weft-control process (built, in a lab namespace) on its Tailscale side,
// while official Tailscale clients (real tailscaled v1.102.5) use it: garbage and broken Noise
// handshakes on /ts2021, an oversized map request and a client below the supported version (from
// control's independent test client), and the real client handed a wrong control key by a lying
// /key. Each gets a clear error, nothing is stored, and the server stays up for everyone else.
// The root namespace joins the lab segment so this process can talk to control directly.

const missing = tailscaleMissing();
if (missing) console.log(`tailscale-bad-input: skipped: ${missing}`);

/** control/src/testing/tailscale-client.ts, loaded from source as control's own tests use it. */
interface TsTestClientModule {
  initiate(machinePrivate: Uint8Array, controlPublic: Uint8Array, version: number): { message: Uint8Array };
  TsTestClient: new (
    url: string,
    version?: number,
  ) => {
    nodeKey: string;
    register(extra?: Record<string, unknown>, hostname?: string): Promise<Record<string, unknown>>;
    connection(): Promise<{ post(path: string, body: unknown): Promise<{ status: number; body: Buffer }> }>;
    close(): void;
  };
}

let lab: Lab;
let dir: string;
let control: ControlServer;
let relay: RelayServer;
let client: TsTestClientModule;
const ts: TailscaleNode[] = [];
let subnet = '';

/** Sends `bytes` to control's port and returns everything it answers before closing (5 s at most). */
function raw(bytes: string | Buffer): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = net.connect(control.port, control.host.ip);
    let got = '';
    const timer = setTimeout(() => s.destroy(), 5000);
    s.on('data', (d) => {
      got += d.toString('latin1');
    });
    s.on('close', () => {
      clearTimeout(timer);
      resolve(got);
    });
    s.on('error', reject);
    s.write(bytes);
  });
}

const upgrade = (handshake: string) =>
  `POST /ts2021 HTTP/1.1\r\nHost: ${control.host.ip}\r\nUpgrade: tailscale-control-protocol\r\n` +
  `Connection: upgrade\r\nX-Tailscale-Handshake: ${handshake}\r\n\r\n`;

async function controlKey(): Promise<Uint8Array> {
  const j = (await (await fetch(`${control.url}/key?v=130`)).json()) as { publicKey: string };
  return new Uint8Array(Buffer.from(j.publicKey.slice('mkey:'.length), 'hex'));
}

async function nodeNames(): Promise<string[]> {
  return (JSON.parse(await control.cli(['nodes', 'list', '--json'])) as { name: string }[]).map(
    (n) => n.name,
  );
}

/**
 * A lying front for control on `port` of its host: /key answers a made-up key, everything else
 * (the /ts2021 upgrade) goes through unchanged to control, as a tampered or stale key would.
 */
const LYING_KEY_FRONT = `
const [host, port, target] = process.argv.slice(1);
const net = require('node:net');
const fake = 'mkey:' + require('node:crypto').randomBytes(32).toString('hex');
net.createServer((c) => {
  c.once('data', (first) => {
    if (/^GET \\/key[? ]/.test(first.toString('latin1'))) {
      const body = JSON.stringify({ legacyPublicKey: 'mkey:' + '0'.repeat(64), publicKey: fake });
      c.end('HTTP/1.1 200 OK\\r\\nContent-Type: application/json\\r\\nContent-Length: ' + body.length + '\\r\\nConnection: close\\r\\n\\r\\n' + body);
      return;
    }
    const up = net.connect(Number(target), host, () => { up.write(first); c.pipe(up).pipe(c); });
    const end = () => { c.destroy(); up.destroy(); };
    up.on('error', end); c.on('error', end); up.on('close', end); c.on('close', end);
  });
}).listen(Number(port), host, () => console.log('listening'));
`;

describe.skipIf(missing !== null)('bad input on the Tailscale side of the real control', () => {
  beforeAll(async () => {
    client = (await import(
      pathToFileURL(join(REPO, 'control', 'src', 'testing', 'tailscale-client.ts')).href
    )) as TsTestClientModule;
    lab = await Lab.create();
    dir = scratchDir(`${lab.id}-tsbad`);
    const seg = await lab.addSegment();
    subnet = (await joinRoot(lab, seg)).net;
    const ctl = await lab.addHost('ctl', { segment: seg, address: `${subnet}.1/24` });
    const rly = await lab.addHost('rly', { segment: seg, address: `${subnet}.2/24` });
    mkdirSync(join(dir, 'relay'));
    relay = new RelayServer(rly, join(dir, 'relay'));
    control = new ControlServer(ctl, dir, 8080, ['--relays', await relay.mapEntry(1, 'lab')]);
    await control.start();
    await relay.start(control);
    const liar = ctl.spawn(['node', '-e', LYING_KEY_FRONT, ctl.ip, '8081', '8080']);
    await waitFor('the lying front', async () => {
      const line = await new Promise<string>((r) => liar.stdout?.once('data', (d) => r(String(d))));
      return line.includes('listening');
    });
    await control.cli(['users', 'create', 'alice', '--email', 'alice@example.com']);
    for (const i of [1, 2, 3]) {
      const host = await lab.addHost(`t${i}`, {
        segment: seg,
        address: `${subnet}.1${i}/24`,
        gateway: `${subnet}.254`,
      });
      const node = new TailscaleNode(host, scratchDir(`${lab.id}-t${i}`), lab.name(`st${i}`));
      await node.start();
      ts.push(node);
    }
    const key = await control.cli(['preauthkey', 'create', '--user', 'alice', '--reusable']);
    await Promise.all(
      ts.slice(0, 2).map((n, i) => n.up({ loginServer: control.url, authKey: key, hostname: `t${i + 1}` })),
    );
  }, 120_000);

  afterAll(async () => {
    await Promise.all(ts.map((n) => n.stop()));
    await control?.stop();
    await relay?.stop();
    await lab?.cleanup();
    for (const n of ts) removeScratch(n.dir);
    if (dir) removeScratch(dir);
  });

  it('garbage, a handshake that is not base64, one for another key and a truncated one: 400 with the reason', async () => {
    const before = await nodeNames();
    expect(await raw('GARBAGE\r\n\r\n')).toMatch(/^HTTP\/1.1 400/);
    expect(await raw(Buffer.alloc(4096, 0xa5))).toMatch(/^(HTTP\/1.1 400|)/);
    expect(await raw(upgrade('%%%not-base64%%%'))).toMatch(/^HTTP\/1.1 400[\s\S]*not base64/);
    const machine = new Uint8Array(32).fill(7);
    const otherKey = client.initiate(machine, new Uint8Array(32).fill(9), 1);
    expect(await raw(upgrade(Buffer.from(otherKey.message).toString('base64')))).toMatch(
      /^HTTP\/1.1 400[\s\S]*fetch \/key again/,
    );
    const good = client.initiate(machine, await controlKey(), 1);
    expect(await raw(upgrade(Buffer.from(good.message.slice(0, 50)).toString('base64')))).toMatch(
      /^HTTP\/1.1 400[\s\S]*wrong handshake initiation size/,
    );
    expect(await nodeNames()).toEqual(before);
  });

  it('an oversized map request gets 413; a client below the supported version a clear refusal', async () => {
    const before = await nodeNames();
    const old = new client.TsTestClient(control.url, 100);
    const refused = await old.register({
      Auth: { AuthKey: await control.cli(['preauthkey', 'create', '--user', 'alice']) },
    });
    expect(refused.MachineAuthorized).toBe(false);
    expect(String(refused.Error)).toMatch(/too old/);
    old.close();
    expect(await nodeNames()).toEqual(before);

    const probe = new client.TsTestClient(control.url);
    const key = await control.cli(['preauthkey', 'create', '--user', 'alice']);
    expect(await probe.register({ Auth: { AuthKey: key } }, 'probe')).toMatchObject({
      MachineAuthorized: true,
    });
    const huge = await (await probe.connection()).post('/machine/map', {
      Version: 130,
      NodeKey: probe.nodeKey,
      Hostinfo: { Hostname: 'x'.repeat(1024 * 1024) },
    });
    expect(huge.status).toBe(413);
    probe.close();
    await control.cli(['nodes', 'delete', 'probe']);
  });

  it('the official client handed a wrong control key cannot join; control refuses it and stores nothing', async () => {
    const t3 = ts[2] as TailscaleNode;
    const key = await control.cli(['preauthkey', 'create', '--user', 'alice']);
    const lied = `http://${control.host.ip}:8081`;
    const refusals = () =>
      readFileSync(join(dir, 'control.log'), 'utf8').match(/refused handshake/g)?.length ?? 0;
    const refusedBefore = refusals();
    await expect(t3.up({ loginServer: lied, authKey: key, hostname: 't3', timeoutS: 8 })).rejects.toThrow();
    expect((await t3.status()).BackendState).not.toBe('Running');
    expect(await nodeNames()).not.toContain('t3');
    expect(refusals()).toBeGreaterThan(refusedBefore);
    // Pointed at control itself, the same client joins with the same (unused) key: restarted, as
    // after a failed Noise dial tailscaled dials only port 443 for a while (control is on 8080).
    await t3.stop();
    await t3.start();
    await t3.up({ loginServer: control.url, authKey: key, hostname: 't3' });
    expect(await nodeNames()).toContain('t3');
  });

  it('through all of it control stayed up: the clients joined before still ping each other', async () => {
    expect((await fetch(`${control.url}/healthz`)).status).toBe(200);
    const [t1, t2] = ts as [TailscaleNode, TailscaleNode];
    expect(await t1.host.ping(await t2.ip4(), { count: 2, deadlineS: 4 })).toBe(true);
    expect((await t1.status()).BackendState).toBe('Running');
  });
});
