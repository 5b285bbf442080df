import { type DestinationStream, type LogFormat, type LogLevel, serverLogger } from '@weft/protocol/logging';

// Control's log: one event per line on stderr (stdout belongs to command output such as a new
// pre-auth key), through pino (see @weft/protocol/logging), behind this small interface so call
// sites only say what happened.

export interface Logger {
  info(message: string): void;
  warn(message: string): void;
  error(message: string): void;
}

export interface LogSettings {
  format: LogFormat;
  level: LogLevel;
}

export const DEFAULT_LOG: LogSettings = { format: 'text', level: 'info' };

export function stderrLogger(settings: LogSettings = DEFAULT_LOG, destination?: DestinationStream): Logger {
  const log = serverLogger({ name: 'weft-control', ...settings, destination });
  return {
    info: (m) => log.info(m),
    warn: (m) => log.warn(m),
    error: (m) => log.error(m),
  };
}

export const silentLogger: Logger = { info() {}, warn() {}, error() {} };

export function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
