import { join } from 'node:path';

// Launch at login: Electron's login items on macOS and Windows; an XDG autostart entry on Linux,
// where Electron has none.

export interface LoginItemDeps {
  platform: NodeJS.Platform;
  /** electron's app.setLoginItemSettings */
  setLoginItemSettings(settings: { openAtLogin: boolean; args?: string[] }): void;
  home: string;
  /** XDG_CONFIG_HOME when set. */
  xdgConfigHome?: string | undefined;
  execPath: string;
  writeFile(path: string, text: string): void;
  removeFile(path: string): void;
  mkdir(path: string): void;
}

export function autostartPath(d: Pick<LoginItemDeps, 'home' | 'xdgConfigHome'>): string {
  return join(d.xdgConfigHome || join(d.home, '.config'), 'autostart', 'weft.desktop');
}

/** The desktop entry; the path is quoted as the Desktop Entry spec wants for Exec. */
export function autostartEntry(execPath: string): string {
  const quoted = `"${execPath.replace(/(["`$\\])/g, '\\$1')}"`;
  return [
    '[Desktop Entry]',
    'Type=Application',
    'Name=Weft',
    'Comment=Weft mesh VPN',
    `Exec=${quoted} --hidden`,
    'Icon=weft',
    'X-GNOME-Autostart-enabled=true',
    'Terminal=false',
    '',
  ].join('\n');
}

export function setLaunchAtLogin(d: LoginItemDeps, on: boolean): void {
  if (d.platform === 'linux') {
    const path = autostartPath(d);
    if (on) {
      d.mkdir(join(path, '..'));
      d.writeFile(path, autostartEntry(d.execPath));
    } else {
      d.removeFile(path);
    }
    return;
  }
  d.setLoginItemSettings({ openAtLogin: on, args: on ? ['--hidden'] : [] });
}
