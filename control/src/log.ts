// Concise one-line logs on stderr (stdout belongs to command output such as a new pre-auth key).

export interface Logger {
  info(message: string): void;
  warn(message: string): void;
  error(message: string): void;
}

export function stderrLogger(): Logger {
  const line = (level: string, message: string) =>
    process.stderr.write(`${new Date().toISOString()} ${level} ${message}\n`);
  return {
    info: (m) => line('info', m),
    warn: (m) => line('warn', m),
    error: (m) => line('error', m),
  };
}

export const silentLogger: Logger = { info() {}, warn() {}, error() {} };

export function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
