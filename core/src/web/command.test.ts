import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Status, UpRequest, WatchEvent } from '@weft/protocol';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { LocalApiServer, type LocalBackend } from '../localapi/server.js';
import { silentLogger } from '../log/logger.js';
import {
  defaultPrefsFile,
  findRendererDir,
  parseListen,
  rendererCandidates,
  startWebCommand,
} from './command.js';

// `weft web` as a whole: weftd's LocalAPI (served by core's own server over a stand-in backend) →
// the bridge's controller → the web shell, driven over HTTP as the renderer drives it.

let dir: string;

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'weft-webcmd-'));
  mkdirSync(join(dir, 'ui'));
  writeFileSync(join(dir, 'ui', 'index.html'), '<!doctype html><title>Weft</title>');
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

describe('weft web: options', () => {
  it('--listen takes an IP address (or localhost) and a port', () => {
    expect(parseListen('127.0.0.1:8099')).toEqual({ host: '127.0.0.1', port: 8099 });
    expect(parseListen('localhost:0')).toEqual({ host: '127.0.0.1', port: 0 });
    expect(parseListen('[::1]:8099')).toEqual({ host: '::1', port: 8099 });
    expect(parseListen('198.51.100.7:80')).toEqual({ host: '198.51.100.7', port: 80 });
    for (const bad of ['8099', '127.0.0.1', 'example.com:80', '127.0.0.1:99999', '::1:80', '300.1.1.1:80'])
      expect(() => parseListen(bad), bad).toThrow(/invalid --listen/);
    expect(() => parseListen('0.0.0.0:80')).toThrow(/one address/);
    expect(() => parseListen('[::]:80')).toThrow(/one address/);
  });

  it('finds the built renderer, or says how to build it', () => {
    expect(findRendererDir(join(dir, 'ui'))).toBe(join(dir, 'ui'));
    expect(() => findRendererDir(join(dir, 'missing'))).toThrow(
      `the desktop UI is not built (no index.html in ${join(dir, 'missing')}): run 'npm run build:renderer'`,
    );
    expect(() => findRendererDir(undefined, [join(dir, 'a'), join(dir, 'b')])).toThrow(
      /not built .*a, .*b\): run 'npm run build:renderer', or pass --renderer-dir/,
    );
    // from core/dist/web (or core/src/web) upwards: the repository's renderer/dist is a candidate
    const repo = join(import.meta.dirname, '..', '..', '..');
    expect(rendererCandidates(join(repo, 'core', 'dist', 'web'))).toContain(join(repo, 'renderer', 'dist'));
    expect(defaultPrefsFile({ XDG_CONFIG_HOME: '/cfg' }, '/home/a')).toBe('/cfg/weft/web-shell.json');
    expect(defaultPrefsFile({}, '/home/a')).toBe('/home/a/.config/weft/web-shell.json');
  });

  it('refuses a non-loopback address unless told, before listening', async () => {
    await expect(
      startWebCommand({
        socket: 'x',
        listen: '198.51.100.7:0',
        rendererDir: join(dir, 'ui'),
        log: silentLogger,
      }),
    ).rejects.toThrow(/not a loopback address: pass --allow-remote/);
  });
});

describe('weft web: against a LocalAPI', () => {
  it('serves the bridge over the engine: state from /watch, calls to the LocalAPI, prefs saved', async () => {
    let st: Status = {
      backendState: 'Running',
      controlUrl: 'http://198.18.0.1:8080',
      authUrl: null,
      self: { id: 'n1', name: 'laptop', addresses: ['100.64.0.1'] },
      peers: [],
      health: [],
    };
    const listeners = new Set<(e: WatchEvent) => void>();
    const calls: string[] = [];
    const backend: LocalBackend = {
      status: async () => st,
      up: async (req: UpRequest) => {
        calls.push(`up ${req.controlUrl}`);
        st = { ...st, backendState: 'Running' };
      },
      down: async () => {
        calls.push('down');
        st = { ...st, backendState: 'Stopped' };
        for (const l of listeners) l({ initial: false, status: st });
      },
      logout: async () => {},
      watch: (l) => {
        listeners.add(l);
        l({ initial: true, status: st });
        return () => listeners.delete(l);
      },
    };
    const socket = join(dir, 'weftd.sock');
    const api = new LocalApiServer(backend, silentLogger);
    await api.listen(socket);
    const prefsFile = join(dir, 'prefs', 'web.json');
    const web = await startWebCommand({
      socket,
      listen: '127.0.0.1:0',
      rendererDir: join(dir, 'ui'),
      prefsFile,
      log: silentLogger,
    });
    try {
      const { origin, token } = web.shell;
      const post = async (method: string, input: unknown = {}) => {
        const r = await fetch(`${origin}/bridge/v0/call/${method}`, {
          method: 'POST',
          headers: { 'content-type': 'application/json', authorization: `Bearer ${token}`, origin },
          body: JSON.stringify(input),
        });
        return (await r.json()) as { ok: boolean; value?: Record<string, unknown> };
      };
      await expect
        .poll(async () => ((await post('getState')).value?.engine as Status | null)?.backendState)
        .toBe('Running');
      const state = (await post('getState')).value ?? {};
      expect(state).toMatchObject({ shell: 'web', helper: { phase: 'external' }, engineError: null });
      expect(await post('disconnect')).toEqual({ ok: true, value: { ok: true } });
      expect(calls).toEqual(['down']);
      expect(web.controller.state.engine?.backendState).toBe('Stopped');
      expect(await post('setPreferences', { theme: 'dark' })).toMatchObject({ ok: true });
      expect(JSON.parse(readFileSync(prefsFile, 'utf8'))).toMatchObject({ theme: 'dark' });
      expect(await post('setPreferences', { launchAtLogin: true })).toMatchObject({
        ok: false,
        error: { message: 'Launch at login is a setting of the desktop app' },
      });
    } finally {
      await web.close();
      await api.close();
    }
  });

  it('says plainly when weftd is not running', async () => {
    const web = await startWebCommand({
      socket: join(dir, 'none.sock'),
      listen: '127.0.0.1:0',
      rendererDir: join(dir, 'ui'),
      prefsFile: join(dir, 'p.json'),
      log: silentLogger,
    });
    try {
      await expect.poll(() => web.controller.state.engineError).toMatch(/weftd is not running/);
      expect(web.controller.state.engine).toBeNull();
    } finally {
      await web.close();
    }
  });
});
