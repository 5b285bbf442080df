import {
  type AppState,
  BridgeError,
  type BridgeHandlers,
  type EngineStatus,
  type HelperState,
  type Preferences,
  type PrefsPatch,
  type UpRequest,
} from '@weft/protocol';
import { type Clock, systemClock } from './clock.js';

// The main side of the bridge: owns the AppState snapshot (engine status + helper state + login +
// preferences), follows the engine, and implements every bridge call. One implementation for both
// shells: electron's main process and `weft web` use it. Electron-free: the engine, preferences,
// browser, clipboard and clock are injected.

/** One line of the engine's /watch stream, as the app reads it. */
export interface WatchLine {
  initial: boolean;
  status: EngineStatus;
}

/** The engine's LocalAPI as the app uses it; core's LocalApiClient is the real one. */
export interface EngineApi {
  status(): Promise<EngineStatus>;
  up(req: UpRequest, signal?: AbortSignal): Promise<EngineStatus>;
  down(): Promise<EngineStatus>;
  logout(): Promise<EngineStatus>;
  cancelLogin(): Promise<EngineStatus>;
  setPrefs(patch: PrefsPatch): Promise<EngineStatus>;
  watch(onLine: (line: WatchLine) => void, signal: AbortSignal): Promise<void>;
}

export interface PrefsStore {
  load(): Preferences;
  save(prefs: Preferences): void;
}

export interface ControllerDeps {
  engine: EngineApi;
  prefs: PrefsStore;
  openExternal(url: string): Promise<void>;
  copyText(text: string): void;
  setLaunchAtLogin(on: boolean): void;
  clock?: Clock;
  shell: AppState['shell'];
  version: string;
  /** Open the sign-in page in the browser as soon as the engine gives its URL (electron: yes). */
  autoOpenAuthUrl: boolean;
  pollIntervalMs?: number;
  /**
   * Also re-read /status this often while following /watch (0, the default: never). Today's
   * engine speaks on /watch when handshakes or paths change too; this is for older ones.
   */
  refreshIntervalMs?: number;
}

export const DEFAULT_PREFERENCES: Preferences = {
  controlUrl: '',
  launchAtLogin: false,
  notifications: true,
  theme: 'system',
  recentExitNodes: [],
};

function httpUrl(u: string): boolean {
  try {
    const p = new URL(u).protocol;
    return p === 'https:' || p === 'http:';
  } catch {
    return false;
  }
}

const errorText = (e: unknown) => (e instanceof Error ? e.message : String(e));
const isNotFound = (e: unknown) => (e as { httpStatus?: number | null }).httpStatus === 404;

export class AppController {
  private s: AppState;
  private readonly listeners = new Set<(s: AppState) => void>();
  private readonly clock: Clock;
  private loginAbort: AbortController | null = null;
  private followAbort: AbortController | null = null;
  private stopped = true;
  private openedAuthUrl: string | null = null;
  /** A sign-in this app started and has not seen finish or cancelled: its URL is opened once. */
  private loginWanted = false;
  readonly handlers: BridgeHandlers;

  constructor(private readonly deps: ControllerDeps) {
    this.clock = deps.clock ?? systemClock;
    this.s = {
      seq: 1,
      engine: null,
      engineError: 'Connecting to the Weft engine…',
      helper: { phase: 'starting', restarts: 0, message: null, nextAttemptAt: null },
      login: { phase: 'idle', authUrl: null, error: null },
      prefs: deps.prefs.load(),
      pending: null,
      shell: deps.shell,
      version: deps.version,
    };
    this.handlers = this.makeHandlers();
  }

  get state(): AppState {
    return this.s;
  }

  subscribe(listener: (s: AppState) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  private update(patch: Partial<Omit<AppState, 'seq'>>): void {
    this.s = { ...this.s, ...patch, seq: this.s.seq + 1 };
    for (const l of this.listeners) l(this.s);
  }

  setHelperState(helper: HelperState): void {
    this.update({ helper });
  }

  private savePrefs(patch: Partial<Preferences>): void {
    const prefs = { ...this.s.prefs, ...patch };
    this.deps.prefs.save(prefs);
    this.update({ prefs });
  }

  /** Applies an engine status (from /watch, /status, or a command's answer). */
  onStatus(status: EngineStatus): void {
    if (
      this.s.engine &&
      this.s.engineError === null &&
      JSON.stringify(status) === JSON.stringify(this.s.engine)
    )
      return;
    let login = this.s.login;
    if (status.backendState !== 'NeedsLogin') {
      login = { phase: 'idle', authUrl: null, error: null };
      this.openedAuthUrl = null;
      this.loginWanted = false;
    } else if (status.authUrl && login.phase !== 'error') {
      login = { phase: 'waiting', authUrl: status.authUrl, error: null };
    }
    let pending = this.s.pending;
    if (pending === 'connect' && (status.backendState === 'Running' || status.backendState === 'NeedsLogin'))
      pending = null;
    if (pending === 'disconnect' && status.backendState !== 'Running') pending = null;
    this.update({ engine: status, engineError: null, login, pending });
    const url = login.authUrl;
    if (this.deps.autoOpenAuthUrl && url && this.loginWanted && this.openedAuthUrl !== url && httpUrl(url)) {
      this.openedAuthUrl = url;
      void this.deps.openExternal(url).catch(() => {});
    }
  }

  private engineDown(message: string): void {
    if (this.s.engine === null && this.s.engineError === message) return;
    this.update({ engine: null, engineError: message, pending: null });
  }

  /** Follows the engine: its /watch stream, or polling /status when the engine has no /watch. */
  start(): void {
    if (!this.stopped) return;
    this.stopped = false;
    void this.follow();
    if (this.deps.refreshIntervalMs) this.refresh(this.deps.refreshIntervalMs);
  }

  private refresh(every: number): void {
    this.clock.setTimeout(async () => {
      if (this.stopped) return;
      if (this.s.engine !== null) {
        try {
          this.onStatus(await this.deps.engine.status());
        } catch {
          // the watch loop reports the engine being away
        }
      }
      this.refresh(every);
    }, every);
  }

  stop(): void {
    this.stopped = true;
    this.followAbort?.abort();
    this.loginAbort?.abort();
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((r) => this.clock.setTimeout(r, ms));
  }

  private async follow(): Promise<void> {
    let backoff = 500;
    let polling = false;
    while (!this.stopped) {
      const abort = new AbortController();
      this.followAbort = abort;
      try {
        if (polling) {
          this.onStatus(await this.deps.engine.status());
          backoff = 500;
          await this.sleep(this.deps.pollIntervalMs ?? 2000);
          continue;
        }
        await this.deps.engine.watch((line) => {
          backoff = 500;
          this.onStatus(line.status);
        }, abort.signal);
        if (this.stopped) return;
        this.engineDown('The Weft engine closed the connection');
      } catch (e) {
        if (this.stopped) return;
        if (!polling && isNotFound(e)) {
          polling = true;
          continue;
        }
        this.engineDown(errorText(e));
      }
      await this.sleep(backoff);
      backoff = Math.min(backoff * 2, 10_000);
    }
  }

  private engineOrThrow(): EngineStatus {
    if (!this.s.engine)
      throw new BridgeError('unavailable', this.s.engineError ?? 'The Weft engine is not running');
    return this.s.engine;
  }

  private async engineCall(what: string, fn: () => Promise<EngineStatus>): Promise<void> {
    try {
      this.onStatus(await fn());
    } catch (e) {
      if (isNotFound(e))
        throw new BridgeError('failed', `This version of the Weft engine cannot ${what} yet`);
      throw new BridgeError('failed', `Could not ${what}: ${errorText(e)}`);
    }
  }

  /** An engine command with `pending` shown while it runs (cleared after, unless another took its place). */
  private async pendingCall(
    pending: NonNullable<AppState['pending']>,
    what: string,
    fn: () => Promise<EngineStatus>,
  ): Promise<void> {
    this.update({ pending });
    try {
      await this.engineCall(what, fn);
    } finally {
      if (this.s.pending === pending) this.update({ pending: null });
    }
  }

  private makeHandlers(): BridgeHandlers {
    const ok = { ok: true } as const;
    return {
      getState: () => this.s,
      connect: async () => {
        const engine = this.engineOrThrow();
        const controlUrl = engine.controlUrl ?? this.s.prefs.controlUrl;
        if (!controlUrl) throw new BridgeError('failed', 'Sign in first');
        this.update({ pending: 'connect' });
        try {
          await this.engineCall('connect', () => this.deps.engine.up({ controlUrl }));
        } finally {
          if (this.s.pending === 'connect' && this.s.engine?.backendState !== 'Starting')
            this.update({ pending: null });
        }
        return ok;
      },
      disconnect: async () => {
        this.engineOrThrow();
        await this.pendingCall('disconnect', 'disconnect', () => this.deps.engine.down());
        return ok;
      },
      login: ({ controlUrl }) => {
        this.engineOrThrow();
        this.loginAbort?.abort();
        const abort = new AbortController();
        this.loginAbort = abort;
        this.openedAuthUrl = null;
        this.loginWanted = true;
        this.savePrefs({ controlUrl });
        this.update({ login: { phase: 'starting', authUrl: null, error: null } });
        // Interactive login may hold the request until the person has signed in: do not wait.
        this.deps.engine.up({ controlUrl }, abort.signal).then(
          (status) => {
            if (this.loginAbort === abort) this.loginAbort = null;
            this.onStatus(status);
          },
          (e) => {
            if (abort.signal.aborted) return;
            if (this.loginAbort === abort) this.loginAbort = null;
            this.update({ login: { phase: 'error', authUrl: null, error: errorText(e) } });
          },
        );
        return ok;
      },
      cancelLogin: async () => {
        this.loginAbort?.abort();
        this.loginAbort = null;
        this.openedAuthUrl = null;
        this.loginWanted = false;
        this.update({ login: { phase: 'idle', authUrl: null, error: null } });
        try {
          this.onStatus(await this.deps.engine.cancelLogin());
        } catch (e) {
          // An engine without /login/cancel: /down stops its polling and forgets the auth URL.
          if (isNotFound(e))
            await this.deps.engine.down().then(
              (s) => this.onStatus(s),
              () => {},
            );
        }
        if (this.s.login.phase !== 'idle')
          this.update({ login: { phase: 'idle', authUrl: null, error: null } });
        return ok;
      },
      openAuthUrl: async () => {
        const url = this.s.login.authUrl;
        if (!url || !httpUrl(url)) throw new BridgeError('failed', 'No sign-in is waiting');
        await this.deps.openExternal(url);
        return ok;
      },
      logout: async () => {
        this.engineOrThrow();
        await this.pendingCall('logout', 'sign out', () => this.deps.engine.logout());
        return ok;
      },
      setExitNode: async ({ id, allowLan }) => {
        const engine = this.engineOrThrow();
        if (id !== null) {
          const peer = engine.peers.find((p) => p.id === id);
          if (!peer) throw new BridgeError('failed', 'That device is no longer in your network');
          if (peer.exitNodeOption === false)
            throw new BridgeError('failed', `${peer.name} is not an exit node`);
        }
        await this.pendingCall('exit-node', 'change the exit node', () =>
          this.deps.engine.setPrefs({ exitNodeId: id, exitNodeAllowLan: allowLan }),
        );
        const recent =
          id === null
            ? this.s.prefs.recentExitNodes
            : [id, ...this.s.prefs.recentExitNodes.filter((r) => r !== id)].slice(0, 5);
        this.savePrefs({ recentExitNodes: recent });
        return ok;
      },
      copyText: ({ text }) => {
        this.deps.copyText(text);
        return ok;
      },
      setPreferences: async (patch) => {
        const { advertiseExitNode, advertiseRoutes, useTailnetDns, ...local } = patch;
        if (advertiseExitNode !== undefined || advertiseRoutes !== undefined || useTailnetDns !== undefined) {
          this.engineOrThrow();
          const enginePatch: PrefsPatch = {};
          if (advertiseExitNode !== undefined) enginePatch.advertiseExitNode = advertiseExitNode;
          if (advertiseRoutes !== undefined) enginePatch.advertiseRoutes = advertiseRoutes;
          if (useTailnetDns !== undefined) enginePatch.useTailnetDns = useTailnetDns;
          await this.engineCall('change this device’s settings', () =>
            this.deps.engine.setPrefs(enginePatch),
          );
        }
        if (local.launchAtLogin !== undefined) this.deps.setLaunchAtLogin(local.launchAtLogin);
        this.savePrefs(local);
        return ok;
      },
    };
  }
}
