import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  ControlServer,
  type Host,
  Lab,
  REPO,
  RelayServer,
  scratchDir,
  stopTailnet,
  WeftNode,
  waitFor,
} from '../lab/index.js';

// A relay is not trusted with traffic, and serves only its tailnet: real control, a real
// weft-relay that follows control's member list, a real node (helper + wireguard-go + weftd), and
// an attacker host (holding the relay's private key, or speaking the relay protocol itself).
//
//   segment 198.18.0.0/24: ctl .1, relay .2, node n .11, attacker x .66

const PORT = 8000;

let lab: Lab;
let dir: string;
let control: ControlServer;
let relay: RelayServer;
let node: WeftNode;
let attacker: Host;

beforeAll(async () => {
  lab = await Lab.create();
  dir = scratchDir(lab.id);
  const seg = await lab.addSegment();
  const ctlHost = await lab.addHost('ctl', { segment: seg, address: '198.18.0.1/24' });
  const relayHost = await lab.addHost('rly', { segment: seg, address: '198.18.0.2/24' });
  relay = new RelayServer(relayHost, join(dir, 'relay'));
  control = new ControlServer(ctlHost, dir, 8080, ['--relays', await relay.mapEntry(1, 'lab')]);
  await control.start();
  await relay.start(control);
  await control.cli(['users', 'create', 'alice', '--email', 'alice@example.com']);
  const nHost = await lab.addHost('n', { segment: seg, address: '198.18.0.11/24' });
  node = new WeftNode(nHost, scratchDir(`${lab.id}-n`), lab.name('tn'));
  await node.start();
  attacker = await lab.addHost('x', { segment: seg, address: '198.18.0.66/24' });
  const key = await control.cli(['preauthkey', 'create', '--user', 'alice']);
  await node.up(control.url, key, 'n');
});

afterAll(async () => {
  await relay?.stop();
  await stopTailnet({ nodes: node ? [node] : [], control, lab, dir });
});

/** A TCP connect from `host`, bound to `from`, with a time limit; true when it connected. */
async function tcpConnects(host: Host, from: string, to: string, port: number): Promise<boolean> {
  const script = `const s=require('net').connect({host:${JSON.stringify(to)},port:${port},localAddress:${JSON.stringify(from)}});s.on('connect',()=>process.exit(0));s.on('error',()=>process.exit(1));setTimeout(()=>process.exit(2),4000)`;
  return (await host.exec(['node', '-e', script], { timeoutMs: 10_000 })).code === 0;
}

describe('the reflector peer', () => {
  it('holding the relay key completes a WireGuard handshake with a node but delivers no packet into it', async () => {
    const nodeIp = await node.ip4();
    const iface = node.iface;
    // The node has the relay's reflector as a WireGuard peer (that is what the relay key buys).
    await waitFor(
      'the reflector peer on the node',
      async () => (await node.host.must(['wg', 'show', iface, 'peers'])).includes(relay.publicKey),
      30_000,
    );
    const nodeKey = (await node.host.must(['wg', 'show', iface, 'public-key'])).trim();
    const nodePort = (await node.host.must(['wg', 'show', iface, 'listen-port'])).trim();
    // An open port on the node's tunnel address.
    node.host.spawn([
      'node',
      '-e',
      `require('net').createServer(s=>s.end('hello')).listen(${PORT},${JSON.stringify(nodeIp)})`,
    ]);

    // The attacker: wireguard-go with the relay's private key, the node as its peer, and the
    // source addresses a forged packet could use: the old reflector address (inside the tailnet
    // range and inside every `*` source) and an ordinary tailnet address.
    const xIface = lab.name('xwg');
    const keyFile = join(relay.stateDir, 'relay.key');
    expect(readFileSync(keyFile, 'utf8').trim()).not.toBe('');
    attacker.spawn(['wireguard-go', '-f', xIface]);
    await waitFor(
      'attacker interface',
      async () => (await attacker.exec(['ip', 'link', 'show', xIface])).code === 0,
    );
    await attacker.must(['ip', 'addr', 'add', '100.127.255.254/32', 'dev', xIface]);
    await attacker.must(['ip', 'addr', 'add', '100.64.200.1/32', 'dev', xIface]);
    await attacker.must(['ip', 'link', 'set', xIface, 'up']);
    // biome-ignore format: the wg command reads best as pairs on a few lines
    await attacker.must([
      'wg', 'set', xIface, 'private-key', keyFile,
      'peer', nodeKey, 'endpoint', `${node.host.ip}:${nodePort}`,
      'persistent-keepalive', '1', 'allowed-ips', `${nodeIp}/32`,
    ]);
    await attacker.must(['ip', 'route', 'add', `${nodeIp}/32`, 'dev', xIface]);

    // The handshake completes: the node answers the relay key, as it must for the reflector.
    await waitFor(
      'a completed handshake with the node',
      async () => {
        const line = (await attacker.must(['wg', 'show', xIface, 'latest-handshakes'])).trim();
        return Number(line.split('\t')[1]) > 0;
      },
      20_000,
    );
    // …and yet no SYN gets through, from either source address.
    for (const from of ['100.127.255.254', '100.64.200.1']) {
      expect(await tcpConnects(attacker, from, nodeIp, PORT), `connect from ${from}`).toBe(false);
    }
    // The node's WireGuard holds no allowed IP for the relay key: nothing can come from it.
    const allowed = await node.host.must(['wg', 'show', iface, 'allowed-ips']);
    const reflectorLine = allowed.split('\n').find((l) => l.startsWith(relay.publicKey));
    expect(reflectorLine?.split('\t')[1]).toBe('(none)');
    // The listener is real: the node itself reaches it.
    expect(await tcpConnects(node.host, nodeIp, nodeIp, PORT)).toBe(true);
  });
});

/**
 * A relay client in the attacker's namespace (the built relay client and protocol): registers a
 * node key with a pre-auth key first when given one, then connects to the relay and prints
 * `connected` and `closed CODE REASON` lines.
 */
function relayClient(authKey: string | null): { lines: string[] } {
  const script = `
    const P = await import(${JSON.stringify(join(REPO, 'protocol/dist/index.js'))});
    const { RelayConnection } = await import(${JSON.stringify(join(REPO, 'core/dist/paths/relay-client.js'))});
    const [machine, node] = [P.generateKeyPair(), P.generateKeyPair()];
    const authKey = ${JSON.stringify(authKey)};
    if (authKey !== null) {
      const ctl = ${JSON.stringify(control.url)};
      const { publicKey } = await (await fetch(ctl + P.CONTROL_KEY_PATH)).json();
      const nodeKeyProof = P.nodeKeyPossessionProof({ nodePrivateKey: node.privateKey,
        controlPublicKey: publicKey, machineKey: machine.publicKey });
      const body = JSON.stringify({ nodeKey: node.publicKey, hostname: 'probe', os: 'linux', authKey, nodeKeyProof });
      const sig = P.signMachineRequest({ machinePrivateKey: machine.privateKey, controlPublicKey: publicKey,
        method: 'POST', path: P.REGISTER_PATH, body });
      const res = await fetch(ctl + P.REGISTER_PATH, { method: 'POST', body,
        headers: { 'content-type': 'application/json', [P.MACHINE_AUTH_HEADER]: sig } });
      console.log('registered ' + res.status);
    }
    const c = new RelayConnection({ url: ${JSON.stringify(relay.url)}, nodePrivateKey: node.privateKey,
      nodeKey: node.publicKey, relayKey: ${JSON.stringify(relay.publicKey)}, backoff: { baseMs: 5000 } });
    c.on('up', () => console.log('connected'));
    c.on('closed', (d) => console.log('closed ' + d.code + ' ' + d.reason));
    c.start();
    setTimeout(() => process.exit(0), 30000);
  `;
  const child = attacker.spawn(['node', '--input-type=module', '-e', script]);
  const lines: string[] = [];
  let buffered = '';
  child.stdout?.on('data', (d: Buffer) => {
    buffered += d.toString();
    const parts = buffered.split('\n');
    buffered = parts.pop() ?? '';
    lines.push(...parts);
  });
  child.stderr?.on('data', (d: Buffer) => lines.push(`stderr: ${d.toString().trim()}`));
  return { lines };
}

describe('the relay serves only the tailnet', () => {
  it('refuses a node key control does not know, with a clear close code', async () => {
    const stranger = relayClient(null);
    const line = await waitFor(
      'the stranger to be refused',
      async () => stranger.lines.find((l) => l.startsWith('closed') || l.startsWith('stderr')),
      20_000,
    );
    expect(line).toBe('closed 4004 node key is not in the tailnet');
    expect(stranger.lines).not.toContain('connected');
  });

  it('lets a registered node in and closes its connection as soon as the node is deleted', async () => {
    // The real node connected through the relay (its reflector peer shows it, see above).
    const key = await control.cli(['preauthkey', 'create', '--user', 'alice']);
    const probe = relayClient(key);
    await waitFor(
      'the registered probe to connect',
      async () => probe.lines.includes('connected') || probe.lines.find((l) => l.startsWith('stderr')),
      20_000,
    );
    expect(probe.lines.slice(0, 2)).toEqual(['registered 200', 'connected']);
    const started = Date.now();
    await control.cli(['nodes', 'delete', 'probe']);
    await waitFor(
      'the relay to close the deleted node',
      async () => probe.lines.includes('closed 4004 node removed from the tailnet'),
      10_000,
    );
    console.log(`node deleted → relay connection closed in ${Date.now() - started} ms (incl. the CLI)`);
  });
});
