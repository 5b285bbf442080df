import { readFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { parseAddr } from '@weft/protocol';
import { z } from 'zod';

// Server configuration from, in order of precedence: command-line flags, environment variables
// (WEFT_CONTROL_*), a JSON config file (--config or WEFT_CONTROL_CONFIG), defaults. Each source is
// validated on its own, so an error names where the bad value came from.

export interface Listen {
  host: string;
  port: number;
}

export interface ControlConfig {
  listen: Listen;
  /** The URL nodes and browsers use to reach control; null means "http://" + the bound address. */
  publicUrl: string | null;
  /** Path of the SQLite database file. */
  db: string;
}

export const DEFAULT_LISTEN = '127.0.0.1:8080';
export const DEFAULT_DB = 'weft-control.db';

const HOSTNAME =
  /^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$/;

export function parseListen(text: string): Listen | null {
  const m = /^(?:\[([^\]]+)\]|([^:[\]]+)):([0-9]{1,5})$/.exec(text);
  if (m === null) return null;
  const host = (m[1] ?? m[2]) as string;
  const port = Number(m[3]);
  if (port > 65535) return null;
  if (m[1] !== undefined ? parseAddr(host)?.family !== 6 : parseAddr(host) === null && !HOSTNAME.test(host)) {
    return null;
  }
  return { host, port };
}

const ListenText = z
  .string()
  .refine(
    (s) => parseListen(s) !== null,
    'must be HOST:PORT, e.g. 127.0.0.1:8080, [::1]:8080 or 0.0.0.0:443',
  );

const PublicUrl = z
  .string()
  .refine((s) => {
    try {
      const u = new URL(s);
      return (u.protocol === 'http:' || u.protocol === 'https:') && u.search === '' && u.hash === '';
    } catch {
      return false;
    }
  }, 'must be an http:// or https:// URL without query or fragment')
  .transform((s) => s.replace(/\/+$/, ''));

const DbPath = z.string().min(1, 'must not be empty');

/** The keys a config file may hold (and each flag/environment variable provides one of). */
export const ConfigFile = z.strictObject({
  listen: ListenText.optional(),
  publicUrl: PublicUrl.optional(),
  db: DbPath.optional(),
});
type ConfigValues = z.infer<typeof ConfigFile>;

export interface ConfigFlags {
  config?: string;
  listen?: string;
  publicUrl?: string;
  db?: string;
}

export class ConfigError extends Error {
  override name = 'ConfigError';
}

const ENV_NAMES = {
  listen: 'WEFT_CONTROL_LISTEN',
  publicUrl: 'WEFT_CONTROL_PUBLIC_URL',
  db: 'WEFT_CONTROL_DB',
};
const FLAG_NAMES = { listen: '--listen', publicUrl: '--public-url', db: '--db' };

/** Validates one source; `names` says how the user spelled each key there, for the error. */
function validate(source: string, value: unknown, names?: Record<string, string>): ConfigValues {
  const result = ConfigFile.safeParse(value);
  if (result.success) return result.data;
  const problems = result.error.issues.map((issue) => {
    const key = issue.path.join('.');
    return `  ${key === '' ? '(top level)' : (names?.[key] ?? key)}: ${issue.message}`;
  });
  throw new ConfigError(`invalid configuration in ${source}:\n${problems.join('\n')}`);
}

function readFile(path: string): ConfigValues {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new ConfigError(`cannot read config file ${path}: ${err instanceof Error ? err.message : err}`);
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    throw new ConfigError(
      `config file ${path} is not valid JSON: ${err instanceof Error ? err.message : err}`,
    );
  }
  const parsed = validate(`config file ${path}`, value);
  // A path in a config file is relative to the file, so the file works from any directory.
  if (parsed.db !== undefined) parsed.db = resolve(dirname(path), parsed.db);
  return parsed;
}

const defined = (o: Record<string, string | undefined>): Record<string, string> =>
  Object.fromEntries(
    Object.entries(o).filter((e): e is [string, string] => e[1] !== undefined && e[1] !== ''),
  );

export function loadConfig(args: { flags: ConfigFlags; env: NodeJS.ProcessEnv; cwd: string }): ControlConfig {
  const { flags, env, cwd } = args;
  const configPath = flags.config ?? (env.WEFT_CONTROL_CONFIG || undefined);
  const file = configPath === undefined ? {} : readFile(resolve(cwd, configPath));
  const fromEnv = validate(
    'the environment',
    defined({
      listen: env.WEFT_CONTROL_LISTEN,
      publicUrl: env.WEFT_CONTROL_PUBLIC_URL,
      db: env.WEFT_CONTROL_DB,
    }),
    ENV_NAMES,
  );
  const fromFlags = validate(
    'the command line',
    defined({ listen: flags.listen, publicUrl: flags.publicUrl, db: flags.db }),
    FLAG_NAMES,
  );
  const merged = { listen: DEFAULT_LISTEN, db: DEFAULT_DB, ...file, ...fromEnv, ...fromFlags };
  return {
    listen: parseListen(merged.listen) as Listen,
    publicUrl: merged.publicUrl ?? null,
    db: resolve(cwd, merged.db),
  };
}
