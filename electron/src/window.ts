import type { BrowserWindow, BrowserWindowConstructorOptions, WebContents } from 'electron';

// Hardened windows: isolated, sandboxed, no Node in the page, no navigation away from the app's
// own files, no new windows (a link to the pending sign-in page goes to the system browser).

export function secureWebPreferences(
  preload: string,
): NonNullable<BrowserWindowConstructorOptions['webPreferences']> {
  return {
    preload,
    contextIsolation: true,
    sandbox: true,
    nodeIntegration: false,
    nodeIntegrationInWorker: false,
    nodeIntegrationInSubFrames: false,
    webSecurity: true,
    allowRunningInsecureContent: false,
    experimentalFeatures: false,
    webviewTag: false,
    navigateOnDragDrop: false,
    spellcheck: false,
  };
}

/** True for the app's own page: a file URL under the renderer folder. */
export function isAppUrl(url: string, appRoot: string): boolean {
  try {
    const u = new URL(url);
    if (u.protocol !== 'file:') return false;
    const root = new URL(`file://${appRoot.endsWith('/') ? appRoot : `${appRoot}/`}`);
    return decodeURIComponent(u.pathname).startsWith(decodeURIComponent(root.pathname));
  } catch {
    return false;
  }
}

export interface HardenOptions {
  appRoot: string;
  /** The URL a link may open in the system browser (the pending sign-in page), if any. */
  allowedExternal(): string | null;
  openExternal(url: string): void;
}

type Contents = Pick<WebContents, 'on' | 'setWindowOpenHandler'>;

/** Guards one webContents; used for every webContents the app creates. */
export function hardenWebContents(contents: Contents, o: HardenOptions): void {
  contents.on('will-navigate', (event, url) => {
    if (!isAppUrl(url, o.appRoot)) event.preventDefault();
  });
  contents.on('will-redirect', (event, url) => {
    if (!isAppUrl(url, o.appRoot)) event.preventDefault();
  });
  contents.on('will-attach-webview', (event) => event.preventDefault());
  contents.setWindowOpenHandler(({ url }) => {
    const allowed = o.allowedExternal();
    if (allowed !== null && url === allowed) o.openExternal(url);
    return { action: 'deny' };
  });
}

/** Refuses every permission (camera, notifications from the page, …): the page needs none. */
export function denyAllPermissions(session: {
  setPermissionRequestHandler(
    h: ((wc: WebContents, p: string, cb: (granted: boolean) => void) => void) | null,
  ): void;
  setPermissionCheckHandler(h: ((wc: WebContents | null, p: string) => boolean) | null): void;
}): void {
  session.setPermissionRequestHandler((_wc, _permission, callback) => callback(false));
  session.setPermissionCheckHandler(() => false);
}

/** Any request that is not for the app's own files is cancelled: no remote content. */
export function refuseRemoteContent(
  session: {
    webRequest: {
      onBeforeRequest(
        listener: (details: { url: string }, cb: (r: { cancel: boolean }) => void) => void,
      ): void;
    };
  },
  appRoot: string,
): void {
  session.webRequest.onBeforeRequest((details, callback) => {
    const ok = isAppUrl(details.url, appRoot) || details.url.startsWith('devtools://');
    callback({ cancel: !ok });
  });
}

/** The page's own background, so the window does not flash white in dark mode while loading. */
export function windowBackground(dark: boolean): string {
  return dark ? '#15171b' : '#f4f5f7';
}

export function mainWindowOptions(
  preload: string,
  iconPath: string,
  dark = false,
): BrowserWindowConstructorOptions {
  return {
    width: 400,
    height: 640,
    minWidth: 340,
    minHeight: 420,
    show: false,
    title: 'Weft',
    icon: iconPath,
    autoHideMenuBar: true,
    backgroundColor: windowBackground(dark),
    webPreferences: secureWebPreferences(preload),
  };
}

export type { BrowserWindow };
