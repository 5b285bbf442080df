import { STATES } from '@weft/core/bridge/testing';
import { describe, expect, it } from 'vitest';
import { toMenuTemplate } from './tray.js';
import { buildTrayMenu, type TrayAction } from './tray-menu.js';
import {
  denyAllPermissions,
  hardenWebContents,
  isAppUrl,
  mainWindowOptions,
  refuseRemoteContent,
} from './window.js';

type Listener = (event: { preventDefault(): void; defaultPrevented?: boolean }, url: string) => void;

function fakeContents() {
  const listeners = new Map<string, Listener>();
  let openHandler: ((d: { url: string }) => { action: string }) | null = null;
  return {
    on(name: string, l: Listener) {
      listeners.set(name, l);
      return this;
    },
    setWindowOpenHandler(h: (d: { url: string }) => { action: string }) {
      openHandler = h;
    },
    fire(name: string, url: string): boolean {
      let prevented = false;
      listeners.get(name)?.({ preventDefault: () => (prevented = true) }, url);
      return prevented;
    },
    open(url: string) {
      return openHandler?.({ url });
    },
  };
}

describe('hardened window', () => {
  it('isolation, sandbox, no Node integration, no webview', () => {
    const wp = mainWindowOptions('/app/electron/dist/preload.cjs', '/app/assets/icon.png').webPreferences;
    expect(wp).toMatchObject({
      contextIsolation: true,
      sandbox: true,
      nodeIntegration: false,
      nodeIntegrationInWorker: false,
      nodeIntegrationInSubFrames: false,
      webSecurity: true,
      allowRunningInsecureContent: false,
      webviewTag: false,
      preload: '/app/electron/dist/preload.cjs',
    });
  });

  it('blocks navigation away from the app and every new window; only the sign-in page opens, in the browser', () => {
    const wc = fakeContents();
    const opened: string[] = [];
    let authUrl: string | null = null;
    hardenWebContents(wc as never, {
      appRoot: '/app/renderer/dist',
      allowedExternal: () => authUrl,
      openExternal: (u) => opened.push(u),
    });
    expect(wc.fire('will-navigate', 'https://evil.example.com/')).toBe(true);
    expect(wc.fire('will-navigate', 'file:///etc/passwd')).toBe(true);
    expect(wc.fire('will-navigate', 'file:///app/renderer/dist/index.html')).toBe(false);
    expect(wc.fire('will-redirect', 'http://127.0.0.1/')).toBe(true);
    expect(wc.open('https://weft.example.com/a/xyz')).toEqual({ action: 'deny' });
    expect(opened).toEqual([]);
    authUrl = 'https://weft.example.com/a/xyz';
    expect(wc.open('https://weft.example.com/a/xyz')).toEqual({ action: 'deny' });
    expect(wc.open('https://weft.example.com/a/other')).toEqual({ action: 'deny' });
    expect(opened).toEqual(['https://weft.example.com/a/xyz']);
    expect(wc.fire('will-attach-webview', '')).toBe(true);
  });

  it('isAppUrl does not accept a sibling folder with the same prefix', () => {
    expect(isAppUrl('file:///app/renderer/dist/assets/x.js', '/app/renderer/dist')).toBe(true);
    expect(isAppUrl('file:///app/renderer/dist-evil/x.js', '/app/renderer/dist')).toBe(false);
    expect(isAppUrl('not a url', '/app')).toBe(false);
  });

  it('permissions are all refused; remote requests are cancelled', () => {
    const results: unknown[] = [];
    const got: {
      request?: (wc: never, p: string, cb: (g: boolean) => void) => void;
      check?: (wc: never, p: string) => boolean;
    } = {};
    denyAllPermissions({
      setPermissionRequestHandler: (h) => {
        got.request = h as never;
      },
      setPermissionCheckHandler: (h) => {
        got.check = h as never;
      },
    });
    got.request?.({} as never, 'media', (g: boolean) => results.push(g));
    expect(results).toEqual([false]);
    expect(got.check?.({} as never, 'notifications')).toBe(false);

    let before: ((d: { url: string }, cb: (r: { cancel: boolean }) => void) => void) | null = null;
    refuseRemoteContent({ webRequest: { onBeforeRequest: (l) => (before = l) } }, '/app/renderer/dist');
    const verdict = (url: string) => {
      let cancel: boolean | undefined;
      before?.({ url }, (r) => (cancel = r.cancel));
      return cancel;
    };
    expect(verdict('file:///app/renderer/dist/index.html')).toBe(false);
    expect(verdict('https://cdn.example.com/x.js')).toBe(true);
    expect(verdict('ws://127.0.0.1:1/')).toBe(true);
  });
});

describe('tray template', () => {
  it('maps items to Electron menu items and clicks to actions', () => {
    const actions: TrayAction[] = [];
    const t = toMenuTemplate(buildTrayMenu(STATES.connected()), (a) => actions.push(a));
    const self = t.find((i) => i.id === 'self');
    self?.click?.({} as never, undefined, {} as never);
    expect(actions).toEqual([{ type: 'copy', text: '100.64.0.1' }]);
    const exit = t.find((i) => i.id === 'exit-nodes');
    expect(Array.isArray(exit?.submenu)).toBe(true);
    const connect = t.find((i) => i.id === 'connect');
    expect(connect).toMatchObject({ type: 'checkbox', checked: true, enabled: true });
    expect(t.filter((i) => i.type === 'separator').length).toBeGreaterThan(0);
  });
});
