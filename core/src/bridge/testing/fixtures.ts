import type { AppState, BridgePeer, EngineStatus } from '@weft/protocol';

// App states for tests: one per tray/icon phase, built from small pieces.

export const NOW = Date.parse('2026-11-25T12:00:00Z');

export function peer(id: string, extra: Partial<BridgePeer> = {}): BridgePeer {
  return {
    id,
    name: id,
    user: 'alice@example.com',
    tags: [],
    os: 'linux',
    addresses: [`100.64.0.${id.length + 10}/32`],
    online: true,
    lastSeen: new Date(NOW).toISOString(),
    endpoint: '198.18.0.2:41641',
    lastHandshake: new Date(NOW - 10_000).toISOString(),
    rxBytes: 0,
    txBytes: 0,
    ...extra,
  };
}

export function runningEngine(extra: Partial<EngineStatus> = {}): EngineStatus {
  return {
    backendState: 'Running',
    controlUrl: 'https://weft.example.com',
    authUrl: null,
    self: {
      id: 'self',
      name: 'laptop',
      addresses: ['100.64.0.1/32', 'fd7a:115c:a1e0::1/128'],
      os: 'linux',
      keyExpiry: new Date(NOW + 100 * 86_400_000).toISOString(),
    },
    peers: [
      peer('nas', { addresses: ['100.64.0.2/32'] }),
      peer('relayed', { addresses: ['100.64.0.3/32'], endpoint: '127.0.0.1:40000' }),
      peer('exit-a', {
        addresses: ['100.64.0.4/32'],
        exitNodeOption: true,
        latencyMs: 30,
        location: 'Berlin',
      }),
      peer('exit-b', { addresses: ['100.64.0.5/32'], exitNodeOption: true, latencyMs: 12 }),
      peer('exit-off', { addresses: ['100.64.0.6/32'], exitNodeOption: true, online: false }),
      peer('phone', { addresses: ['100.64.0.7/32'], online: false, endpoint: null, lastHandshake: null }),
    ],
    health: [],
    exitNode: null,
    user: { loginName: 'alice@example.com', displayName: 'Alice' },
    ...extra,
  };
}

export function appState(extra: Partial<AppState> = {}): AppState {
  return {
    seq: 1,
    engine: runningEngine(),
    engineError: null,
    helper: { phase: 'running', restarts: 0, message: null, nextAttemptAt: null },
    login: { phase: 'idle', authUrl: null, error: null },
    prefs: {
      controlUrl: 'https://weft.example.com',
      launchAtLogin: false,
      notifications: true,
      theme: 'system',
      recentExitNodes: [],
    },
    pending: null,
    shell: 'electron',
    version: '0.1.0',
    ...extra,
  };
}

const signedOutEngine = (): EngineStatus => ({
  ...runningEngine(),
  backendState: 'NeedsLogin',
  self: null,
  peers: [],
  user: null,
});

/** One state per tray phase. */
export const STATES = {
  disconnected: () => appState({ engine: runningEngine({ backendState: 'Stopped' }) }),
  connecting: () => appState({ engine: runningEngine({ backendState: 'Starting' }), pending: 'connect' }),
  connected: () => appState(),
  'exit-node': () =>
    appState({
      engine: runningEngine({
        exitNode: { id: 'exit-a', allowLan: true },
        prefs: { exitNodeAllowLan: true, advertiseExitNode: false, advertiseRoutes: [], useTailnetDns: true },
      }),
      prefs: { ...appState().prefs, recentExitNodes: ['exit-a'] },
    }),
  'needs-login': () => appState({ engine: signedOutEngine() }),
  'needs-login-waiting': () =>
    appState({
      engine: { ...signedOutEngine(), authUrl: 'https://weft.example.com/a/abc' },
      login: { phase: 'waiting', authUrl: 'https://weft.example.com/a/abc', error: null },
    }),
  'error-engine': () => appState({ engine: null, engineError: 'the Weft engine is not running' }),
  'error-helper': () =>
    appState({
      helper: {
        phase: 'failed',
        restarts: 5,
        message: 'The network helper exited with code 1',
        nextAttemptAt: null,
      },
    }),
} satisfies Record<string, () => AppState>;
