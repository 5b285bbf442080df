import { join } from 'node:path';
import type { AppController } from '@weft/core/bridge';
import {
  type AppState,
  BRIDGE_IPC,
  connectionPhase,
  dispatchBridgeCall,
  makeEventMessage,
  type View,
} from '@weft/protocol';
import type { BrowserWindow, Tray } from 'electron';
import { DEEP_LINK_SCHEME, type DeepLink, deepLinkFromArgv, parseDeepLink } from './deep-link.js';
import { keyWarningDue, notificationsFor } from './notifications.js';
import type { HelperSupervisor } from './supervisor.js';
import { toMenuTemplate } from './tray.js';
import { buildTrayMenu, type TrayAction, trayIconFile, trayTooltip } from './tray-menu.js';
import { denyAllPermissions, hardenWebContents, mainWindowOptions, refuseRemoteContent } from './window.js';

// Wires the Electron modules to the controller: single instance, deep links, tray, window, IPC,
// notifications. Every Electron API arrives as an argument, so this file loads without Electron.

export type ElectronModule = typeof import('electron');
export type ElectronApis = Pick<
  ElectronModule,
  | 'app'
  | 'BrowserWindow'
  | 'Tray'
  | 'Menu'
  | 'nativeImage'
  | 'nativeTheme'
  | 'shell'
  | 'clipboard'
  | 'Notification'
  | 'ipcMain'
  | 'session'
>;

export interface DesktopAppOptions {
  electron: ElectronApis;
  controller: AppController;
  supervisor: HelperSupervisor;
  /** Folder of the built renderer (index.html). */
  rendererDir: string;
  /** Folder of assets/ (tray icons, app icon). */
  assetsDir: string;
  preloadPath: string;
  platform: NodeJS.Platform;
  argv: readonly string[];
  log(message: string): void;
}

export class DesktopApp {
  private window: BrowserWindow | null = null;
  private tray: Tray | null = null;
  private lastState: AppState | null = null;
  private lastKeyWarning: number | null = null;
  private quitting = false;
  private pendingView: View | null = null;

  constructor(private readonly o: DesktopAppOptions) {}

  /** Returns false when another instance owns the app (this one should exit). */
  run(): boolean {
    const { app } = this.o.electron;
    if (!app.requestSingleInstanceLock()) {
      app.quit();
      return false;
    }
    app.on('second-instance', (_event, argv) => {
      const link = deepLinkFromArgv(argv);
      this.handleDeepLink(link ? parseDeepLink(link) : null);
    });
    app.on('open-url', (event, url) => {
      event.preventDefault();
      this.handleDeepLink(parseDeepLink(url));
    });
    if (!app.isDefaultProtocolClient(DEEP_LINK_SCHEME)) app.setAsDefaultProtocolClient(DEEP_LINK_SCHEME);
    app.on('web-contents-created', (_e, contents) => hardenWebContents(contents, this.hardenOptions()));
    app.on('before-quit', () => {
      this.quitting = true;
    });
    // A tray app keeps running with no window open.
    app.on('window-all-closed', () => {});
    void app.whenReady().then(() => this.ready());
    return true;
  }

  private hardenOptions() {
    return {
      appRoot: this.o.rendererDir,
      allowedExternal: () => this.o.controller.state.login.authUrl,
      openExternal: (url: string) => void this.o.electron.shell.openExternal(url),
    };
  }

  private ready(): void {
    const { electron, controller, supervisor } = this.o;
    const ses = electron.session.defaultSession;
    denyAllPermissions(ses);
    refuseRemoteContent(ses, this.o.rendererDir);

    electron.ipcMain.handle(BRIDGE_IPC.call, (event, method: unknown, input: unknown) => {
      // Only our own window's page may call.
      if (!this.window || event.sender !== this.window.webContents) {
        return { ok: false, error: { code: 'bad-method', message: 'not allowed' } };
      }
      return dispatchBridgeCall(controller.handlers, method, input);
    });

    controller.subscribe((s) => this.onState(s));
    supervisor.start();
    controller.start();
    this.tray = new electron.Tray(this.icon(controller.state));
    this.tray.on('click', () => this.showWindow());
    this.onState(controller.state);
    electron.nativeTheme.on('updated', () => this.onState(controller.state));
    setInterval(() => this.checkKeyExpiry(), 3_600_000).unref();

    const link = deepLinkFromArgv(this.o.argv);
    if (link) this.handleDeepLink(parseDeepLink(link));
    else if (!this.o.argv.includes('--hidden')) this.showWindow();
  }

  private icon(s: AppState) {
    const { nativeImage, nativeTheme } = this.o.electron;
    const { file, template } = trayIconFile(
      connectionPhase(s),
      this.o.platform,
      nativeTheme.shouldUseDarkColors,
    );
    const img = nativeImage.createFromPath(join(this.o.assetsDir, file));
    if (template) img.setTemplateImage(true);
    return img;
  }

  private onState(s: AppState): void {
    const prev = this.lastState;
    this.lastState = s;
    if (this.tray) {
      this.tray.setImage(this.icon(s));
      this.tray.setToolTip(trayTooltip(s));
      const menu = this.o.electron.Menu.buildFromTemplate(
        toMenuTemplate(buildTrayMenu(s), (a) => this.onTrayAction(a)),
      );
      this.tray.setContextMenu(menu);
    }
    this.send('state', s);
    for (const n of notificationsFor(prev, s, new Date()))
      this.notify(n.title, n.body, n.action?.type === 'login');
  }

  private checkKeyExpiry(): void {
    const s = this.o.controller.state;
    if (!keyWarningDue(s, new Date(), this.lastKeyWarning)) return;
    this.lastKeyWarning = Date.now();
    this.notify('Weft: key expires soon', 'Sign in again to keep this device connected.', true);
  }

  private notify(title: string, body: string, reauth: boolean): void {
    const { Notification } = this.o.electron;
    if (!Notification.isSupported()) return;
    const n = new Notification({ title, body, actions: reauth ? [{ type: 'button', text: 'Sign in' }] : [] });
    if (reauth) {
      const go = () => this.reauthenticate();
      n.on('action', go);
      n.on('click', go);
    } else {
      n.on('click', () => this.showWindow());
    }
    n.show();
  }

  private reauthenticate(): void {
    const s = this.o.controller.state;
    const controlUrl = s.engine?.controlUrl ?? s.prefs.controlUrl;
    this.showWindow();
    if (controlUrl) void dispatchBridgeCall(this.o.controller.handlers, 'login', { controlUrl });
  }

  private send<E extends 'state' | 'navigate'>(
    event: E,
    payload: E extends 'state' ? AppState : { view: View },
  ): void {
    const wc = this.window?.webContents;
    if (!wc || wc.isDestroyed()) return;
    wc.send(BRIDGE_IPC.event, makeEventMessage(event, payload as never));
  }

  private onTrayAction(a: TrayAction): void {
    const h = this.o.controller.handlers;
    const report = (p: Promise<{ ok: boolean; error?: { message: string } }>) => {
      void p.then((r) => {
        if (!r.ok && r.error) this.notify('Weft', r.error.message, false);
      });
    };
    switch (a.type) {
      case 'connect':
      case 'disconnect':
      case 'logout':
      case 'cancelLogin':
      case 'openAuthUrl':
        report(dispatchBridgeCall(h, a.type, {}));
        break;
      case 'copy':
        report(dispatchBridgeCall(h, 'copyText', { text: a.text }));
        break;
      case 'setExitNode':
        report(dispatchBridgeCall(h, 'setExitNode', { id: a.id, allowLan: a.allowLan }));
        break;
      case 'login':
        this.showWindow('main');
        break;
      case 'open':
        this.showWindow(a.view);
        break;
      case 'quit':
        this.quitting = true;
        void this.o.supervisor.stop().finally(() => this.o.electron.app.quit());
        break;
    }
  }

  private handleDeepLink(link: DeepLink | null): void {
    if (link?.type === 'open') this.showWindow(link.view);
    else this.showWindow('main');
  }

  showWindow(view?: View): void {
    const { BrowserWindow } = this.o.electron;
    if (!this.window || this.window.isDestroyed()) {
      const dark = this.o.electron.nativeTheme.shouldUseDarkColors;
      const win = new BrowserWindow(
        mainWindowOptions(this.o.preloadPath, join(this.o.assetsDir, 'icon.png'), dark),
      );
      this.window = win;
      win.on('close', (e) => {
        if (!this.quitting) {
          e.preventDefault();
          win.hide();
        }
      });
      win.once('ready-to-show', () => win.show());
      win.webContents.on('did-finish-load', () => {
        if (this.pendingView) this.send('navigate', { view: this.pendingView });
        this.pendingView = null;
      });
      this.pendingView = view ?? null;
      void win.loadFile(join(this.o.rendererDir, 'index.html'));
      return;
    }
    if (view) this.send('navigate', { view });
    if (this.window.isMinimized()) this.window.restore();
    this.window.show();
    this.window.focus();
  }
}
