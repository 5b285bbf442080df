// The helper logs to stderr only: systemd's journal (or the supervising app) timestamps and keeps it.
// Every OS change is logged, so the log is an audit trail of what the privileged process did.

export interface Logger {
  info(message: string): void;
  warn(message: string): void;
  error(message: string): void;
}

export const stderrLogger: Logger = {
  info: (m) => process.stderr.write(`weft-helper: ${m}\n`),
  warn: (m) => process.stderr.write(`weft-helper: warning: ${m}\n`),
  error: (m) => process.stderr.write(`weft-helper: error: ${m}\n`),
};
