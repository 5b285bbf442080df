import { mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  generateKeyPair,
  type NetMap,
  nodeKeyPossessionProof,
  publicKeyOf,
  type WatchEvent,
} from '@weft/protocol';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { HelperClient } from '../helper/client.js';
import { silentLogger, stderrLogger } from '../log/logger.js';
import type { PortMappingOptions } from '../paths/connectivity.js';
import type { ProbeRequest, Underlay } from '../paths/mtu.js';
import { type GrantedMapping, startPortMappingGateway } from '../paths/port-mapping/test-gateway.js';
import { StateStore } from '../state/store.js';
import { nodeView, type RegisteredNode, StandInControl } from '../testing/standin-control.js';
import { StandInHelper } from '../testing/standin-helper.js';
import { waitUntil } from '../testing/wait.js';
import { Engine } from './engine.js';

const IFACE = 'wefttest0';
const peerKey = generateKeyPair().publicKey;
const peer2Key = generateKeyPair().publicKey;

let dir: string;
let control: StandInControl;
let helper: StandInHelper;
let engines: Engine[];
let addresses: Array<{ iface: string; address: string }>;

function netmap(node: RegisteredNode): NetMap {
  return {
    self: nodeView(1, node.req.nodeKey, { name: node.req.hostname }),
    peers: [nodeView(2, peerKey)],
    packetFilter: [],
    tailnetRanges: ['100.64.0.0/10', 'fd7a:115c:a1e0::/48'],
  };
}

/** The underlay the engine sees towards direct peers: unknown (so 1280) unless a test says. */
let underlay: Underlay | null = null;
/** What the don't-fragment probes of that size say, and the probes asked. */
let probeCrosses = true;
let probes: ProbeRequest[] = [];

async function startEngine(portMapping: PortMappingOptions | false = false): Promise<Engine> {
  const engine = new Engine({
    store: new StateStore(join(dir, 'state')),
    helper: new HelperClient(helper.path, { log: silentLogger, backoff: { baseMs: 20, capMs: 100 } }),
    interfaceName: IFACE,
    log: process.env.WEFT_TEST_LOG ? stderrLogger('engine', 'debug') : silentLogger,
    timing: {
      controlBackoff: { baseMs: 20, capMs: 100 },
      endpointsPollMs: 50,
      reapplyMs: 60_000,
      debounceMs: 5,
      upTimeoutMs: 5_000,
      loginBackoff: { baseMs: 20, capMs: 100 },
    },
    addressSource: () => addresses,
    portMapping, // unit tests never ask this machine's gateway, only a loopback one
    readUnderlay: async () => underlay,
    probePath: async (req) => {
      probes.push(req);
      return probeCrosses;
    },
  });
  engines.push(engine);
  await engine.start();
  return engine;
}

const up = (engine: Engine, authKey = 'tskey-good') =>
  engine.up({ controlUrl: control.url, authKey, hostname: 'laptop' });

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'weft-engine-'));
  control = new StandInControl();
  control.netmapFor = netmap;
  await control.start();
  helper = new StandInHelper(join(dir, 'helper.sock'));
  await helper.start();
  engines = [];
  underlay = null;
  probeCrosses = true;
  probes = [];
  addresses = [
    { iface: 'eth0', address: '198.18.5.5' },
    { iface: 'eth0', address: 'fe80::1' },
    { iface: IFACE, address: '100.64.0.1' },
  ];
});

afterEach(async () => {
  for (const e of engines) await e.shutdown();
  await control.stop();
  await helper.stop();
  await rm(dir, { recursive: true, force: true });
});

describe('engine', () => {
  it('pins control’s key at first use, refuses a changed one, and accepts it only when told to (stand-in control)', async () => {
    const engine = await startEngine();
    await up(engine);
    const pinFile = join(dir, 'state', 'control-key.json');
    const pinned = JSON.parse(await readFile(pinFile, 'utf8'));
    expect(pinned).toMatchObject({ controlUrl: control.url, publicKey: control.keys.publicKey });
    await engine.logout();

    const registered = control.registerCalls;
    control.keys = generateKeyPair(); // control reinstalled, or someone else answering at its address
    await expect(up(engine)).rejects.toThrow(
      `control at ${control.url} now presents the key ${control.keys.publicKey}, not ${pinned.publicKey} pinned on ${pinned.pinnedAt}: refusing to talk to it. If control was reinstalled on purpose, run 'weft up --control-url ${control.url} --accept-new-control-key'`,
    );
    expect(control.registerCalls).toBe(registered);
    expect(JSON.parse(await readFile(pinFile, 'utf8'))).toEqual(pinned);

    await engine.up({
      controlUrl: control.url,
      authKey: 'tskey-good',
      hostname: 'laptop',
      acceptNewControlKey: true,
    });
    expect(engine.backendState()).toBe('Running');
    expect(JSON.parse(await readFile(pinFile, 'utf8')).publicKey).toBe(control.keys.publicKey);
  });

  it('up registers with a pre-auth key, reaches Running and applies the netmap (stand-in control)', async () => {
    const engine = await startEngine();
    expect(engine.backendState()).toBe('NeedsLogin');
    await up(engine);
    expect(engine.backendState()).toBe('Running');

    const [node] = [...control.nodes.values()];
    const nodeKeyFile = (await readFile(join(dir, 'state', 'node.key'), 'utf8')).trim();
    const machineKeyFile = (await readFile(join(dir, 'state', 'machine.key'), 'utf8')).trim();
    expect(node?.req).toEqual({
      nodeKey: publicKeyOf(nodeKeyFile),
      hostname: 'laptop',
      os: process.platform,
      authKey: 'tskey-good',
      nodeKeyProof: nodeKeyPossessionProof({
        nodePrivateKey: nodeKeyFile,
        controlPublicKey: control.keys.publicKey,
        machineKey: publicKeyOf(machineKeyFile),
      }),
    });
    const prefs = JSON.parse(await readFile(join(dir, 'state', 'prefs.json'), 'utf8'));
    expect(helper.lastApply()).toEqual({
      interface: {
        name: IFACE,
        privateKey: nodeKeyFile,
        listenPort: prefs.listenPort,
        addresses: ['100.64.0.1/32', 'fd7a:115c:a1e0::1/128'],
        mtu: 1280,
      },
      peers: [
        {
          publicKey: peerKey,
          allowedIPs: ['100.64.0.2/32', 'fd7a:115c:a1e0::2/128'],
          endpoint: '198.18.0.2:41641',
          persistentKeepalive: 25,
        },
      ],
      routes: ['100.64.0.0/10', 'fd7a:115c:a1e0::/48'],
      filter: [],
    });
    // Endpoints: the LAN address with our port; not link-local, not the tunnel's own address.
    await waitUntil('endpoints report', () => control.endpointReports.length > 0);
    expect(control.endpointReports[0]).toEqual([`198.18.5.5:${prefs.listenPort}`]);

    helper.peerStats.set(peerKey, {
      endpoint: '198.18.0.2:41641',
      latestHandshake: 1_700_000_000,
      rxBytes: 10,
      txBytes: 20,
    });
    const st = await engine.status();
    expect(st.self).toEqual({
      id: 'n1',
      name: 'laptop',
      addresses: ['100.64.0.1', 'fd7a:115c:a1e0::1'],
      keyExpiry: null,
      os: 'linux',
    });
    expect(st.peers).toEqual([
      expect.objectContaining({
        name: 'node2',
        addresses: ['100.64.0.2', 'fd7a:115c:a1e0::2'],
        online: true,
        endpoint: '198.18.0.2:41641',
        lastHandshake: new Date(1_700_000_000_000).toISOString(),
        rxBytes: 10,
        txBytes: 20,
      }),
    ]);
    expect(st.health).toEqual([]);
  });

  it('raises the MTU to what a direct path carries once a probe of that size crossed it (stand-in control)', async () => {
    underlay = { mtu: 1500, family: 4, dev: 'eth0' };
    const engine = await startEngine();
    await up(engine);
    await waitUntil('the path probed', () => probes.length > 0);
    expect(probes).toEqual([
      { tunnelAddress: '100.64.0.2', endpoint: '198.18.0.2:41641', mtu: 1440, overhead: 60 },
    ]);
    await waitUntil('the MTU raised', () => helper.lastApply()?.interface.mtu === 1440);
    expect((await engine.status()).mtu).toEqual({
      mtu: 1440,
      reason: 'direct paths; the narrowest, to node2, is 1500 bytes (eth0) minus 60 for WireGuard over IPv4',
    });
  });

  it('goes back to 1280 when the probe of the larger size is lost: no black hole (stand-in control)', async () => {
    underlay = { mtu: 1500, family: 4, dev: 'eth0' };
    probeCrosses = false;
    const engine = await startEngine();
    await up(engine);
    await waitUntil('the path probed', () => probes.length > 0);
    await waitUntil('the MTU back to 1280', async () => (await engine.status()).mtu?.mtu === 1280);
    expect((await engine.status()).mtu?.reason).toMatch(/probe to node2 .* got no answer/);
    expect(helper.lastApply()?.interface.mtu).toBe(1280);
    // Asked once for this path and size, not again at every change.
    expect(probes).toHaveLength(1);
  });

  it('a refused auth key gives a clear error and changes nothing (stand-in control)', async () => {
    const engine = await startEngine();
    await expect(up(engine, 'tskey-bad')).rejects.toMatchObject({
      code: 'control-rejected',
      message: expect.stringContaining('invalid or expired auth key'),
    });
    expect(engine.backendState()).toBe('NeedsLogin');
    const prefs = JSON.parse(await readFile(join(dir, 'state', 'prefs.json'), 'utf8'));
    expect(prefs).toMatchObject({ controlUrl: null, wantRunning: false });
    expect(helper.ops()).not.toContain('apply');
  });

  it('an unreachable control is reported as such (stand-in control)', async () => {
    const engine = await startEngine();
    const url = control.url;
    await control.stop();
    await expect(engine.up({ controlUrl: url, authKey: 'tskey-good' })).rejects.toMatchObject({
      code: 'control-unreachable',
      message: expect.stringContaining(`control unreachable at ${url}`),
    });
    expect(engine.backendState()).toBe('NeedsLogin');
  });

  it('control going away keeps the last netmap in force, and deltas flow again when it returns (stand-in control)', async () => {
    const engine = await startEngine();
    await up(engine);
    const since = helper.requests.length;
    const port = control.port;
    await control.stop();
    await waitUntil('control problem in health', () =>
      engine.snapshot().health.some((h) => h.includes('control')),
    );
    expect(engine.backendState()).toBe('Running');
    expect(helper.ops().slice(since)).not.toContain('down');
    expect(helper.state?.peers).toHaveLength(1);

    await control.start(port);
    await waitUntil('stream reconnect', () => control.streams.size === 1, 5_000);
    control.send({ type: 'delta', peersUpserted: [nodeView(3, peer2Key)] });
    await waitUntil('delta applied', () => helper.state?.peers.length === 2);
    expect(helper.state?.peers.map((p) => p.publicKey).sort()).toEqual([peerKey, peer2Key].sort());
    await waitUntil('health clears', () => engine.snapshot().health.length === 0);
    expect(helper.ops().slice(since)).not.toContain('down');
  });

  it('gives control the token of the map it holds when it reconnects, keeps its peers on resume and takes the rest (stand-in control)', async () => {
    control.mapToken = '1.2.0123456789abcdef';
    const engine = await startEngine();
    await up(engine);
    await waitUntil('peer applied', () => helper.state?.peers.length === 1);
    expect(control.streamTokens).toEqual([null]);
    // A peer joins (no token with it: the engine forgets the one it held), then the delta that
    // names the map again.
    control.send({ type: 'delta', peersUpserted: [nodeView(3, peer2Key)] });
    await waitUntil('second peer', () => helper.state?.peers.length === 2);
    control.send({ type: 'delta', mapToken: '1.2.fedcba9876543210' });
    const port = control.port;
    await control.stop();
    // Control back, its map's token now the one the engine holds; this node was renamed meanwhile.
    control.mapToken = '1.2.fedcba9876543210';
    control.netmapFor = (node) => {
      const map = netmap(node);
      return { ...map, self: { ...map.self, name: 'renamed' } };
    };
    await control.start(port);
    await waitUntil('stream reconnect', () => control.streamTokens.length === 2, 5_000);
    expect(control.streamTokens[1]).toBe('1.2.fedcba9876543210');
    // Resumed: the two peers it held stay (a whole map would have carried one), self is new.
    await waitUntil('new name', () => engine.snapshot().self?.name === 'renamed');
    expect(helper.state?.peers.map((p) => p.publicKey).sort()).toEqual([peerKey, peer2Key].sort());
    // A message without a token: the next stream asks for a whole map.
    control.send({ type: 'delta', peersRemoved: ['n3'] });
    await waitUntil('peer removed', () => helper.state?.peers.length === 1);
    control.mapToken = undefined;
    await control.stop();
    await control.start(port);
    await waitUntil('stream reconnect again', () => control.streamTokens.length === 3, 5_000);
    expect(control.streamTokens[2]).toBeNull();
  });

  it('a logout message takes the interface down and needs login again (stand-in control)', async () => {
    const engine = await startEngine();
    await up(engine);
    control.send({ type: 'logout', reason: 'node deleted' });
    await waitUntil('NeedsLogin', () => engine.backendState() === 'NeedsLogin');
    await waitUntil('helper down', () => helper.ops().at(-1) === 'down');
    expect(helper.state).toBeNull();
    const st = engine.snapshot();
    expect(st).toMatchObject({ backendState: 'NeedsLogin', self: null, peers: [] });
    expect(st.health).toContain('logged out by control: node deleted');
    await expect(stat(join(dir, 'state', 'node.key'))).rejects.toThrow();
    await expect(stat(join(dir, 'state', 'netmap.json'))).rejects.toThrow();
    await expect(stat(join(dir, 'state', 'machine.key'))).resolves.toBeTruthy();
  });

  it('a node control no longer knows (deleted while away) is logged out when its stream is refused (stand-in control)', async () => {
    const engine = await startEngine();
    await up(engine);
    control.nodes.clear();
    for (const ws of control.streams) ws.terminate();
    await waitUntil('NeedsLogin', () => engine.backendState() === 'NeedsLogin');
    await waitUntil('helper down', () => helper.state === null);
    expect(engine.snapshot().health.join()).toMatch(
      /logged out by control: control refused the netmap stream/,
    );
  });

  it('re-sends endpoints when the host addresses change (stand-in control)', async () => {
    const engine = await startEngine();
    await up(engine);
    const port = helper.lastApply()?.interface.listenPort;
    await waitUntil('first report', () => control.endpointReports.length === 1);
    addresses = [...addresses, { iface: 'eth1', address: '203.0.113.9' }];
    await waitUntil('second report', () => control.endpointReports.length === 2);
    expect(control.endpointReports[1]).toEqual([`198.18.5.5:${port}`, `203.0.113.9:${port}`]);
    // Unchanged addresses are not re-sent on every poll.
    await new Promise((r) => setTimeout(r, 150));
    expect(control.endpointReports).toHaveLength(2);
  });

  it('reports the gateway’s port mapping first, shows it in netcheck and deletes it on down (loopback gateway)', async () => {
    const granted: GrantedMapping[] = [];
    const gw = await startPortMappingGateway({
      host: '127.0.0.1',
      port: 0,
      externalAddress: '203.0.113.7',
      mode: 'pcp',
      externalPortFor: () => 50000,
      onMapping: (m) => granted.push(m),
    });
    try {
      const engine = await startEngine({
        gateway: async () => '127.0.0.1',
        gatewayPort: gw.port,
        retryMs: [50],
      });
      await up(engine);
      const port = helper.lastApply()?.interface.listenPort;
      await waitUntil('the mapping reported', () =>
        control.endpointReports.some((r) => r[0] === '203.0.113.7:50000'),
      );
      expect(control.endpointReports.at(-1)).toEqual(['203.0.113.7:50000', `198.18.5.5:${port}`]);
      expect((await engine.netcheck()).portMapping).toEqual({
        answered: 'pcp',
        endpoint: '203.0.113.7:50000',
      });
      expect(granted).toEqual([
        { internalPort: port, externalPort: 50000, lifetime: 7200, client: '127.0.0.1' },
      ]);
      await engine.down();
      await waitUntil('the mapping deleted', () => granted.length === 2);
      expect(granted[1]).toMatchObject({ internalPort: port, lifetime: 0 });
    } finally {
      await gw.close();
    }
  });

  it('down stops the tunnel but stays logged in; up again needs no registration (stand-in control)', async () => {
    const engine = await startEngine();
    await up(engine);
    await engine.down();
    expect(engine.backendState()).toBe('Stopped');
    expect(helper.ops().at(-1)).toBe('down');
    expect(control.streams.size).toBe(0);
    const calls = control.registerCalls;
    await engine.up({ controlUrl: control.url });
    expect(engine.backendState()).toBe('Running');
    expect(control.registerCalls).toBe(calls);
    expect(helper.ops().at(-1)).toBe('apply');
  });

  it('up for another control while logged in is refused (stand-in control)', async () => {
    const engine = await startEngine();
    await up(engine);
    await expect(engine.up({ controlUrl: 'http://127.0.0.1:1' })).rejects.toMatchObject({ code: 'conflict' });
    expect(engine.backendState()).toBe('Running');
  });

  it('a restart with control down brings the tunnel up from the cached netmap (stand-in control)', async () => {
    const first = await startEngine();
    await up(first);
    await first.shutdown();
    engines = [];
    expect(helper.ops().at(-1)).toBe('down');
    const applied = helper.lastApply();
    await control.stop();

    const second = await startEngine();
    await waitUntil('Running from cache', () => second.backendState() === 'Running');
    expect(helper.state).toEqual(applied);
    expect(second.snapshot().health.some((h) => h.includes('control'))).toBe(true);
  });

  it('a restarted engine gives control the token cached with its map and is sent a resume (stand-in control)', async () => {
    control.mapToken = '1.1.0123456789abcdef';
    const first = await startEngine();
    await up(first);
    // A peer joins with the token of the two peers now held: the cache is written with both.
    control.send({ type: 'delta', mapToken: '1.2.fedcba9876543210', peersUpserted: [nodeView(3, peer2Key)] });
    await waitUntil('second peer', () => helper.state?.peers.length === 2);
    await first.shutdown();
    engines = [];

    control.mapToken = '1.2.fedcba9876543210';
    const second = await startEngine();
    await waitUntil('stream reopened', () => control.streamFirsts.length === 2, 5_000);
    expect(control.streamTokens).toEqual([null, '1.2.fedcba9876543210']);
    expect(control.streamFirsts).toEqual(['full', 'resume']);
    await waitUntil('Running', () => second.backendState() === 'Running');
    // The two peers come from the cache: control's whole map would have carried one.
    expect(helper.state?.peers.map((p) => p.publicKey).sort()).toEqual([peerKey, peer2Key].sort());
  });

  it('a restarted engine whose cached peers changed after the last token asks for a whole map (stand-in control)', async () => {
    control.mapToken = '1.1.0123456789abcdef';
    const first = await startEngine();
    await up(first);
    // A peer joins without a token: the peers cached no longer are what the token named.
    control.send({ type: 'delta', peersUpserted: [nodeView(3, peer2Key)] });
    await waitUntil('second peer', () => helper.state?.peers.length === 2);
    await first.shutdown();
    engines = [];

    const second = await startEngine();
    await waitUntil('stream reopened', () => control.streamFirsts.length === 2, 5_000);
    expect(control.streamTokens).toEqual([null, null]);
    expect(control.streamFirsts).toEqual(['full', 'full']);
    await waitUntil('whole map applied', () => helper.state?.peers.length === 1);
    expect(second.backendState()).toBe('Running');
  });

  it('a restarted helper is repaired by applying again (stand-in control)', async () => {
    const engine = await startEngine();
    await up(engine);
    const applied = helper.lastApply();
    await helper.stop();
    await waitUntil('helper loss noticed', () =>
      engine.snapshot().health.some((h) => h.includes('weft-helper')),
    );
    await helper.start();
    await waitUntil('re-applied', () => helper.state !== null);
    expect(helper.state).toEqual(applied);
    expect(engine.backendState()).toBe('Running');
  });

  it('interactive login: up answers with an auth URL, then Running once approved (stand-in control)', async () => {
    const engine = await startEngine();
    await engine.up({ controlUrl: control.url, hostname: 'laptop' });
    const st = engine.snapshot();
    expect(st.backendState).toBe('NeedsLogin');
    expect(st.authUrl).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/a\//);
    const [node] = [...control.nodes.values()];
    control.approve(node!.machineKey);
    await waitUntil('Running after approval', () => engine.backendState() === 'Running');
    expect(engine.snapshot().authUrl).toBeNull();
    expect(helper.lastApply()?.peers).toHaveLength(1);
  });

  it('watchers get the initial state, then each change (stand-in control)', async () => {
    const engine = await startEngine();
    const events: WatchEvent[] = [];
    const stop = engine.watch((e) => events.push(e));
    await waitUntil('initial event', () => events.length === 1);
    expect(events[0]).toMatchObject({ initial: true, status: { backendState: 'NeedsLogin' } });
    await up(engine);
    await waitUntil('Running event', () => events.some((e) => e.status.backendState === 'Running'));
    expect(events.slice(1).every((e) => !e.initial)).toBe(true);
    stop();
  });
});
