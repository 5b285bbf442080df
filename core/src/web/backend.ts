import { BridgeError, makeEventMessage } from '@weft/protocol';
import type { Clock } from '../bridge/clock.js';
import { AppController, type EngineApi, type PrefsStore } from '../bridge/controller.js';
import type { BridgeBackend } from './server.js';

// The bridge's main side as `weft web` runs it: the one AppController, with what the browser does
// itself (open links, copy) left to the browser, served to the web shell. No Node APIs here, so
// the UI tests and the renderer's dev mode run this same code over a stand-in engine.

export interface WebControllerDeps {
  engine: EngineApi;
  prefs: PrefsStore;
  version: string;
  clock?: Clock;
}

/** The controller of `weft web` (not started). */
export function webShellController(deps: WebControllerDeps): AppController {
  const controller = new AppController({
    ...deps,
    // The browser opens the sign-in link and copies text itself; this machine may have no screen.
    openExternal: async () => {
      throw new BridgeError('failed', 'Open the sign-in link from this page');
    },
    copyText: () => {
      throw new BridgeError('failed', 'The web shell copies in the browser');
    },
    setLaunchAtLogin: () => {
      throw new BridgeError('failed', 'Launch at login is a setting of the desktop app');
    },
    shell: 'web',
    autoOpenAuthUrl: false,
  });
  // The helper is the system's (a service next to weftd); the engine's health says when it is away.
  controller.setHelperState({ phase: 'external', restarts: 0, message: null, nextAttemptAt: null });
  return controller;
}

/** What the web shell serves: the controller's handlers, its state, each new state as an event. */
export function controllerBackend(controller: AppController): BridgeBackend {
  return {
    handlers: controller.handlers,
    get state() {
      return controller.state;
    },
    subscribe: (listener) => controller.subscribe((s) => listener(makeEventMessage('state', s))),
  };
}
