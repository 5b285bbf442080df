// Test doubles for the bridge (`@weft/core/bridge/testing`): a manual clock, an engine stand-in
// with the LocalAPI's behaviour, preferences in memory, app states for every tray phase and a demo
// tailnet. Used by core's, electron's and the renderer's tests.
export { DEMO_CONTROL_URL, demoEngine, demoPeers } from './demo-tailnet.js';
export { FakeClock, flush } from './fake-clock.js';
export { FakeEngine, type FakeEngineOptions } from './fake-engine.js';
export { appState, NOW, peer, runningEngine, STATES } from './fixtures.js';
export { memoryPrefsStore } from './memory-prefs.js';
