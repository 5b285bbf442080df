import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DEFAULT_PREFERENCES, filePrefsStore } from '@weft/core/bridge';
import { describe, expect, it } from 'vitest';
import { autostartEntry, autostartPath, type LoginItemDeps, setLaunchAtLogin } from './launch-at-login.js';

function deps(platform: NodeJS.Platform) {
  const files = new Map<string, string>();
  const loginItems: unknown[] = [];
  const d: LoginItemDeps = {
    platform,
    setLoginItemSettings: (s) => loginItems.push(s),
    home: '/home/alice',
    execPath: '/opt/Weft/weft-desktop',
    writeFile: (p, t) => files.set(p, t),
    removeFile: (p) => files.delete(p),
    mkdir: () => {},
  };
  return { d, files, loginItems };
}

describe('launch at login', () => {
  it('Linux: an XDG autostart entry that starts hidden, removed when turned off', () => {
    const { d, files, loginItems } = deps('linux');
    setLaunchAtLogin(d, true);
    const path = '/home/alice/.config/autostart/weft.desktop';
    expect(files.get(path)).toContain('Exec="/opt/Weft/weft-desktop" --hidden');
    setLaunchAtLogin(d, false);
    expect(files.has(path)).toBe(false);
    expect(loginItems).toEqual([]);
    expect(autostartPath({ home: '/h', xdgConfigHome: '/x' })).toBe('/x/autostart/weft.desktop');
  });

  it('quotes the path for the Exec key', () => {
    expect(autostartEntry('/opt/My "Apps"/$weft')).toContain('Exec="/opt/My \\"Apps\\"/\\$weft" --hidden');
  });

  it('macOS and Windows: Electron login items', () => {
    const { d, loginItems } = deps('darwin');
    setLaunchAtLogin(d, true);
    setLaunchAtLogin(d, false);
    expect(loginItems).toEqual([
      { openAtLogin: true, args: ['--hidden'] },
      { openAtLogin: false, args: [] },
    ]);
  });
});

describe('preferences file', () => {
  it('round-trips; a missing or damaged file gives the defaults', () => {
    const dir = mkdtempSync(join(tmpdir(), 'weft-prefs-'));
    try {
      const path = join(dir, 'sub', 'preferences.json');
      const errors: string[] = [];
      const store = filePrefsStore(path, (m) => errors.push(m));
      expect(store.load()).toEqual(DEFAULT_PREFERENCES);
      store.save({ ...DEFAULT_PREFERENCES, theme: 'dark', recentExitNodes: ['a'] });
      expect(store.load()).toMatchObject({ theme: 'dark', recentExitNodes: ['a'] });
      expect(JSON.parse(readFileSync(path, 'utf8')).theme).toBe('dark');
      writeFileSync(path, '{"theme":"neon"}');
      expect(store.load()).toEqual(DEFAULT_PREFERENCES);
      writeFileSync(path, 'not json');
      expect(store.load()).toEqual(DEFAULT_PREFERENCES);
      expect(errors).toHaveLength(2);
      // an older file without newer keys keeps what it has
      writeFileSync(path, '{"notifications":false}');
      expect(store.load()).toEqual({ ...DEFAULT_PREFERENCES, notifications: false });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
