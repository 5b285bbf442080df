import { AppController, DEFAULT_PREFERENCES } from '@weft/core/bridge';
import { FakeClock, FakeEngine, flush, runningEngine } from '@weft/core/bridge/testing';
import { AppState, BRIDGE_IPC } from '@weft/protocol';
import { describe, expect, it } from 'vitest';
import { DesktopApp } from './app.js';
import { HelperSupervisor } from './supervisor.js';
import { fakeElectron } from './testing/fake-electron.js';

function setup(argv: string[] = ['/opt/Weft/weft-desktop'], lock = true) {
  const fe = fakeElectron({ lock });
  const engine = new FakeEngine();
  engine.status_ = runningEngine();
  const clock = new FakeClock();
  const controller = new AppController({
    engine,
    prefs: { load: () => ({ ...DEFAULT_PREFERENCES }), save: () => {} },
    openExternal: async () => {},
    copyText: (t) => fe.log.push(`copy ${t}`),
    setLaunchAtLogin: () => {},
    clock,
    shell: 'electron',
    version: '0.1.0',
    autoOpenAuthUrl: true,
  });
  let helperStops = 0;
  const supervisor = new HelperSupervisor({
    start: async () => ({ exited: new Promise(() => {}), stop: async () => void helperStops++ }),
    healthCheck: async () => true,
    reapply: async () => {},
    onState: (h) => controller.setHelperState(h),
    clock,
  });
  const desktop = new DesktopApp({
    electron: fe.electron,
    controller,
    supervisor,
    rendererDir: '/opt/Weft/renderer/dist',
    assetsDir: '/opt/Weft/assets',
    preloadPath: '/opt/Weft/electron/dist/preload.cjs',
    platform: 'linux',
    argv,
    log: () => {},
  });
  return { ...fe, desktop, controller, engine, supervisor, helperStops: () => helperStops };
}

type MenuItem = { id?: string; click?: () => void; submenu?: MenuItem[] };

describe('DesktopApp (Electron injected)', () => {
  it('a second instance quits at once', () => {
    const t = setup(undefined, false);
    expect(t.desktop.run()).toBe(false);
    expect(t.log).toEqual(['quit']);
  });

  it('starts: registers weft://, tray icon per state, window opened with the hardened preload', async () => {
    const t = setup();
    expect(t.desktop.run()).toBe(true);
    await flush();
    expect(t.log).toContain('protocol weft');
    const tray = t.trays[0];
    expect(tray?.image?.path).toBe('/opt/Weft/assets/tray/connected-dark.png');
    expect(tray?.tooltip).toBe('Weft: connected');
    expect(t.windows).toHaveLength(1);
    expect(t.windows[0]?.loaded).toBe('/opt/Weft/renderer/dist/index.html');
    expect(t.windows[0]?.options).toMatchObject({
      webPreferences: { sandbox: true, contextIsolation: true, nodeIntegration: false },
      backgroundColor: '#15171b', // the fake OS is in dark mode
    });
    t.engine.set(runningEngine({ backendState: 'Stopped' }));
    expect(tray?.image?.path).toBe('/opt/Weft/assets/tray/disconnected-dark.png');
    // the window's page gets every state change, validated by the same schema
    const last = t.sent.at(-1);
    expect(last?.channel).toBe(BRIDGE_IPC.event);
    expect(AppState.safeParse((last?.message as { payload: unknown } | undefined)?.payload).success).toBe(
      true,
    );
    t.controller.stop();
  });

  it('--hidden (launch at login) starts in the tray only', async () => {
    const t = setup(['/opt/Weft/weft-desktop', '--hidden']);
    t.desktop.run();
    await flush();
    expect(t.windows).toHaveLength(0);
    t.controller.stop();
  });

  it('a second instance forwards its weft:// link: the window comes to the front on that screen', async () => {
    const t = setup(['/opt/Weft/weft-desktop', '--hidden']);
    t.desktop.run();
    await flush();
    t.app.emit('second-instance', {}, ['/opt/Weft/weft-desktop', 'weft://settings'], '/');
    expect(t.windows).toHaveLength(1);
    t.windows[0]?.webContents.emit('did-finish-load');
    expect(t.sent.at(-1)?.message).toEqual({ event: 'navigate', payload: { view: 'settings' } });
    t.app.emit('second-instance', {}, ['/opt/Weft/weft-desktop', 'weft://exit-nodes'], '/');
    expect(t.windows).toHaveLength(1);
    expect(t.sent.at(-1)?.message).toEqual({ event: 'navigate', payload: { view: 'exit-nodes' } });
    t.controller.stop();
  });

  it('bridge calls are answered only for the app window', async () => {
    const t = setup();
    t.desktop.run();
    await flush();
    const handle = t.ipc.get(BRIDGE_IPC.call) as (e: unknown, m: unknown, i: unknown) => Promise<unknown>;
    expect(await handle({ sender: {} }, 'disconnect', {})).toMatchObject({ ok: false });
    expect(t.engine.calls).not.toContain('down');
    expect(await handle({ sender: t.windows[0]?.webContents }, 'disconnect', {})).toEqual({
      ok: true,
      value: { ok: true },
    });
    expect(t.engine.calls).toContain('down');
    t.controller.stop();
  });

  it('tray clicks: copy this device, pick an exit node, quit stops the helper', async () => {
    const t = setup();
    t.desktop.run();
    await flush();
    const menu = t.trays[0]?.menu as MenuItem[];
    menu.find((i) => i.id === 'self')?.click?.();
    expect(t.log).toContain('copy 100.64.0.1');
    const exits = menu.find((i) => i.id === 'exit-nodes')?.submenu ?? [];
    exits.find((i) => i.id === 'exit-exit-b')?.click?.();
    await flush();
    expect(t.controller.state.engine?.exitNode).toEqual({ id: 'exit-b', allowLan: false });
    expect(t.trays[0]?.image?.path).toBe('/opt/Weft/assets/tray/exit-node-dark.png');
    const menuAfter = (t.trays[0]?.menu ?? []) as MenuItem[];
    menuAfter.find((i) => i.id === 'quit')?.click?.();
    await flush();
    expect(t.helperStops()).toBe(1);
    expect(t.log.at(-1)).toBe('quit');
    t.controller.stop();
  });

  it('notifies on disconnect', async () => {
    const t = setup();
    t.desktop.run();
    await flush();
    t.engine.set(runningEngine({ backendState: 'Stopped' }));
    expect(t.notifications.at(-1)?.title).toBe('Weft disconnected');
    t.controller.stop();
  });
});
