// For supervisors and tests that embed the helper; the engine talks to it only over its socket.
export { absentStatus, BackendError, type PlatformBackend } from './backend.js';
export { platformBackend } from './platform.js';
export { HelperServer, type HelperServerOptions } from './server.js';
