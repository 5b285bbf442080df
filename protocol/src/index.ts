export * from './bridge/index.js';
export * from './call-me-maybe.js';
export * from './control-api.js';
export * from './derp.js';
export * from './dns.js';
export * from './exit-route.js';
export * from './filter.js';
export * from './helper.js';
export * from './ip.js';
export * from './json.js';
export * from './localapi.js';
export * from './machine-auth.js';
export * from './netmap.js';
export * from './port-mapping.js';
export * from './prefs.js';
export * from './primitives.js';
export * from './relay.js';
export * from './relay-members.js';
export * from './serial-queue.js';
export * from './tailcfg.js';
// UPnP's codecs are the subpath export @weft/protocol/upnp: their XML library stays out of
// every other importer (the CLI, the Electron main process).
