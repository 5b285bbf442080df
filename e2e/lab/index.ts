export * from './exec.js';
export * from './lab.js';
