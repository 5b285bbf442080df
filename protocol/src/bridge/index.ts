// The desktop app's bridge: the schema of every call and event, the transports' plumbing, and the
// views the UI derives from the state. The renderer's bundle aliases @weft/protocol to this file.

// The engine's prefs as the UI shows them (engine.prefs), with their defaults.
export { PREFS_DEFAULTS, StatusPrefs } from '../prefs.js';
export * from './schema.js';
export * from './transport.js';
export * from './views.js';
