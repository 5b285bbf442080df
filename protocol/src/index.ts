export * from './control-api.js';
export * from './filter.js';
export * from './helper.js';
export * from './ip.js';
export * from './localapi.js';
export * from './machine-auth.js';
export * from './netmap.js';
export * from './primitives.js';
