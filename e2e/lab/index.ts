export * from './exec.js';
export * from './lab.js';
export * from './nat.js';
export * from './weft.js';
