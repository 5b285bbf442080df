import type { ElectronApis } from '../app.js';

// Just enough of Electron's main-process API for DesktopApp, recording what the app does.

type Handler = (...args: never[]) => unknown;

class Emitter {
  readonly handlers = new Map<string, Handler[]>();
  on(name: string, h: Handler) {
    this.handlers.set(name, [...(this.handlers.get(name) ?? []), h]);
    return this;
  }
  once(name: string, h: Handler) {
    return this.on(name, h);
  }
  emit(name: string, ...args: unknown[]) {
    for (const h of this.handlers.get(name) ?? []) (h as (...a: unknown[]) => unknown)(...args);
  }
}

export function fakeElectron(opts: { lock?: boolean } = {}) {
  const log: string[] = [];
  const sent: { channel: string; message: unknown }[] = [];
  const windows: FakeWindow[] = [];
  const trays: FakeTray[] = [];
  const ipc = new Map<string, Handler>();
  const notifications: { title: string; body: string }[] = [];

  class FakeWebContents extends Emitter {
    destroyed = false;
    send(channel: string, message: unknown) {
      sent.push({ channel, message });
    }
    isDestroyed() {
      return this.destroyed;
    }
    setWindowOpenHandler() {}
  }
  class FakeWindow extends Emitter {
    readonly webContents = new FakeWebContents();
    visible = false;
    loaded: string | null = null;
    constructor(readonly options: unknown) {
      super();
      windows.push(this);
    }
    async loadFile(path: string) {
      this.loaded = path;
    }
    show() {
      this.visible = true;
    }
    hide() {
      this.visible = false;
    }
    focus() {}
    isMinimized() {
      return false;
    }
    restore() {}
    isDestroyed() {
      return false;
    }
  }
  class FakeTray extends Emitter {
    image: { path: string } | null = null;
    tooltip = '';
    menu: unknown = null;
    constructor(image: { path: string }) {
      super();
      this.image = image;
      trays.push(this);
    }
    setImage(i: { path: string }) {
      this.image = i;
    }
    setToolTip(t: string) {
      this.tooltip = t;
    }
    setContextMenu(m: unknown) {
      this.menu = m;
    }
  }
  class FakeNotification extends Emitter {
    static isSupported() {
      return true;
    }
    constructor(readonly o: { title: string; body: string }) {
      super();
    }
    show() {
      notifications.push({ title: this.o.title, body: this.o.body });
    }
  }
  const app = new (class extends Emitter {
    requestSingleInstanceLock() {
      return opts.lock ?? true;
    }
    quit() {
      log.push('quit');
    }
    whenReady() {
      return Promise.resolve();
    }
    isDefaultProtocolClient() {
      return false;
    }
    setAsDefaultProtocolClient(scheme: string) {
      log.push(`protocol ${scheme}`);
      return true;
    }
  })();
  const electron = {
    app,
    BrowserWindow: FakeWindow,
    Tray: FakeTray,
    Menu: { buildFromTemplate: (t: unknown) => t },
    nativeImage: {
      createFromPath: (path: string) => ({ path, setTemplateImage: () => log.push(`template ${path}`) }),
    },
    nativeTheme: Object.assign(new Emitter(), { shouldUseDarkColors: true }),
    shell: { openExternal: async (u: string) => log.push(`open ${u}`) },
    clipboard: { writeText: (t: string) => log.push(`copy ${t}`) },
    Notification: FakeNotification,
    ipcMain: { handle: (channel: string, h: Handler) => ipc.set(channel, h) },
    session: {
      defaultSession: {
        setPermissionRequestHandler: () => {},
        setPermissionCheckHandler: () => {},
        webRequest: { onBeforeRequest: () => {} },
      },
    },
  };
  return {
    electron: electron as unknown as ElectronApis,
    app,
    log,
    sent,
    windows,
    trays,
    ipc,
    notifications,
  };
}
