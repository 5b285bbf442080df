import { once } from 'node:events';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { generateKeyPair, REFLECTOR_ALLOWED_IP } from '@weft/protocol';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { type Host, Lab, must, run, sleep, waitFor } from '../../e2e/lab/index.js';
import type { ReflectedEndpoint } from './client.js';
import { RelayClient } from './client.js';
import { type RunningRelay, startRelay } from './relay.js';

// The reflector against real wireguard-go: a node in a lab namespace runs wireguard-go with the
// reflector as its peer, reached over a veth from the test's own namespace, where the reflector
// runs in this process. Needs root and wireguard-go (scripts/setup.sh), as all lab tests do.

let lab: Lab;
let node: Host;
let relay: RunningRelay | undefined;
let client: RelayClient | undefined;
let keyDir: string;
let rootIf: string;
const nodeKeys = generateKeyPair();
const NODE_WG_PORT = 51820;
// A /30 of 198.18.0.0/15 picked per run, since its root-namespace end is shared with other runs.
const subnet = `198.19.${Math.floor(Math.random() * 256)}`;
const reflectorIp = `${subnet}.1`;
const nodeIp = `${subnet}.2`;

beforeAll(async () => {
  lab = await Lab.create();
  const segment = await lab.addSegment();
  node = await lab.addHost('n', { segment, address: '198.18.0.2/24' });
  rootIf = lab.name('r');
  await must(['ip', 'link', 'add', rootIf, 'type', 'veth', 'peer', 'name', 'eth1', 'netns', node.ns]);
  await must(['ip', 'addr', 'add', `${reflectorIp}/30`, 'dev', rootIf]);
  await must(['ip', 'link', 'set', rootIf, 'up']);
  await node.must(['ip', 'addr', 'add', `${nodeIp}/30`, 'dev', 'eth1']);
  await node.must(['ip', 'link', 'set', 'eth1', 'up']);
  keyDir = await mkdtemp(join(tmpdir(), 'weft-reflector-'));
  relay = await startRelay({ keyPair: generateKeyPair(), host: reflectorIp, port: 0, reflectorPort: 0 });
}, 60_000);

afterAll(async () => {
  await client?.close();
  await relay?.close();
  await lab?.cleanup();
  // Deleting the node's namespace removes the veth pair; this covers a failure before that.
  if (rootIf) await run(['ip', 'link', 'del', rootIf]);
  if (keyDir) await rm(keyDir, { recursive: true, force: true });
}, 60_000);

it('learns the WireGuard socket mapping of a real wireguard-go node and keeps it fresh', async () => {
  const r = relay as RunningRelay;
  const iface = lab.name('wg');
  node.spawn(['wireguard-go', '-f', iface]);
  await waitFor(
    'wireguard-go interface',
    async () => (await node.exec(['ip', 'link', 'show', iface])).code === 0,
  );
  const keyFile = join(keyDir, 'node.key');
  await writeFile(keyFile, `${nodeKeys.privateKey}\n`, { mode: 0o600 });
  await node.must(['ip', 'link', 'set', iface, 'up']);
  await node.must([
    'wg', 'set', iface, 'private-key', keyFile, 'listen-port', String(NODE_WG_PORT),
    'peer', r.publicKey, 'endpoint', `${reflectorIp}:${r.reflectorPort}`,
    'persistent-keepalive', '1', 'allowed-ips', REFLECTOR_ALLOWED_IP,
  ]); // biome-ignore format: one wg argument pair per line would hide the command

  // The reflector records exactly the source ip:port of the node's WireGuard socket.
  const expected = `${nodeIp}:${NODE_WG_PORT}`;
  const first = await waitFor('an observation', async () => r.observations.get(nodeKeys.publicKey), 15_000);
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
  const atBefore = (r.observations.get(nodeKeys.publicKey) ?? first).at;
  await sleep(3_500);
  const later = r.observations.get(nodeKeys.publicKey);
  expect(later?.endpoint).toBe(expected);
  expect(later?.at).toBeGreaterThan(atBefore);
  expect(r.reflector.stats().keepalives - keepalivesBefore).toBeGreaterThanOrEqual(2);
  expect(r.reflector.stats().handshakes).toBe(1);

  // The node learns it over its relay connection, authenticated by the same node key.
  client = new RelayClient({ url: r.url, privateKey: nodeKeys.privateKey, relayKey: r.publicKey });
  const reflected = once(client, 'endpoint') as Promise<[ReflectedEndpoint]>;
  client.start();
  const [answer] = await reflected;
  expect(answer.endpoint).toBe(expected);
  expect(Date.parse(answer.observedAt ?? '')).toBeGreaterThan(Date.now() - 5_000);
}, 60_000);
