import { type EngineStatus, PREFS_DEFAULTS, type PrefsPatch, type UpRequest } from '@weft/protocol';
import type { EngineApi, WatchLine } from '../controller.js';
import { runningEngine } from './fixtures.js';

/** An engine stand-in with the LocalAPI's behaviour: commands answer with the new status, /watch streams. */
export class FakeEngine implements EngineApi {
  status_: EngineStatus = {
    ...runningEngine(),
    backendState: 'NeedsLogin',
    self: null,
    peers: [],
    user: null,
  };
  watchers = new Set<(l: WatchLine) => void>();
  watchFails: Error | null = null;
  calls: string[] = [];
  pendingUp: { resolve: (s: EngineStatus) => void; signal?: AbortSignal | undefined } | null = null;
  prefsFail: Error | null = null;

  set(s: EngineStatus) {
    this.status_ = s;
    for (const w of this.watchers) w({ initial: false, status: s });
  }
  async status() {
    this.calls.push('status');
    return this.status_;
  }
  async up(req: UpRequest, signal?: AbortSignal) {
    this.calls.push(`up ${req.controlUrl}`);
    if (this.status_.backendState === 'NeedsLogin') {
      // interactive: the auth URL appears, the request waits for the person
      this.set({ ...this.status_, controlUrl: req.controlUrl, authUrl: `${req.controlUrl}/a/xyz` });
      return new Promise<EngineStatus>((resolve, reject) => {
        this.pendingUp = { resolve, signal };
        signal?.addEventListener('abort', () =>
          reject(Object.assign(new Error('cancelled'), { name: 'AbortError' })),
        );
      });
    }
    this.set({ ...this.status_, backendState: 'Running' });
    return this.status_;
  }
  async down() {
    this.calls.push('down');
    // as core: without a login the state stays NeedsLogin; a pending auth URL is forgotten
    const backendState = this.status_.backendState === 'NeedsLogin' ? 'NeedsLogin' : 'Stopped';
    this.set({ ...this.status_, backendState, authUrl: null });
    return this.status_;
  }
  async logout() {
    this.calls.push('logout');
    this.set({ ...this.status_, backendState: 'NeedsLogin', self: null, peers: [] });
    return this.status_;
  }
  async cancelLogin(): Promise<EngineStatus> {
    this.calls.push('cancelLogin');
    throw Object.assign(new Error('no such endpoint'), { httpStatus: 404 });
  }
  async setPrefs(patch: PrefsPatch) {
    this.calls.push(`prefs ${JSON.stringify(patch)}`);
    if (this.prefsFail) throw this.prefsFail;
    const d = PREFS_DEFAULTS;
    const was = this.status_.prefs;
    const prefs = {
      exitNodeAllowLan: patch.exitNodeAllowLan ?? was?.exitNodeAllowLan ?? d.exitNodeAllowLan,
      advertiseExitNode: patch.advertiseExitNode ?? was?.advertiseExitNode ?? d.advertiseExitNode,
      advertiseRoutes: patch.advertiseRoutes ?? was?.advertiseRoutes ?? d.advertiseRoutes,
      useTailnetDns: patch.useTailnetDns ?? was?.useTailnetDns ?? d.useTailnetDns,
    };
    const exitNode =
      patch.exitNodeId === undefined
        ? this.status_.exitNode
        : patch.exitNodeId === null
          ? null
          : { id: patch.exitNodeId, allowLan: prefs.exitNodeAllowLan };
    this.set({ ...this.status_, exitNode, prefs });
    return this.status_;
  }
  watch(onLine: (l: WatchLine) => void, signal: AbortSignal): Promise<void> {
    if (this.watchFails) return Promise.reject(this.watchFails);
    this.watchers.add(onLine);
    onLine({ initial: true, status: this.status_ });
    return new Promise((resolve) =>
      signal.addEventListener('abort', () => {
        this.watchers.delete(onLine);
        resolve();
      }),
    );
  }
  /** The person signed in at the identity provider. */
  completeLogin() {
    this.set({ ...runningEngine(), controlUrl: this.status_.controlUrl });
    this.pendingUp?.resolve(this.status_);
  }
}
