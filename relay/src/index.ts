export * from './connection.js';
export * from './control-feed.js';
export * from './membership.js';
export * from './observations.js';
export * from './reflector.js';
export * from './relay.js';
export * from './server.js';
export * from './state.js';
