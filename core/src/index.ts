// The engine as a library, for hosts other than weftd (the desktop app's main process).
export { Engine } from './engine/engine.js';
export type { EngineOptions, EngineTiming } from './engine/options.js';
export { WeftError, type WeftErrorCode } from './errors.js';
export { HelperClient } from './helper/client.js';
export { LocalApiClient, LocalApiError } from './localapi/client.js';
export { LocalApiServer, type LocalBackend } from './localapi/server.js';
export { DEFAULT_HELPER_SOCKET, DEFAULT_SOCKET, DEFAULT_STATE_DIR } from './locations.js';
export { type Logger, silentLogger, stderrLogger } from './log/logger.js';
export {
  type ReflectedEndpoint,
  RelayConnection,
  type RelayConnectionOptions,
} from './paths/relay-client.js';
export { StateStore } from './state/store.js';
