// Test doubles for the bridge (`@weft/core/bridge/testing`): a manual clock, an engine stand-in
// with the LocalAPI's behaviour, and app states for every tray phase. Used by core's and
// electron's unit tests.
export { FakeClock, flush } from './fake-clock.js';
export { FakeEngine } from './fake-engine.js';
export { appState, NOW, peer, runningEngine, STATES } from './fixtures.js';
