import { existsSync, readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { AppController } from '../bridge/controller.js';
import { filePrefsStore } from '../bridge/prefs-store.js';
import { LocalApiClient } from '../localapi/client.js';
import type { Logger } from '../log/logger.js';
import { controllerBackend, webShellController } from './backend.js';
import { isLoopback, startWebShell, type WebShell } from './server.js';

// `weft web`: the desktop app's UI for a browser, served next to weftd. The bridge's main side is
// the same AppController electron runs (core/src/bridge), talking to weftd's LocalAPI.

export interface WebCommandOptions {
  /** weftd's LocalAPI socket. */
  socket: string;
  /** `ADDRESS:PORT` ([::1]:PORT for IPv6); port 0 picks a free one. */
  listen: string;
  /** Where the built renderer is; found next to the installed packages when absent. */
  rendererDir?: string;
  /** The UI's own settings (control URL last used, theme, …). */
  prefsFile?: string;
  /** Listen on a non-loopback address too (the token then crosses the network unencrypted). */
  allowRemote?: boolean;
  log: Logger;
}

export class WebCommandError extends Error {}

/** Parses `--listen`: an IP address (or localhost) and a port. */
export function parseListen(text: string): { host: string; port: number } {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:[\]]+)):(\d{1,5})$/.exec(text.trim());
  const port = Number(m?.[3]);
  if (!m || !Number.isInteger(port) || port > 65_535)
    throw new WebCommandError(
      `invalid --listen '${text}': use ADDRESS:PORT, e.g. 127.0.0.1:8099 or [::1]:8099`,
    );
  let host = (m[1] ?? m[2] ?? '').toLowerCase();
  if (host === 'localhost') host = '127.0.0.1';
  const v4 = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(host);
  const ok = v4 ? v4.slice(1).every((o) => Number(o) <= 255) : m[1] !== undefined && host.includes(':');
  if (!ok)
    throw new WebCommandError(`invalid --listen '${text}': the address must be an IP address or localhost`);
  if (host === '0.0.0.0' || host === '::')
    throw new WebCommandError(
      `--listen ${text}: give one address, not all of them (the shell accepts only its own origin)`,
    );
  return { host, port };
}

const here = dirname(fileURLToPath(import.meta.url));

/** Folders that may hold the built renderer, most specific first. */
export function rendererCandidates(from = here): string[] {
  const out: string[] = [];
  if (process.env.WEFT_RENDERER_DIR) out.push(resolve(process.env.WEFT_RENDERER_DIR));
  // Upwards from core/dist/web: the repository's renderer/dist, node_modules/@weft/renderer/dist
  // next to an installed @weft/core, or an app folder holding renderer/dist.
  for (let dir = from, i = 0; i < 6 && dirname(dir) !== dir; i++, dir = dirname(dir))
    out.push(join(dir, 'renderer', 'dist'));
  return [...new Set(out)];
}

export function findRendererDir(explicit: string | undefined, candidates = rendererCandidates()): string {
  const list = explicit ? [resolve(explicit)] : candidates;
  const found = list.find((d) => existsSync(join(d, 'index.html')));
  if (found) return found;
  throw new WebCommandError(
    `the desktop UI is not built (no index.html in ${list.join(', ')}): run 'npm run build:renderer'` +
      (explicit ? '' : ', or pass --renderer-dir'),
  );
}

export function defaultPrefsFile(env = process.env, home = homedir()): string {
  const config = env.XDG_CONFIG_HOME || join(home, '.config');
  return join(config, 'weft', 'web-shell.json');
}

function coreVersion(): string {
  try {
    const pkg = JSON.parse(readFileSync(join(here, '..', '..', 'package.json'), 'utf8')) as {
      version?: string;
    };
    return pkg.version ?? '0.0.0';
  } catch {
    return '0.0.0';
  }
}

export interface RunningWebShell {
  shell: WebShell;
  controller: AppController;
  close(): Promise<void>;
}

/** Starts the controller and the shell; the caller prints `shell.url`. */
export async function startWebCommand(o: WebCommandOptions): Promise<RunningWebShell> {
  const { host, port } = parseListen(o.listen);
  if (!isLoopback(host) && !o.allowRemote)
    throw new WebCommandError(
      `--listen ${o.listen} is not a loopback address: pass --allow-remote to serve other machines ` +
        '(anyone on the path can read the token: prefer an SSH tunnel to 127.0.0.1)',
    );
  const staticDir = findRendererDir(o.rendererDir);
  const prefsFile = o.prefsFile ?? defaultPrefsFile();
  const controller = webShellController({
    engine: new LocalApiClient(o.socket, { timeoutMs: 15_000 }),
    prefs: filePrefsStore(prefsFile, (m) => o.log.warn(m)),
    version: coreVersion(),
  });
  controller.start();
  let shell: WebShell;
  try {
    shell = await startWebShell({
      backend: controllerBackend(controller),
      staticDir,
      host,
      port,
      log: o.log,
    });
  } catch (e) {
    controller.stop();
    throw e;
  }
  o.log.info(`serving ${staticDir} for weftd at ${o.socket}; preferences in ${prefsFile}`);
  return {
    shell,
    controller,
    async close() {
      await shell.close();
      controller.stop();
    },
  };
}
