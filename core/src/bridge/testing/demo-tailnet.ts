import type { BridgePeer, EngineStatus } from '@weft/protocol';

// A demo tailnet as one signed-in laptop sees it: seven devices (direct, relayed, offline, exit
// nodes with locations). The UI tests and the renderer's dev mode show it.

const HOUR = 3_600_000;

export const DEMO_CONTROL_URL = 'https://weft.example.com';

export function demoPeers(now: number): BridgePeer[] {
  const iso = (ms: number) => new Date(ms).toISOString();
  const base = { user: 'alice@example.com', tags: [], rxBytes: 0, txBytes: 0 };
  return [
    {
      ...base,
      id: 'n-nas',
      name: 'nas',
      os: 'linux',
      addresses: ['100.64.0.2/32', 'fd7a:115c:a1e0::2/128'],
      online: true,
      lastSeen: iso(now),
      endpoint: '198.18.0.12:41641',
      lastHandshake: iso(now - 20_000),
      path: 'direct',
      latencyMs: 3,
    },
    {
      ...base,
      id: 'n-build',
      name: 'build-server',
      user: null,
      tags: ['tag:ci'],
      os: 'linux',
      addresses: ['100.64.0.3/32'],
      online: true,
      lastSeen: iso(now),
      endpoint: '127.0.0.1:40001',
      lastHandshake: iso(now - 40_000),
      path: 'relay',
      relayRegion: 'home',
      relayReason: 'peer’s NAT maps per destination',
      latencyMs: 41,
    },
    {
      ...base,
      id: 'n-office',
      name: 'office-gw',
      user: null,
      tags: ['tag:exit'],
      os: 'linux',
      addresses: ['100.64.0.4/32'],
      online: true,
      lastSeen: iso(now),
      endpoint: '198.18.5.20:41641',
      lastHandshake: iso(now - 10_000),
      path: 'direct',
      exitNodeOption: true,
      latencyMs: 18,
      location: 'Berlin, DE',
    },
    {
      ...base,
      id: 'n-fra',
      name: 'fra-exit',
      user: null,
      tags: ['tag:exit'],
      os: 'linux',
      addresses: ['100.64.0.5/32'],
      online: true,
      lastSeen: iso(now),
      endpoint: '127.0.0.1:40002',
      lastHandshake: iso(now - 70_000),
      path: 'relay',
      exitNodeOption: true,
      latencyMs: 32,
      location: 'Frankfurt, DE',
    },
    {
      ...base,
      id: 'n-phone',
      name: 'bob-phone',
      user: 'bob@example.com',
      os: 'ios',
      addresses: ['100.64.0.6/32'],
      online: false,
      lastSeen: iso(now - 2 * HOUR),
      endpoint: null,
      lastHandshake: null,
    },
    {
      ...base,
      id: 'n-pi',
      name: 'pi-exit',
      os: 'linux',
      addresses: ['100.64.0.7/32'],
      online: false,
      lastSeen: iso(now - 26 * HOUR),
      endpoint: null,
      lastHandshake: null,
      exitNodeOption: true,
      location: 'Home',
    },
    {
      ...base,
      id: 'n-win',
      name: 'alice-desktop',
      os: 'windows',
      addresses: ['100.64.0.8/32'],
      online: true,
      lastSeen: iso(now),
      endpoint: '198.18.3.9:41641',
      lastHandshake: iso(now - 5_000),
      path: 'direct',
    },
  ];
}

/** The engine's status signed in to the demo tailnet at `now`. */
export function demoEngine(now: number): EngineStatus {
  return {
    backendState: 'Running',
    controlUrl: DEMO_CONTROL_URL,
    authUrl: null,
    self: {
      id: 'n-self',
      name: 'alice-laptop',
      addresses: ['100.64.0.1/32', 'fd7a:115c:a1e0::1/128'],
      os: 'linux',
      keyExpiry: new Date(now + 170 * 24 * HOUR).toISOString(),
    },
    peers: demoPeers(now),
    health: [],
    exitNode: null,
    recommendedExitNodeId: null,
    user: { loginName: 'alice@example.com', displayName: 'Alice Example' },
    prefs: { exitNodeAllowLan: false, advertiseExitNode: false, advertiseRoutes: [], useTailnetDns: true },
  };
}
