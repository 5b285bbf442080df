export * from './server-logger.js';
