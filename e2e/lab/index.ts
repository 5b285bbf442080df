export * from './derp-probes.js';
export * from './exec.js';
export * from './iperf.js';
export * from './lab.js';
export * from './nat.js';
export * from './tailscale.js';
export * from './tls-front.js';
export * from './weft.js';
