// Electron entry point: the only file that imports 'electron' at run time. Everything it wires
// is unit-tested with the Electron APIs injected.
import { existsSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { AppController, filePrefsStore, LocalApiClient } from '@weft/core/bridge';
import * as electron from 'electron';
import { DesktopApp } from './app.js';
import { findAppRoot } from './app-root.js';
import { helperCommandFromEnv, probeHelper, serviceHandle, spawnHelper } from './helper-process.js';
import { setLaunchAtLogin } from './launch-at-login.js';
import { HelperSupervisor } from './supervisor.js';

const here = dirname(fileURLToPath(import.meta.url));
const root = findAppRoot(here, existsSync);
const { app, clipboard, shell } = electron;

const engineSocket = process.env.WEFT_SOCKET ?? '/run/weft/weftd.sock';
const helperSocket = process.env.WEFT_HELPER_SOCKET ?? '/run/weft-helper/helper.sock';

const engine = new LocalApiClient(engineSocket, { timeoutMs: 15_000 });
const controller = new AppController({
  engine,
  prefs: filePrefsStore(join(app.getPath('userData'), 'preferences.json'), (m) => console.warn(m)),
  openExternal: (url) => shell.openExternal(url),
  copyText: (text) => clipboard.writeText(text),
  setLaunchAtLogin: (on) =>
    setLaunchAtLogin(
      {
        platform: process.platform,
        setLoginItemSettings: (s) => app.setLoginItemSettings(s),
        home: homedir(),
        xdgConfigHome: process.env.XDG_CONFIG_HOME,
        execPath: process.env.APPIMAGE ?? process.execPath,
        writeFile: (p, t) => writeFileSync(p, t, { mode: 0o644 }),
        removeFile: (p) => rmSync(p, { force: true }),
        mkdir: (p) => mkdirSync(p, { recursive: true }),
      },
      on,
    ),
  shell: 'electron',
  version: app.getVersion(),
  autoOpenAuthUrl: true,
});

const devHelper = helperCommandFromEnv(process.env.WEFT_HELPER_COMMAND);
const supervisor = new HelperSupervisor({
  start: async () => (devHelper ? spawnHelper(devHelper) : serviceHandle()),
  healthCheck: () => probeHelper(helperSocket),
  // An engine older than POST /reapply re-applies by itself when the helper reconnects.
  reapply: () =>
    engine.reapply().then(
      () => {},
      (e: { httpStatus?: number | null }) => {
        if (e.httpStatus !== 404) throw e;
      },
    ),
  // The installed service is systemd's to restart; the app watches it and says where to look.
  onState: (h) =>
    controller.setHelperState(
      devHelper
        ? h
        : {
            ...h,
            phase: h.phase === 'running' ? 'external' : h.phase,
            message: h.message && `${h.message} (check: systemctl status weft-helper)`,
          },
    ),
});

new DesktopApp({
  electron,
  controller,
  supervisor,
  rendererDir: join(root, 'renderer', 'dist'),
  assetsDir: join(root, 'assets'),
  preloadPath: join(here, 'preload.cjs'),
  platform: process.platform,
  argv: process.argv,
  log: (m) => console.log(m),
}).run();
