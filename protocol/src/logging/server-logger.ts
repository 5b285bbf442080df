import { type DestinationStream, type Logger as PinoLogger, pino } from 'pino';
import { z } from 'zod';

export type { DestinationStream } from 'pino';

// The servers' logs (weft-control, weft-relay): pino, one event per line on stderr (stdout belongs
// to command output), as JSON for a log pipeline or as short human lines. Shared here because both
// servers take the same --log-format/--log-level and must hide secrets the same way; it is a
// subpath export (@weft/protocol/logging) so the renderer's bundle never pulls pino in.

export const LogFormat = z.enum(['text', 'json']);
export type LogFormat = z.infer<typeof LogFormat>;
export const LogLevel = z.enum(['debug', 'info', 'warn', 'error', 'silent']);
export type LogLevel = z.infer<typeof LogLevel>;

export interface ServerLogOptions {
  /** The process, as the `name` field of each event (weft-control, weft-relay). */
  name: string;
  format: LogFormat;
  level: LogLevel;
  /** Where lines go: stderr unless given (tests read them back). */
  destination?: DestinationStream;
}

/** Object fields that may hold a secret, whatever event carries them. */
const SECRET_FIELDS = ['password', 'token', 'secret', 'privateKey', 'authKey'];
/** Each secret field at the top of an event or up to two objects down (pino's paths do not recurse). */
const SECRET_PATHS = SECRET_FIELDS.flatMap((f) => [f, `*.${f}`, `*.*.${f}`]);

/**
 * Hides the password of any URL (postgres://user:PASSWORD@host), and any `password=` parameter (a
 * URL's query or a key=value connection string), in a message: the one secret a message may quote
 * by accident (a connection error naming its URL).
 */
export function withoutUrlPasswords(text: string): string {
  return text
    .replace(/([a-z][a-z0-9+.-]*:\/\/[^\s/:@]*:)[^\s/@]+@/gi, '$1***@')
    .replace(/(\bpassword=)[^\s&;]+/gi, '$1***');
}

/** `TIME LEVEL message` plus any other field as key=value: the text format of a JSON event. */
export function textLine(json: string): string {
  const { time, level, msg, name: _name, pid: _pid, hostname: _host, ...rest } = JSON.parse(json);
  const extra = Object.entries(rest).map(
    ([k, v]) => ` ${k}=${typeof v === 'string' ? v : JSON.stringify(v)}`,
  );
  return `${time} ${level} ${msg ?? ''}${extra.join('')}\n`;
}

export function serverLogger(options: ServerLogOptions): PinoLogger {
  return pino(
    {
      name: options.name,
      level: options.level,
      base: { pid: process.pid },
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
      redact: { paths: SECRET_PATHS, censor: '***' },
      hooks: {
        logMethod(args, method) {
          const scrubbed = args.map((a) => (typeof a === 'string' ? withoutUrlPasswords(a) : a));
          return method.apply(this, scrubbed as Parameters<typeof method>);
        },
        ...(options.format === 'text' ? { streamWrite: textLine } : {}),
      },
    },
    // Synchronous: a line logged just before process.exit is not lost.
    options.destination ?? pino.destination({ fd: 2, sync: true }),
  );
}
