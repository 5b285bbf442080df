import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { generateKeyPair, type NetMap } from '@weft/protocol';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { HelperClient } from '../helper/client.js';
import { LocalApiClient, LocalApiError } from '../localapi/client.js';
import { LocalApiServer } from '../localapi/server.js';
import { silentLogger } from '../log/logger.js';
import { StateStore } from '../state/store.js';
import { nodeView, type RegisteredNode, StandInControl } from '../testing/standin-control.js';
import { StandInHelper } from '../testing/standin-helper.js';
import { waitUntil } from '../testing/wait.js';
import { Engine } from './engine.js';

// The engine's side of exit nodes and subnet routers, with the stand-in control and helper: prefs
// over the LocalAPI (as `weft set` and the desktop app send them), kept across restarts, advertised
// to control, and turned into the helper's desired state.

const IFACE = 'wefttest1';
const EXIT = ['0.0.0.0/0', '::/0'];
const exitKey = generateKeyPair().publicKey;
const routerKey = generateKeyPair().publicKey;
const own = (n: number) => [`100.64.0.${n}/32`, `fd7a:115c:a1e0::${n}/128`];

let dir: string;
let control: StandInControl;
let helper: StandInHelper;
let engines: Engine[];
let servers: LocalApiServer[];

function netmap(node: RegisteredNode): NetMap {
  return {
    self: nodeView(1, node.req.nodeKey, { name: node.req.hostname }),
    peers: [
      nodeView(2, routerKey, { name: 'router', allowedIPs: [...own(2), '198.51.100.0/24'] }),
      nodeView(3, exitKey, { name: 'exit', allowedIPs: [...own(3), ...EXIT], exitNodeOption: true }),
    ],
    packetFilter: [],
    tailnetRanges: ['100.64.0.0/10', 'fd7a:115c:a1e0::/48'],
  };
}

async function startEngine(): Promise<{ engine: Engine; api: LocalApiClient }> {
  const engine = new Engine({
    store: new StateStore(join(dir, 'state')),
    helper: new HelperClient(helper.path, { log: silentLogger, backoff: { baseMs: 20, capMs: 100 } }),
    interfaceName: IFACE,
    log: silentLogger,
    timing: {
      controlBackoff: { baseMs: 20, capMs: 100 },
      endpointsPollMs: 50,
      reapplyMs: 60_000,
      debounceMs: 5,
      upTimeoutMs: 5_000,
    },
    addressSource: () => [{ iface: 'eth0', address: '198.18.5.5' }],
    portMapping: false, // unit tests never ask this machine's gateway
    // The MTU stays 1280: no `ip route` or ping of this machine's own network in unit tests.
    readUnderlay: async () => null,
  });
  engines.push(engine);
  await engine.start();
  const server = new LocalApiServer(engine, silentLogger);
  const socket = join(dir, `weftd-${engines.length}.sock`);
  await server.listen(socket);
  servers.push(server);
  return { engine, api: new LocalApiClient(socket) };
}

const peerIPs = (key: string) => helper.lastApply()?.peers.find((p) => p.publicKey === key)?.allowedIPs;

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'weft-routing-'));
  control = new StandInControl();
  control.netmapFor = netmap;
  await control.start();
  helper = new StandInHelper(join(dir, 'helper.sock'));
  await helper.start();
  engines = [];
  servers = [];
});

afterEach(async () => {
  for (const s of servers) await s.close();
  for (const e of engines) await e.shutdown();
  await control.stop();
  await helper.stop();
  await rm(dir, { recursive: true, force: true });
});

describe('exit nodes and subnet routes in the engine', () => {
  it('accepts subnet routes, and uses an exit node only once chosen, until cleared', async () => {
    const { engine, api } = await startEngine();
    await engine.up({ controlUrl: control.url, authKey: 'tskey-good', hostname: 'laptop' });
    await waitUntil('first apply', () => helper.lastApply() !== null);
    expect(peerIPs(routerKey)).toEqual([...own(2), '198.51.100.0/24']);
    expect(helper.lastApply()?.routes).toContain('198.51.100.0/24');
    expect(peerIPs(exitKey)).toEqual(own(3));
    expect(helper.lastApply()?.exitNode).toBeUndefined();

    const st = await api.setPrefs({ exitNodeId: 'n3' });
    expect(st.exitNode).toEqual({ id: 'n3', allowLan: false });
    expect(st.peers.find((p) => p.name === 'exit')).toMatchObject({ exitNodeOption: true, exitNode: true });
    await waitUntil('exit node applied', () => helper.lastApply()?.exitNode !== undefined);
    expect(peerIPs(exitKey)).toEqual([...own(3), ...EXIT]);
    expect(helper.lastApply()?.routes).not.toContain('0.0.0.0/0');
    // The control server (an IP literal here) stays outside the tunnel.
    expect(helper.lastApply()?.exitNode?.bypass).toEqual(['127.0.0.1/32']);
    expect(helper.lastApply()?.exitNode?.allowedLan).toEqual([]);

    await api.setPrefs({ exitNodeAllowLan: true });
    await waitUntil('allow-LAN', () => helper.lastApply()?.exitNode?.allowedLan !== undefined);
    const prefs = JSON.parse(await readFile(join(dir, 'state', 'prefs.json'), 'utf8'));
    expect(prefs).toMatchObject({ exitNodeId: 'n3', exitNodeAllowLan: true });

    await api.setPrefs({ acceptRoutes: false });
    await waitUntil('routes off', () => !helper.lastApply()?.routes.includes('198.51.100.0/24'));
    expect(peerIPs(routerKey)).toEqual(own(2));

    await api.setPrefs({ exitNodeId: null });
    await waitUntil('exit node cleared', () => helper.lastApply()?.exitNode === undefined);
    expect(peerIPs(exitKey)).toEqual(own(3));
    expect((await api.status()).exitNode).toBeNull();
  });

  it('refuses a peer that offers no exit node, and an unknown one, changing nothing', async () => {
    const { engine, api } = await startEngine();
    await engine.up({ controlUrl: control.url, authKey: 'tskey-good', hostname: 'laptop' });
    const refused = await api.setPrefs({ exitNodeId: 'n2' }).catch((e: LocalApiError) => e);
    expect(refused).toBeInstanceOf(LocalApiError);
    expect((refused as LocalApiError).message).toMatch(/router does not offer an exit node/);
    const unknown = await api.setPrefs({ exitNodeId: 'n99' }).catch((e: LocalApiError) => e);
    expect((unknown as LocalApiError).message).toMatch(/no peer/);
    const bad = await api.setPrefs({ advertiseRoutes: ['198.51.100.1/24'] }).catch((e: LocalApiError) => e);
    expect((bad as LocalApiError).message).toMatch(/advertiseRoutes/);
    expect((await api.status()).exitNode).toBeNull();
  });

  it('advertises routes and the exit node to control, on every connect, and keeps them across restarts', async () => {
    const first = await startEngine();
    await first.api.setPrefs({ advertiseRoutes: ['203.0.113.0/24'], advertiseExitNode: true });
    await first.engine.up({ controlUrl: control.url, authKey: 'tskey-good', hostname: 'router' });
    await waitUntil('routes reported', () => control.routeReports.length > 0);
    expect(control.routeReports.at(-1)).toEqual(['203.0.113.0/24', ...EXIT]);
    expect((await first.api.status()).prefs).toEqual({
      exitNodeAllowLan: false,
      advertiseExitNode: true,
      advertiseRoutes: ['203.0.113.0/24'],
      useTailnetDns: true,
    });
    await first.api.setPrefs({ advertiseExitNode: false });
    await waitUntil('exit withdrawn', () => control.routeReports.at(-1)?.length === 1);

    await servers.pop()?.close();
    await engines.pop()?.shutdown();
    const reports = control.routeReports.length;
    await startEngine();
    await waitUntil('reported again after restart', () => control.routeReports.length > reports);
    expect(control.routeReports.at(-1)).toEqual(['203.0.113.0/24']);
  });

  it('lists exit nodes (latency measured only when running)', async () => {
    const { api } = await startEngine();
    expect((await api.exitNodes()).exitNodes).toEqual([]);
  });
});
