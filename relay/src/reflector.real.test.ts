import { once } from 'node:events';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type ReflectedEndpoint, RelayConnection } from '@weft/core';
import { generateKeyPair, type KeyPair } from '@weft/protocol';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { type Host, Lab, must, run, sleep, waitFor } from '../../e2e/lab/index.js';
import { type RunningRelay, startRelay } from './relay.js';

// The reflector against real wireguard-go. The reflector runs in this process, in the test's own
// network namespace; nodes run wireguard-go in lab namespaces and reach it over veths:
//
//   root ns: reflector on A.1 ── veth ── node "n" (A.2)                     no NAT
//            B.1 ── veth ── router "rt" (B.2, masquerade) ── LAN ── node "m" 198.18.0.3
//
// A and B are /30s of 198.19.0.0/16 picked per run (their root ends are shared with other runs).
// Needs root, wireguard-go and nftables (scripts/setup.sh), as all lab tests do.

const WG_PORT = 51820;
const third = Math.floor(Math.random() * 255);
const [netA, netB] = [`198.19.${third}`, `198.19.${third + 1}`];
const reflectorIp = `${netA}.1`;

let lab: Lab;
let direct: Host;
let keyDir: string;
let relay: RunningRelay | undefined;
let client: RelayConnection | undefined;
const rootLinks: string[] = [];

/** A veth from the root namespace to `host`, with a /30 on each end. */
async function link(host: Host, suffix: string, net: string): Promise<void> {
  const name = lab.name(suffix);
  await must(['ip', 'link', 'add', name, 'type', 'veth', 'peer', 'name', 'wan0', 'netns', host.ns]);
  rootLinks.push(name);
  await must(['ip', 'addr', 'add', `${net}.1/30`, 'dev', name]);
  await must(['ip', 'link', 'set', name, 'up']);
  await host.must(['ip', 'addr', 'add', `${net}.2/30`, 'dev', 'wan0']);
  await host.must(['ip', 'link', 'set', 'wan0', 'up']);
}

/** Runs wireguard-go on `host` with the reflector as its only peer, as core configures it. */
async function wireguard(host: Host, keys: KeyPair): Promise<string> {
  const r = relay as RunningRelay;
  const iface = lab.name(`wg${host.name}`);
  host.spawn(['wireguard-go', '-f', iface]);
  await waitFor(
    'wireguard-go interface',
    async () => (await host.exec(['ip', 'link', 'show', iface])).code === 0,
  );
  const keyFile = join(keyDir, `${host.name}.key`);
  await writeFile(keyFile, `${keys.privateKey}\n`, { mode: 0o600 });
  await host.must(['ip', 'link', 'set', iface, 'up']);
  // biome-ignore format: the wg command reads best as pairs on a few lines
  await host.must([
    'wg', 'set', iface, 'private-key', keyFile, 'listen-port', String(WG_PORT),
    'peer', r.publicKey, 'endpoint', `${reflectorIp}:${r.reflectorPort}`,
    'persistent-keepalive', '1',
  ]);
  return iface;
}

beforeAll(async () => {
  lab = await Lab.create();
  keyDir = await mkdtemp(join(tmpdir(), 'weft-reflector-'));
  const segment = await lab.addSegment();
  direct = await lab.addHost('n', { segment, address: '198.18.0.2/24' });
  await link(direct, 'a', netA); // before the reflector binds its end
  relay = await startRelay({ keyPair: generateKeyPair(), host: reflectorIp, port: 0, reflectorPort: 0 });
}, 60_000);

afterAll(async () => {
  await client?.close();
  await relay?.close();
  await lab?.cleanup();
  // Deleting a namespace removes its veth pairs; this covers a failure before one was moved.
  for (const name of rootLinks) await run(['ip', 'link', 'del', name]);
  if (keyDir) await rm(keyDir, { recursive: true, force: true });
}, 60_000);

it('learns the WireGuard socket address of a real wireguard-go node and keeps it fresh', async () => {
  const r = relay as RunningRelay;
  const node = direct;
  const keys = generateKeyPair();
  const iface = await wireguard(node, keys);

  // The reflector records exactly the source ip:port of the node's WireGuard socket.
  const expected = `${netA}.2:${WG_PORT}`;
  const first = await waitFor('an observation', async () => r.observations.get(keys.publicKey), 15_000);
  expect(first.endpoint).toBe(expected);

  // wireguard-go completed the handshake with the reflector.
  const handshake = await waitFor('a completed handshake in wg show', async () => {
    const line = (await node.must(['wg', 'show', iface, 'latest-handshakes'])).trim();
    const [peer, seconds] = line.split('\t');
    return peer === r.publicKey && Number(seconds) > 0 ? Number(seconds) : undefined;
  });
  expect(Math.abs(handshake - Date.now() / 1000)).toBeLessThan(30);

  // Its keepalives, which only a completed handshake produces, keep refreshing the observation.
  const keepalivesBefore = r.reflector.stats().keepalives;
  const atBefore = (r.observations.get(keys.publicKey) ?? first).at;
  await sleep(3_500);
  const later = r.observations.get(keys.publicKey);
  expect(later?.endpoint).toBe(expected);
  expect(later?.at).toBeGreaterThan(atBefore);
  expect(r.reflector.stats().keepalives - keepalivesBefore).toBeGreaterThanOrEqual(2);
  expect(r.reflector.stats().handshakes).toBe(1);

  // The node learns it over its relay connection, authenticated by the same node key.
  client = new RelayConnection({
    url: r.url,
    nodePrivateKey: keys.privateKey,
    nodeKey: keys.publicKey,
    relayKey: r.publicKey,
  });
  const reflected = once(client, 'endpoint') as Promise<[ReflectedEndpoint]>;
  client.start();
  const [answer] = await reflected;
  expect(answer.endpoint).toBe(expected);
  expect(Date.parse(answer.observedAt ?? '')).toBeGreaterThan(Date.now() - 5_000);
}, 60_000);

it("sees a NATed node at its router's public mapping of the WireGuard port", async () => {
  const r = relay as RunningRelay;
  const lan = await lab.addSegment();
  const router = await lab.addHost('rt', { segment: lan, address: '198.18.0.1/24' });
  await link(router, 'b', netB);
  await router.must(['ip', 'route', 'add', 'default', 'via', `${netB}.1`]);
  await router.must(['sysctl', '-q', '-w', 'net.ipv4.ip_forward=1']);
  const nat = [
    'table ip nat {',
    '  chain post {',
    '    type nat hook postrouting priority 100;',
    '    oifname "wan0" masquerade',
    '  }',
    '}',
  ];
  const loaded = await router.exec(['nft', '-f', '-'], { input: `${nat.join('\n')}\n` });
  expect(loaded.stderr).toBe('');
  const node = await lab.addHost('m', { segment: lan, address: '198.18.0.3/24', gateway: '198.18.0.1' });
  const keys = generateKeyPair();
  await wireguard(node, keys);

  // The router's public address, and the port masquerading kept (it keeps it when it is free):
  // what a peer outside must dial, not the node's LAN address.
  const seen = await waitFor('an observation', async () => r.observations.get(keys.publicKey), 15_000);
  expect(seen.endpoint).toBe(`${netB}.2:${WG_PORT}`);
  await waitFor(
    'a keepalive through the NAT',
    async () => (r.observations.get(keys.publicKey)?.at ?? 0) > seen.at,
  );
}, 60_000);
