// Plain line logs on stderr: stdout belongs to command output (`weft status --json`, auth URLs),
// and the daemon's supervisor (systemd, the e2e lab, Electron) collects stderr.

export interface Logger {
  debug(msg: string): void;
  info(msg: string): void;
  warn(msg: string): void;
  error(msg: string): void;
}

type Level = keyof Logger;
const ORDER: Level[] = ['debug', 'info', 'warn', 'error'];

export function stderrLogger(name: string, minLevel: Level = 'info'): Logger {
  const min = ORDER.indexOf(minLevel);
  const at =
    (level: Level) =>
    (msg: string): void => {
      if (ORDER.indexOf(level) >= min)
        process.stderr.write(`${new Date().toISOString()} ${name} ${level}: ${msg}\n`);
    };
  return { debug: at('debug'), info: at('info'), warn: at('warn'), error: at('error') };
}

export const silentLogger: Logger = { debug() {}, info() {}, warn() {}, error() {} };

/** A short description of anything thrown, for logs and health messages. */
export function describeError(err: unknown): string {
  if (!(err instanceof Error)) return String(err);
  // fetch() hides the reason in `cause` ("fetch failed" ← ECONNREFUSED, "bad port", …).
  const cause = (err as Error & { cause?: unknown }).cause;
  if (!(cause instanceof Error)) return err.message;
  const code = (cause as NodeJS.ErrnoException).code;
  const detail = code
    ? cause.message.includes(code)
      ? cause.message
      : `${code}: ${cause.message}`
    : cause.message;
  return detail && !err.message.includes(detail) ? `${err.message} (${detail})` : err.message;
}
