import {
  type AppState,
  type BridgeEventMessage,
  type BridgeHandlers,
  makeEventMessage,
} from '@weft/protocol';
import type { AppController } from '../../bridge/controller.js';
import { DEMO_CONTROL_URL, demoEngine } from '../../bridge/testing/demo-tailnet.js';
import { FakeClock } from '../../bridge/testing/fake-clock.js';
import { FakeEngine } from '../../bridge/testing/fake-engine.js';
import { memoryPrefsStore } from '../../bridge/testing/memory-prefs.js';
import { controllerBackend, webShellController } from '../backend.js';
import type { BridgeBackend } from '../server.js';

// Everything behind the web shell's bridge for the UI tests and the renderer's dev mode (?mock):
// the controller `weft web` runs (web/backend.ts), over a stand-in engine with the demo tailnet.
// Only the engine is fake; calls, sign-in, prefs and state go through the real controller.

export interface DemoAppOptions {
  /** The sign-in link the engine gives for a login to `controlUrl`. */
  authUrlFor?: (controlUrl: string) => string;
  /** How long the engine's work on sign-in and connect takes, in ms (real time). */
  delayMs?: number;
  now?: () => number;
  /** Start signed in to the demo tailnet and connected. */
  signedIn?: boolean;
}

export class DemoApp implements BridgeBackend {
  readonly engine: FakeEngine;
  readonly controller: AppController;
  /** The controller's clock: its retries wait for `update` to bring the engine back. */
  readonly clock = new FakeClock();
  /** Every call received, oldest first, for assertions. */
  readonly calls: { method: string; input: unknown }[] = [];
  readonly handlers: BridgeHandlers;
  private readonly backend: BridgeBackend;
  private readonly noticeListeners = new Set<(m: BridgeEventMessage) => void>();

  constructor(opts: DemoAppOptions = {}) {
    const now = opts.now ?? Date.now;
    this.engine = new FakeEngine({
      authUrlFor: opts.authUrlFor ?? ((u) => `${u.replace(/\/$/, '')}/a/mock-login`),
      signedIn: () => demoEngine(now()),
      upMs: opts.delayMs ?? 150,
    });
    // A fresh engine has never signed in anywhere.
    this.engine.status_ = opts.signedIn ? demoEngine(now()) : { ...this.engine.status_, controlUrl: null };
    this.controller = webShellController({
      engine: this.engine,
      prefs: memoryPrefsStore(opts.signedIn ? { controlUrl: DEMO_CONTROL_URL } : {}),
      version: '0.1.0-demo',
      clock: this.clock,
    });
    this.controller.start();
    this.backend = controllerBackend(this.controller);
    const real = this.controller.handlers;
    this.handlers = Object.fromEntries(
      Object.entries(real).map(([method, fn]) => [
        method,
        (input: unknown) => {
          this.calls.push({ method, input });
          return (fn as (i: unknown) => unknown)(input);
        },
      ]),
    ) as unknown as BridgeHandlers;
  }

  get state(): AppState {
    return this.controller.state;
  }

  subscribe(listener: (m: BridgeEventMessage) => void): () => void {
    const off = this.backend.subscribe(listener);
    this.noticeListeners.add(listener);
    return () => {
      off();
      this.noticeListeners.delete(listener);
    };
  }

  /** The identity provider's side: the person finished signing in at `authUrl`. */
  completeLogin(authUrl: string): boolean {
    return this.engine.completeLogin(authUrl);
  }

  /**
   * A change from outside the app, given as the state it should lead to: the helper's state goes
   * to the controller, the engine's through the engine (its /watch, or it stopping and coming back).
   */
  update(mutate: (s: AppState) => void): void {
    const want = structuredClone(this.state);
    mutate(want);
    if (JSON.stringify(want.helper) !== JSON.stringify(this.state.helper))
      this.controller.setHelperState(want.helper);
    if (want.engine === null) {
      if (this.state.engine !== null)
        this.engine.goAway(new Error(want.engineError ?? 'the Weft engine is not running'));
    } else if (this.state.engine === null) {
      this.engine.comeBack(want.engine);
      void this.clock.advance(60_000); // the controller's next retry, now
    } else if (JSON.stringify(want.engine) !== JSON.stringify(this.state.engine)) {
      this.engine.set(want.engine);
    }
  }

  /** A one-off notice, as main sends for problems outside the state. */
  notice(level: 'info' | 'error', message: string): void {
    const msg = makeEventMessage('notice', { level, message });
    for (const l of this.noticeListeners) l(msg);
  }

  dispose(): void {
    this.controller.stop();
    this.noticeListeners.clear();
  }
}
