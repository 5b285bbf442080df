import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ControlServer, type Host, Lab, scratchDir, stopTailnet, WeftNode, waitFor } from '../lab/index.js';
import { connectUntilOpen } from './helper-harness.js';

// Access policy end to end: real control, real helpers (wireguard-go, nftables) and engines on lab
// hosts. Alice (group A) may reach the web server (tag:web) on 443 only; Bob (group B) may reach
// nothing, so he is not even in its netmap. Changing the policy reaches the nodes' packet filters
// without restarting anything; a policy that fails its own tests changes nothing. Tests run in order.

let lab: Lab;
let dir: string;
let control: ControlServer;
const nodes: Record<'a' | 'b' | 'web', WeftNode> = {} as never;
let webIp = '';

/** Group A may reach tag:web on `open`; the policy's own tests say A reaches `accept` and not `deny`. */
const policy = (open: number[], accept: number[], deny: number[]) => {
  const web = (ports: number[]) => ports.map((p) => `"tag:web:${p}"`).join(', ');
  return `{
  // Group A: people who may use the web server. Group B: everyone else.
  "groups": {
    "group:a": ["alice@example.com"],
    "group:b": ["bob@example.com"],
  },
  "tagOwners": { "tag:web": ["group:a"] },
  "acls": [
    { "action": "accept", "src": ["group:a"], "dst": [${web(open)}] },
  ],
  "tests": [
    { "src": "alice@example.com", "accept": [${web(accept)}], "deny": [${web(deny)}] },
    { "src": "group:b", "deny": ["tag:web:443", "tag:web:22"] },
  ],
}
`;
};

const WEB_443 = policy([443], [443], [22, 80]);
const WEB_443_22 = policy([443, 22], [443, 22], [80]);
/** Opens 80 to group A while its own test says 80 must stay closed. */
const FAILS_ITS_TEST = policy([443, 22, 80], [443, 22], [80]);

/** A TCP connect with a deadline, from inside a host: 'open' (the server answered), 'refused' or 'timeout'. */
const CONNECT = `
const [ip, port, ms] = process.argv.slice(1);
const s = require('node:net').connect({ host: ip, port: Number(port) });
setTimeout(() => { console.log('timeout'); process.exit(0); }, Number(ms));
s.on('data', (d) => { console.log(String(d).startsWith('weft-') ? 'open' : 'unexpected'); process.exit(0); });
s.on('error', (e) => { console.log(e.code === 'ECONNREFUSED' ? 'refused' : String(e.code)); process.exit(0); });
`;

async function connect(from: Host, ip: string, port: number, ms = 1500): Promise<string> {
  const r = await from.exec(['node', '-e', CONNECT, ip, String(port), String(ms)], { timeoutMs: ms + 5000 });
  if (r.code !== 0) throw new Error(`probe failed: ${r.stderr}`);
  return r.stdout.trim();
}

async function setPolicy(name: string, text: string): Promise<void> {
  const file = join(dir, name);
  writeFileSync(file, text);
  await control.cli(['policy', 'set', file]);
}

/** The node's WireGuard public key, read from its interface. */
async function wgKey(node: WeftNode): Promise<string> {
  return (await node.host.must(['wg', 'show', node.iface, 'public-key'])).trim();
}

/** The public keys of the WireGuard peers on the node's interface. */
async function wgPeers(node: WeftNode): Promise<string[]> {
  return (await node.host.must(['wg', 'show', node.iface, 'peers'])).split('\n').filter(Boolean);
}

async function peerNames(node: WeftNode): Promise<string[]> {
  return (await node.status()).peers.map((p) => p.name).sort();
}

beforeAll(async () => {
  lab = await Lab.create();
  dir = scratchDir(lab.id);
  const seg = await lab.addSegment();
  const ctlHost = await lab.addHost('ctl', { segment: seg, address: '198.18.0.1/24' });
  control = new ControlServer(ctlHost, dir);
  await control.start();
  await control.cli(['users', 'create', 'alice', '--email', 'alice@example.com']);
  await control.cli(['users', 'create', 'bob', '--email', 'bob@example.com']);
  const hosts = { a: '198.18.0.11/24', b: '198.18.0.12/24', web: '198.18.0.13/24' } as const;
  for (const [name, address] of Object.entries(hosts) as [keyof typeof hosts, string][]) {
    const host = await lab.addHost(name, { segment: seg, address });
    nodes[name] = new WeftNode(host, scratchDir(`${lab.id}-${name}`), lab.name(`t${name}`));
    await nodes[name].start();
  }
  const key = (...args: string[]) => control.cli(['preauthkey', 'create', ...args]);
  await nodes.a.up(control.url, await key('--user', 'alice'), 'a');
  await nodes.b.up(control.url, await key('--user', 'bob'), 'b');
  await nodes.web.up(control.url, await key('--user', 'alice', '--tags', 'tag:web'), 'web');
  webIp = await nodes.web.ip4();

  // The web server: answers on 22, 80 and 443 (every address, inside its namespace only). A
  // client that exits with connections still open resets them (connectUntilOpen leaves its other
  // attempts): that error is ignored, since unhandled it would kill the server for later tests.
  nodes.web.host.spawn([
    'node',
    '-e',
    "for (const p of [22, 80, 443]) require('node:net').createServer((s) => { s.on('error', () => {}); s.end('weft-' + p + '\\n'); }).listen(p);",
  ]);
  await waitFor(
    'the web server to listen',
    async () => (await connect(nodes.web.host, '127.0.0.1', 443)) === 'open',
  );
});

afterAll(async () => {
  await stopTailnet({ nodes: Object.values(nodes), control, lab, dir });
});

describe('an access policy enforced on the nodes', () => {
  it('before any policy every node reaches every port of every other (allow-all)', async () => {
    await waitFor('b reaches web', () => nodes.b.host.ping(webIp, { count: 1, deadlineS: 1 }), 20_000);
    expect(await connect(nodes.a.host, webIp, 22)).toBe('open');
    expect(await connect(nodes.b.host, webIp, 443)).toBe('open');
    expect(await peerNames(nodes.b)).toEqual(['a', 'web']);
  });

  it('group A reaches tag:web on 443 only; group B is in no one’s netmap and cannot handshake', async () => {
    await setPolicy('web-443.hujson', WEB_443);
    await waitFor('b out of every netmap', async () => (await peerNames(nodes.b)).length === 0, 2000);
    await waitFor('web sees a only', async () => (await peerNames(nodes.web)).join() === 'a', 2000);
    expect(await peerNames(nodes.a)).toEqual(['web']);

    expect(await connect(nodes.a.host, webIp, 443)).toBe('open');
    // The web server's filter drops them: the connection never completes.
    expect(await connect(nodes.a.host, webIp, 22)).toBe('timeout');
    expect(await connect(nodes.a.host, webIp, 80)).toBe('timeout');

    // Neither side has the other as a WireGuard peer: nothing is sent, nothing would be accepted.
    expect(await nodes.b.host.ping(webIp, { count: 2, deadlineS: 2 })).toBe(false);
    expect(await connect(nodes.b.host, webIp, 443)).not.toBe('open');
    const bKey = await wgKey(nodes.b);
    const webKey = await wgKey(nodes.web);
    expect(await wgPeers(nodes.web)).not.toContain(bKey);
    expect(await wgPeers(nodes.b)).not.toContain(webKey);
    expect(await wgPeers(nodes.web)).toEqual([await wgKey(nodes.a)]);
  });

  it('changing the policy opens 22 within 1 s without restarting anything', async () => {
    const until = connectUntilOpen(nodes.a.host, webIp, 22, 8000);
    await setPolicy('web-443-22.hujson', WEB_443_22);
    const set = Date.now();
    const opened = await until;
    expect(opened).not.toBeNull();
    const ms = (opened as number) - set;
    console.log(`policy set → port 22 answered after ${ms} ms`);
    expect(ms).toBeLessThan(1000);
    expect(await connect(nodes.a.host, webIp, 443)).toBe('open');
    expect(await connect(nodes.a.host, webIp, 80)).toBe('timeout');
  });

  it('a policy that fails its own tests is refused, and traffic keeps flowing under the old one', async () => {
    const file = join(dir, 'fails.hujson');
    writeFileSync(file, FAILS_ITS_TEST);
    const refused = await control.cli(['policy', 'set', file]).catch((e: Error) => e);
    expect(refused).toBeInstanceOf(Error);
    expect((refused as Error).message).toMatch(
      /line \d+, column \d+: test failed: "alice@example.com" can reach "tag:web:80", but the test says it should not/,
    );
    expect(await control.cli(['policy', 'get'])).toBe(WEB_443_22.trim());

    expect(await connect(nodes.a.host, webIp, 443)).toBe('open');
    expect(await connect(nodes.a.host, webIp, 22)).toBe('open');
    expect(await connect(nodes.a.host, webIp, 80)).toBe('timeout');
    expect(await peerNames(nodes.b)).toEqual([]);
  });
});
