import { readFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { parseAddr, RelayRegion } from '@weft/protocol';
import { LogFormat, LogLevel } from '@weft/protocol/logging';
import { z } from 'zod';
import { isPostgresUrl } from '../db/location.js';
import { DEFAULT_LOG, type LogSettings } from '../log.js';
import { parseDuration } from './duration.js';

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
  /** Path of the SQLite database file, or a postgres:// URL (several replicas share one). */
  db: string;
  /** How long a node key is valid after the node was authorized (by a person or a pre-auth key). */
  nodeKeyExpiryMs: number;
  /** How long an interactive login's auth URL works. */
  loginExpiryMs: number;
  /** Sign-in through an OpenID Connect issuer; null when not configured. */
  oidc: OidcConfig | null;
  /** Sign-in through GitHub's OAuth web flow; null when not configured. */
  github: GithubConfig | null;
  /** Who may sign in, whichever provider they use; empty lists allow everyone. */
  allow: AllowRules;
  /** The relay map sent to every node; absent or empty: no relays (peers need direct paths). */
  relays?: RelayRegion[];
  /** A policy file the server applies and watches; null: the policy is set with `policy set`. */
  policyFile: string | null;
  /** Where Prometheus may scrape /metrics; null: no metrics listener (metric labels reveal the tailnet's size). */
  metricsListen: Listen | null;
  log: LogSettings;
}

export interface OidcConfig {
  issuer: string;
  clientId: string;
  /** A file holding the client secret, so the secret is in no command line or process listing. */
  clientSecretFile: string;
  /** The claim holding the person's groups (Okta and Entra ID call it `groups`; Keycloak can too). */
  groupsClaim: string;
  scopes: string[];
}

export interface GithubConfig {
  clientId: string;
  clientSecretFile: string;
  /** github.com, or a GitHub Enterprise Server (or a stand-in in tests). */
  webUrl: string;
  apiUrl: string;
}

export interface AllowRules {
  /** Email domains (example.com); the email must be verified. */
  domains: string[];
  /** Email addresses. */
  users: string[];
  /** Group names from the groups claim; a person in any one of them may sign in. */
  groups: string[];
}

export const DEFAULT_LISTEN = '127.0.0.1:8080';
export const DEFAULT_DB = 'weft-control.db';
export const DEFAULT_NODE_KEY_EXPIRY = '180d';
export const DEFAULT_LOGIN_EXPIRY = '10m';
export const DEFAULT_GITHUB_URL = 'https://github.com';
export const DEFAULT_GITHUB_API_URL = 'https://api.github.com';

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

const HttpUrl = z.string().refine((s) => {
  try {
    const u = new URL(s);
    return (u.protocol === 'http:' || u.protocol === 'https:') && u.search === '' && u.hash === '';
  } catch {
    return false;
  }
}, 'must be an http:// or https:// URL without query or fragment');

const PublicUrl = HttpUrl.transform((s) => s.replace(/\/+$/, ''));

/** A SQLite file path, or a postgres:// (postgresql://) URL that the driver can parse. */
const DbPath = z
  .string()
  .min(1, 'must not be empty')
  .refine(
    (s) => !isPostgresUrl(s) || (URL.canParse(s) && new URL(s).hostname !== ''),
    'must be a file path or a postgres://USER:PASSWORD@HOST:PORT/DATABASE URL (a socket: HOST?host=/DIR)',
  );

const Duration = z
  .string()
  .refine((s) => parseDuration(s) !== null, 'must be a duration such as 10m, 12h or 180d');

/** A list: comma-separated in flags and the environment, a JSON array or a string in the file. */
const List = z
  .union([z.string(), z.array(z.string())])
  .transform((v) => (typeof v === 'string' ? v.split(',') : v).map((x) => x.trim()).filter((x) => x !== ''));

/**
 * Relay regions: in a file, an array of {regionId, name, url, publicKey}; in a flag or the
 * environment, entries `ID,NAME,URL,KEY[,STUNPORT]` separated by spaces or semicolons.
 */
const Relays = z
  .union([z.string(), z.array(z.unknown())])
  .transform((value, ctx) => {
    if (typeof value !== 'string') return value;
    return value
      .split(/[\s;]+/)
      .filter((e) => e !== '')
      .map((entry) => {
        const [id, name, url, publicKey, stunPort, ...rest] = entry.split(',');
        if (rest.length > 0 || publicKey === undefined) {
          ctx.addIssue({ code: 'custom', message: `relay '${entry}' must be ID,NAME,URL,KEY[,STUNPORT]` });
          return z.NEVER;
        }
        return {
          regionId: Number(id),
          name,
          url,
          publicKey,
          ...(stunPort ? { stunPort: Number(stunPort) } : {}),
        };
      });
  })
  .pipe(z.array(RelayRegion).max(64))
  .refine((rs) => new Set(rs.map((r) => r.regionId)).size === rs.length, 'region ids must be unique');

/** The keys a config file may hold (and each flag/environment variable provides one of). */
export const ConfigFile = z.strictObject({
  listen: ListenText.optional(),
  publicUrl: PublicUrl.optional(),
  db: DbPath.optional(),
  nodeKeyExpiry: Duration.optional(),
  loginExpiry: Duration.optional(),
  oidcIssuer: HttpUrl.optional(),
  oidcClientId: z.string().min(1).optional(),
  oidcClientSecretFile: z.string().min(1).optional(),
  oidcAllowedDomains: List.optional(),
  oidcAllowedUsers: List.optional(),
  oidcAllowedGroups: List.optional(),
  oidcGroupsClaim: z.string().min(1).optional(),
  oidcScopes: List.optional(),
  githubClientId: z.string().min(1).optional(),
  githubClientSecretFile: z.string().min(1).optional(),
  githubUrl: PublicUrl.optional(),
  githubApiUrl: PublicUrl.optional(),
  relays: Relays.optional(),
  policyFile: z.string().min(1).optional(),
  metricsListen: ListenText.optional(),
  logFormat: LogFormat.optional(),
  logLevel: LogLevel.optional(),
});
type ConfigValues = z.infer<typeof ConfigFile>;
type ConfigKey = keyof ConfigValues;
const CONFIG_KEYS = Object.keys(ConfigFile.shape) as ConfigKey[];

/** Paths in a config file are relative to the file, so the file works from any directory. */
const PATH_KEYS = ['db', 'oidcClientSecretFile', 'githubClientSecretFile', 'policyFile'] as const;

/** How each key is spelled as an environment variable (publicUrl → WEFT_CONTROL_PUBLIC_URL) and a flag. */
const envName = (key: string) => `WEFT_CONTROL_${key.replace(/[A-Z]/g, (c) => `_${c}`).toUpperCase()}`;
const flagName = (key: string) => `--${key.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`;
const ENV_NAMES = Object.fromEntries(CONFIG_KEYS.map((k) => [k, envName(k)]));
const FLAG_NAMES = Object.fromEntries(CONFIG_KEYS.map((k) => [k, flagName(k)]));

export type ConfigFlags = { config?: string } & { [K in ConfigKey]?: string };

export class ConfigError extends Error {
  override name = 'ConfigError';
}

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
  for (const key of PATH_KEYS) {
    const given = parsed[key];
    if (given !== undefined && !(key === 'db' && isPostgresUrl(given)))
      parsed[key] = resolve(dirname(path), given);
  }
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
  const pick = (name: (key: string) => string | undefined) =>
    defined(Object.fromEntries(CONFIG_KEYS.map((k) => [k, name(k)])));
  const fromEnv = validate(
    'the environment',
    pick((k) => env[envName(k)]),
    ENV_NAMES,
  );
  const fromFlags = validate(
    'the command line',
    pick((k) => flags[k as ConfigKey]),
    FLAG_NAMES,
  );
  const merged: ConfigValues = { ...file, ...fromEnv, ...fromFlags };
  const path = (p: string) => resolve(cwd, p);
  return {
    listen: parseListen(merged.listen ?? DEFAULT_LISTEN) as Listen,
    publicUrl: merged.publicUrl ?? null,
    db: isPostgresUrl(merged.db ?? '') ? (merged.db as string) : path(merged.db ?? DEFAULT_DB),
    nodeKeyExpiryMs: parseDuration(merged.nodeKeyExpiry ?? DEFAULT_NODE_KEY_EXPIRY) as number,
    loginExpiryMs: parseDuration(merged.loginExpiry ?? DEFAULT_LOGIN_EXPIRY) as number,
    oidc: oidcConfig(merged, path),
    github: githubConfig(merged, path),
    ...(merged.relays ? { relays: merged.relays } : {}),
    allow: {
      domains: (merged.oidcAllowedDomains ?? []).map((d) => d.toLowerCase().replace(/^@/, '')),
      users: (merged.oidcAllowedUsers ?? []).map((u) => u.toLowerCase()),
      groups: merged.oidcAllowedGroups ?? [],
    },
    policyFile: merged.policyFile === undefined ? null : path(merged.policyFile),
    metricsListen: merged.metricsListen === undefined ? null : parseListen(merged.metricsListen),
    log: { format: merged.logFormat ?? DEFAULT_LOG.format, level: merged.logLevel ?? DEFAULT_LOG.level },
  };
}

/** Settings that only make sense together: a half-configured provider is an error, not a silent no. */
function requireTogether(values: ConfigValues, keys: ConfigKey[]): boolean {
  const given = keys.filter((k) => values[k] !== undefined);
  if (given.length === 0) return false;
  const missing = keys.filter((k) => values[k] === undefined);
  if (missing.length > 0) {
    throw new ConfigError(
      `${given.map(flagName).join(' and ')} also need${given.length === 1 ? 's' : ''} ${missing.map(flagName).join(' and ')}`,
    );
  }
  return true;
}

function oidcConfig(values: ConfigValues, path: (p: string) => string): OidcConfig | null {
  if (!requireTogether(values, ['oidcIssuer', 'oidcClientId', 'oidcClientSecretFile'])) return null;
  return {
    issuer: values.oidcIssuer as string,
    clientId: values.oidcClientId as string,
    clientSecretFile: path(values.oidcClientSecretFile as string),
    groupsClaim: values.oidcGroupsClaim ?? 'groups',
    scopes: values.oidcScopes ?? ['openid', 'email', 'profile'],
  };
}

function githubConfig(values: ConfigValues, path: (p: string) => string): GithubConfig | null {
  if (!requireTogether(values, ['githubClientId', 'githubClientSecretFile'])) return null;
  return {
    clientId: values.githubClientId as string,
    clientSecretFile: path(values.githubClientSecretFile as string),
    webUrl: values.githubUrl ?? DEFAULT_GITHUB_URL,
    apiUrl: values.githubApiUrl ?? DEFAULT_GITHUB_API_URL,
  };
}
