import { STATES } from '@weft/core/bridge/testing';
import { AppState, connectionPhase } from '@weft/protocol';
import { describe, expect, it } from 'vitest';
import { buildTrayMenu, menuText, type TrayItem, trayIconFile, trayTooltip } from './tray-menu.js';

type Item = Extract<TrayItem, { kind: 'item' }>;
const find = (items: TrayItem[], id: string): Item | undefined => {
  for (const i of items) {
    if (i.kind !== 'item') continue;
    if (i.id === id) return i;
    const sub = i.submenu && find(i.submenu, id);
    if (sub) return sub;
  }
  return undefined;
};
const ids = (items: TrayItem[]) => items.map((i) => (i.kind === 'item' ? i.id : '—'));

describe('tray menu, one case per state', () => {
  it('every fixture is a valid AppState and has the phase its name says', () => {
    for (const [name, make] of Object.entries(STATES)) {
      const s = make();
      expect(AppState.safeParse(s).success, name).toBe(true);
      expect(connectionPhase(s)).toBe(name.replace(/-(waiting|engine|helper)$/, ''));
    }
  });

  it('connected: toggle checked, this device copies its address, peers and exit nodes, account, quit', () => {
    const m = buildTrayMenu(STATES.connected());
    expect(ids(m)).toEqual([
      'status',
      'connect',
      '—',
      'self',
      'peers',
      'exit-nodes',
      '—',
      'account',
      '—',
      'open',
      'preferences',
      'quit',
    ]);
    expect(find(m, 'status')?.label).toBe('Connected');
    expect(find(m, 'connect')).toMatchObject({
      type: 'checkbox',
      checked: true,
      action: { type: 'disconnect' },
    });
    expect(find(m, 'self')).toMatchObject({
      label: 'This device: laptop (100.64.0.1)',
      action: { type: 'copy', text: '100.64.0.1' },
    });
    const peers = find(m, 'peers')?.submenu ?? [];
    // online first, then by name; a click copies the address
    expect(peers.map((p) => (p.kind === 'item' ? p.label : ''))).toEqual([
      'exit-a (100.64.0.4)',
      'exit-b (100.64.0.5)',
      'nas (100.64.0.2)',
      'relayed (100.64.0.3)',
      'exit-off (100.64.0.6) — offline',
      'phone (100.64.0.7) — offline',
    ]);
    expect(find(m, 'peer-nas')?.action).toEqual({ type: 'copy', text: '100.64.0.2' });
    expect(find(m, 'account')?.label).toBe('alice@example.com');
    expect(find(m, 'logout')?.action).toEqual({ type: 'logout' });
    expect(find(m, 'preferences')?.action).toEqual({ type: 'open', view: 'settings' });
    expect(find(m, 'quit')?.action).toEqual({ type: 'quit' });
  });

  it('exit nodes: None checked, Recommended (lowest latency online), list, offline disabled, allow LAN', () => {
    const m = buildTrayMenu(STATES.connected());
    const sub = find(m, 'exit-nodes')?.submenu ?? [];
    expect(ids(sub)).toEqual([
      'exit-none',
      'exit-recommended',
      '—',
      'exit-exit-a',
      'exit-exit-b',
      'exit-exit-off',
      '—',
      'exit-allow-lan',
    ]);
    expect(find(sub, 'exit-none')).toMatchObject({
      checked: true,
      action: { type: 'setExitNode', id: null },
    });
    expect(find(sub, 'exit-recommended')).toMatchObject({
      label: 'Recommended: exit-b',
      action: { id: 'exit-b' },
    });
    expect(find(sub, 'exit-exit-off')).toMatchObject({ enabled: false, label: 'exit-off (offline)' });
    expect(find(sub, 'exit-exit-a')?.label).toBe('exit-a — Berlin');
    expect(find(sub, 'exit-allow-lan')).toMatchObject({
      checked: false,
      action: { type: 'setExitNode', id: null, allowLan: true },
    });
  });

  it('exit-node: the one in use is checked, last used first, allow-LAN toggles keeping the node', () => {
    const s = STATES['exit-node']();
    s.prefs.recentExitNodes = ['exit-b', 'exit-a'];
    const m = buildTrayMenu(s);
    const sub = find(m, 'exit-nodes')?.submenu ?? [];
    expect(ids(sub).slice(3, 6)).toEqual(['exit-exit-b', 'exit-exit-a', 'exit-exit-off']);
    expect(find(sub, 'exit-exit-a')?.checked).toBe(true);
    expect(find(sub, 'exit-none')?.checked).toBe(false);
    expect(find(sub, 'exit-allow-lan')).toMatchObject({
      checked: true,
      action: { id: 'exit-a', allowLan: false },
    });
    expect(trayTooltip(s)).toBe('Weft: connected via exit-a');
  });

  it('disconnected: toggle unchecked and connects', () => {
    const m = buildTrayMenu(STATES.disconnected());
    expect(find(m, 'status')?.label).toBe('Disconnected');
    expect(find(m, 'connect')).toMatchObject({ checked: false, enabled: true, action: { type: 'connect' } });
  });

  it('connecting: toggle shows on and is disabled while the connect is pending', () => {
    const m = buildTrayMenu(STATES.connecting());
    expect(find(m, 'status')?.label).toBe('Connecting…');
    expect(find(m, 'connect')).toMatchObject({ checked: true, enabled: false });
  });

  it('needs login: sign in, no device or network items', () => {
    const m = buildTrayMenu(STATES['needs-login']());
    expect(ids(m)).toEqual(['status', '—', 'login', '—', 'open', 'preferences', 'quit']);
    expect(find(m, 'login')).toMatchObject({ label: 'Sign in…', action: { type: 'login' } });
  });

  it('needs login while waiting for the browser: continue, copy link, cancel', () => {
    const m = buildTrayMenu(STATES['needs-login-waiting']());
    expect(find(m, 'open-auth')?.action).toEqual({ type: 'openAuthUrl' });
    expect(find(m, 'copy-auth')?.action).toEqual({ type: 'copy', text: 'https://weft.example.com/a/abc' });
    expect(find(m, 'cancel-login')?.action).toEqual({ type: 'cancelLogin' });
  });

  it('error (engine down): says why, sign-in disabled, quit still there', () => {
    const m = buildTrayMenu(STATES['error-engine']());
    expect(find(m, 'status')?.label).toBe('Not working');
    expect(find(m, 'error')).toMatchObject({ label: 'the Weft engine is not running', enabled: false });
    expect(find(m, 'login')?.enabled).toBe(false);
    expect(find(m, 'quit')).toBeDefined();
  });

  it('error (helper failed): says why and keeps the device items', () => {
    const m = buildTrayMenu(STATES['error-helper']());
    expect(find(m, 'error')?.label).toBe('The network helper exited with code 1');
    expect(find(m, 'self')).toBeDefined();
  });

  it('escapes & in names so they are not mnemonics', () => {
    expect(menuText('R&D')).toBe('R&&D');
  });

  it('icon file per phase and platform', () => {
    expect(trayIconFile('connected', 'linux', true)).toEqual({
      file: 'tray/connected-dark.png',
      template: false,
    });
    expect(trayIconFile('error', 'win32', false)).toEqual({ file: 'tray/error-light.png', template: false });
    expect(trayIconFile('exit-node', 'darwin', true)).toEqual({
      file: 'tray/exit-node-template.png',
      template: true,
    });
  });
});
