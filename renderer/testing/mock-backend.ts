import {
  type AppState,
  BridgeError,
  type BridgeEventMessage,
  type BridgeHandlers,
  type BridgePeer,
  type EngineStatus,
  makeEventMessage,
  type Preferences,
} from '@weft/protocol';

// A mock of everything behind the bridge (main process + engine), implementing the same typed
// handler registry the real main process does. Tests serve it over HTTP + WebSocket; it imports
// nothing but the protocol, so it also runs in a page.

export interface MockBackendOptions {
  /** The URL a person would open to sign in, for a login to controlUrl. */
  authUrlFor?: (controlUrl: string) => string;
  /** Delay of simulated engine work in ms (login start, connecting). */
  delayMs?: number;
  now?: () => number;
  shell?: AppState['shell'];
  /** Start signed in and connected (for screens other than sign-in). */
  signedIn?: boolean;
}

const HOUR = 3_600_000;

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

export class MockBackend {
  private readonly listeners = new Set<(m: BridgeEventMessage) => void>();
  private readonly timers = new Set<ReturnType<typeof setTimeout>>();
  private pendingLoginUrl: string | null = null;
  state: AppState;
  /** Everything copied through copyText, oldest first. */
  readonly copied: string[] = [];
  /** Every call received, for assertions. */
  readonly calls: { method: string; input: unknown }[] = [];
  readonly handlers: BridgeHandlers;
  private readonly now: () => number;
  private readonly delayMs: number;
  private readonly authUrlFor: (controlUrl: string) => string;

  constructor(opts: MockBackendOptions = {}) {
    this.now = opts.now ?? Date.now;
    this.delayMs = opts.delayMs ?? 150;
    this.authUrlFor = opts.authUrlFor ?? ((u) => `${u.replace(/\/$/, '')}/a/mock-login`);
    const prefs: Preferences = {
      controlUrl: '',
      launchAtLogin: false,
      notifications: true,
      theme: 'system',
      recentExitNodes: [],
    };
    this.state = {
      seq: 1,
      engine: {
        backendState: 'NeedsLogin',
        controlUrl: null,
        authUrl: null,
        self: null,
        peers: [],
        health: [],
        exitNode: null,
        user: null,
      },
      engineError: null,
      helper: { phase: 'running', restarts: 0, message: null, nextAttemptAt: null },
      login: { phase: 'idle', authUrl: null, error: null },
      prefs,
      pending: null,
      shell: opts.shell ?? 'web',
      version: '0.1.0-mock',
    };
    if (opts.signedIn) this.signIn('https://weft.example.com');
    this.handlers = this.makeHandlers();
  }

  subscribe(listener: (m: BridgeEventMessage) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Stops pending timers (call when a test ends). */
  dispose(): void {
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
    this.listeners.clear();
  }

  /** The identity provider's side: the person finished signing in at `authUrl`. */
  completeLogin(authUrl: string): boolean {
    if (this.pendingLoginUrl === null || authUrl !== this.pendingLoginUrl) return false;
    this.pendingLoginUrl = null;
    this.signIn(this.state.prefs.controlUrl);
    this.publish();
    return true;
  }

  /** Simulates a change coming from the engine (a peer going offline, a health problem, …). */
  update(mutate: (s: AppState) => void): void {
    mutate(this.state);
    this.publish();
  }

  private engine(): EngineStatus {
    if (!this.state.engine) throw new BridgeError('unavailable', 'The Weft engine is not running');
    return this.state.engine;
  }

  private signIn(controlUrl: string): void {
    const now = this.now();
    this.state.prefs.controlUrl = controlUrl;
    this.state.login = { phase: 'idle', authUrl: null, error: null };
    this.state.engine = {
      backendState: 'Running',
      controlUrl,
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

  private publish(): void {
    this.state = { ...this.state, seq: this.state.seq + 1 };
    const msg = makeEventMessage('state', structuredClone(this.state));
    for (const l of this.listeners) l(msg);
  }

  /** Sends a one-off notice, as main does for problems outside the state. */
  notice(level: 'info' | 'error', message: string): void {
    const msg = makeEventMessage('notice', { level, message });
    for (const l of this.listeners) l(msg);
  }

  private later(fn: () => void): void {
    const t = setTimeout(() => {
      this.timers.delete(t);
      fn();
    }, this.delayMs);
    this.timers.add(t);
  }

  private makeHandlers(): BridgeHandlers {
    const ok = { ok: true } as const;
    const log = (method: string, input: unknown) => this.calls.push({ method, input });
    return {
      getState: () => {
        log('getState', {});
        return structuredClone(this.state);
      },
      connect: () => {
        log('connect', {});
        const engine = this.engine();
        if (engine.backendState === 'NeedsLogin') throw new BridgeError('failed', 'Sign in first');
        if (engine.backendState === 'Running') return ok;
        this.state.pending = 'connect';
        engine.backendState = 'Starting';
        this.publish();
        this.later(() => {
          if (this.state.pending !== 'connect') return;
          this.state.pending = null;
          this.engine().backendState = 'Running';
          this.publish();
        });
        return ok;
      },
      disconnect: () => {
        log('disconnect', {});
        const engine = this.engine();
        if (engine.backendState === 'NeedsLogin') return ok;
        this.state.pending = null;
        engine.backendState = 'Stopped';
        this.publish();
        return ok;
      },
      login: ({ controlUrl }) => {
        log('login', { controlUrl });
        this.state.prefs.controlUrl = controlUrl;
        this.state.login = { phase: 'starting', authUrl: null, error: null };
        this.publish();
        this.later(() => {
          if (this.state.login.phase !== 'starting') return;
          const authUrl = this.authUrlFor(controlUrl);
          this.pendingLoginUrl = authUrl;
          this.state.login = { phase: 'waiting', authUrl, error: null };
          const engine = this.engine();
          engine.authUrl = authUrl;
          engine.controlUrl = controlUrl;
          this.publish();
        });
        return ok;
      },
      cancelLogin: () => {
        log('cancelLogin', {});
        this.pendingLoginUrl = null;
        this.state.login = { phase: 'idle', authUrl: null, error: null };
        this.engine().authUrl = null;
        this.publish();
        return ok;
      },
      openAuthUrl: () => {
        log('openAuthUrl', {});
        if (!this.state.login.authUrl) throw new BridgeError('failed', 'No sign-in is waiting');
        return ok;
      },
      logout: () => {
        log('logout', {});
        const engine = this.engine();
        this.state.engine = {
          ...engine,
          backendState: 'NeedsLogin',
          self: null,
          peers: [],
          exitNode: null,
          user: null,
          authUrl: null,
        };
        this.state.pending = null;
        this.publish();
        return ok;
      },
      setExitNode: ({ id, allowLan }) => {
        log('setExitNode', { id, allowLan });
        const engine = this.engine();
        if (id !== null) {
          const peer = engine.peers.find((p) => p.id === id);
          if (!peer?.exitNodeOption) throw new BridgeError('failed', 'That device is not an exit node');
          if (!peer.online) throw new BridgeError('failed', `${peer.name} is offline`);
          const recent = [id, ...this.state.prefs.recentExitNodes.filter((r) => r !== id)].slice(0, 5);
          this.state.prefs.recentExitNodes = recent;
        }
        engine.exitNode = id === null ? null : { id, allowLan };
        if (engine.prefs) engine.prefs.exitNodeAllowLan = allowLan;
        this.publish();
        return ok;
      },
      copyText: ({ text }) => {
        log('copyText', { text });
        this.copied.push(text);
        return ok;
      },
      setPreferences: (patch) => {
        log('setPreferences', patch);
        const { advertiseExitNode, advertiseRoutes, useTailnetDns, ...rest } = patch;
        Object.assign(this.state.prefs, rest);
        const engine = this.state.engine;
        if (
          engine?.prefs &&
          (advertiseExitNode !== undefined || advertiseRoutes !== undefined || useTailnetDns !== undefined)
        ) {
          engine.prefs = {
            ...engine.prefs,
            advertiseExitNode: advertiseExitNode ?? engine.prefs.advertiseExitNode,
            advertiseRoutes: advertiseRoutes ?? engine.prefs.advertiseRoutes,
            useTailnetDns: useTailnetDns ?? engine.prefs.useTailnetDns,
          };
        }
        this.publish();
        return ok;
      },
    };
  }
}
