import { type EngineStatus, PREFS_DEFAULTS, type PrefsPatch, type UpRequest } from '@weft/protocol';
import type { EngineApi, WatchLine } from '../controller.js';
import { runningEngine } from './fixtures.js';

export interface FakeEngineOptions {
  /** The sign-in link for a login to `controlUrl` (default `${controlUrl}/a/xyz`). */
  authUrlFor?: (controlUrl: string) => string;
  /** The status once the person signed in (default `runningEngine()` at the login's control). */
  signedIn?: () => EngineStatus;
  /**
   * How long `up` works (ms, real time) before the sign-in link appears or, from Stopped, before
   * Starting becomes Running; as weftd over its socket takes a while (default 0: at once).
   */
  upMs?: number;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const aborted = () => Object.assign(new Error('cancelled'), { name: 'AbortError' });

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
  /** How each open /watch ends with an error (the engine going away). */
  private readonly watchEnds = new Map<(l: WatchLine) => void, (e: Error) => void>();
  watchFails: Error | null = null;
  calls: string[] = [];
  pendingUp: { resolve: (s: EngineStatus) => void; signal?: AbortSignal | undefined } | null = null;
  prefsFail: Error | null = null;

  constructor(private readonly opts: FakeEngineOptions = {}) {}

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
    const upMs = this.opts.upMs ?? 0;
    if (this.status_.backendState === 'NeedsLogin') {
      if (upMs > 0) await sleep(upMs);
      if (signal?.aborted) throw aborted();
      // interactive: the auth URL appears, the request waits for the person
      const authUrl = this.opts.authUrlFor?.(req.controlUrl) ?? `${req.controlUrl}/a/xyz`;
      this.set({ ...this.status_, controlUrl: req.controlUrl, authUrl });
      return new Promise<EngineStatus>((resolve, reject) => {
        this.pendingUp = { resolve, signal };
        signal?.addEventListener('abort', () => {
          this.pendingUp = null;
          reject(aborted());
        });
      });
    }
    if (upMs > 0 && this.status_.backendState !== 'Running') {
      this.set({ ...this.status_, backendState: 'Starting' });
      await sleep(upMs);
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
    return new Promise((resolve, reject) => {
      const end = (e?: Error) => {
        this.watchers.delete(onLine);
        this.watchEnds.delete(onLine);
        if (e) reject(e);
        else resolve();
      };
      this.watchEnds.set(onLine, end);
      signal.addEventListener('abort', () => end());
    });
  }
  /**
   * The person signed in at the identity provider. With `authUrl`: only if that is the link the
   * engine is waiting on (false otherwise, and nothing changes).
   */
  completeLogin(authUrl?: string): boolean {
    const waiting = this.status_.backendState === 'NeedsLogin' ? this.status_.authUrl : null;
    if (authUrl !== undefined && (waiting === null || waiting !== authUrl)) return false;
    const signedIn = this.opts.signedIn?.() ?? runningEngine();
    this.set({ ...signedIn, controlUrl: this.status_.controlUrl });
    this.pendingUp?.resolve(this.status_);
    this.pendingUp = null;
    return true;
  }
  /** The engine stops (its socket refuses): open /watch streams and new ones fail with `error`. */
  goAway(error: Error): void {
    this.watchFails = error;
    for (const end of [...this.watchEnds.values()]) end(error);
  }
  /** The engine is back with `status`; /watch answers again. */
  comeBack(status: EngineStatus): void {
    this.watchFails = null;
    this.status_ = status;
  }
}
