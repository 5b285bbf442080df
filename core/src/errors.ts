// Errors the engine reports to its callers. Each code maps to one HTTP status in the LocalAPI
// (localapi/server.ts), and the message is written for the person at the terminal.

export type WeftErrorCode =
  | 'invalid-request'
  | 'conflict'
  | 'control-unreachable'
  | 'control-rejected'
  | 'control-error'
  | 'helper-unavailable'
  | 'helper-error'
  | 'timeout'
  | 'state-error';

export class WeftError extends Error {
  constructor(
    readonly code: WeftErrorCode,
    message: string,
  ) {
    super(message);
    this.name = 'WeftError';
  }
}
