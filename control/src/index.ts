export { type CliIo, runCli } from './cli/program.js';
export { type ControlConfig, loadConfig } from './config/config.js';
export { type RunningControl, type ServeOptions, startControl } from './server/serve.js';
