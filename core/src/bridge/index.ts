// The desktop app's bridge, main side: one implementation for electron's main process and for the
// web shell (`weft web`). Imported by electron as `@weft/core/bridge`.

export { LocalApiClient, LocalApiError } from '../localapi/client.js';
export { type Clock, systemClock } from './clock.js';
export {
  AppController,
  type ControllerDeps,
  DEFAULT_PREFERENCES,
  type EngineApi,
  type PrefsStore,
  type WatchLine,
} from './controller.js';
export { filePrefsStore } from './prefs-store.js';
