import {
  type AppState,
  type BridgePeer,
  type ConnectionPhase,
  connectionPhase,
  exitNodeOptions,
  primaryAddress,
} from '@weft/protocol';

// The tray menu as a pure function of the app state. Items carry actions as data, not closures,
// so every state's menu is testable; tray.ts turns them into Electron menu items.

export type TrayAction =
  | { type: 'connect' }
  | { type: 'disconnect' }
  | { type: 'copy'; text: string }
  | { type: 'setExitNode'; id: string | null; allowLan: boolean }
  | { type: 'login' }
  | { type: 'openAuthUrl' }
  | { type: 'cancelLogin' }
  | { type: 'logout' }
  | { type: 'open'; view: 'main' | 'exit-nodes' | 'settings' }
  | { type: 'quit' };

export type TrayItem =
  | { kind: 'separator' }
  | {
      kind: 'item';
      id: string;
      label: string;
      enabled: boolean;
      action?: TrayAction;
      /** 'checkbox' and 'radio' items show `checked`. */
      type?: 'normal' | 'checkbox' | 'radio';
      checked?: boolean;
      submenu?: TrayItem[];
      accelerator?: string;
    };

const sep: TrayItem = { kind: 'separator' };

function item(
  id: string,
  label: string,
  extra: Partial<Extract<TrayItem, { kind: 'item' }>> = {},
): Extract<TrayItem, { kind: 'item' }> {
  return { kind: 'item', id, label, enabled: true, ...extra };
}

/** Escapes `&`, which Electron on Windows and Linux would treat as a mnemonic marker. */
export function menuText(s: string): string {
  return s.replace(/&/g, '&&');
}

const PHASE_LABEL: Record<ConnectionPhase, string> = {
  'needs-login': 'Signed out',
  connecting: 'Connecting…',
  connected: 'Connected',
  'exit-node': 'Connected',
  disconnected: 'Disconnected',
  error: 'Not working',
};

function peerLabel(p: BridgePeer): string {
  const addr = primaryAddress(p.addresses);
  return menuText(`${p.name}${addr ? ` (${addr})` : ''}${p.online ? '' : ' — offline'}`);
}

export function trayTooltip(s: AppState): string {
  const phase = connectionPhase(s);
  if (phase === 'error') return `Weft: ${s.engineError ?? s.helper.message ?? 'not working'}`;
  if (phase === 'exit-node') {
    const { current } = exitNodeOptions(s);
    return `Weft: connected via ${current?.name ?? 'exit node'}`;
  }
  return `Weft: ${PHASE_LABEL[phase].toLowerCase()}`;
}

export function buildTrayMenu(s: AppState): TrayItem[] {
  const phase = connectionPhase(s);
  const engine = s.engine;
  const self = engine?.self ?? null;
  const signedIn = engine !== null && engine.backendState !== 'NeedsLogin' && self !== null;
  const items: TrayItem[] = [];

  items.push(item('status', PHASE_LABEL[phase], { enabled: false }));
  if (phase === 'error') {
    const why =
      s.engine === null
        ? (s.engineError ?? 'The engine is not running')
        : (s.helper.message ?? 'The network helper cannot run');
    items.push(item('error', menuText(why), { enabled: false }));
  }

  if (!signedIn) {
    items.push(sep);
    if (s.login.phase === 'waiting' && s.login.authUrl) {
      items.push(
        item('open-auth', 'Continue signing in in the browser…', { action: { type: 'openAuthUrl' } }),
      );
      items.push(item('copy-auth', 'Copy sign-in link', { action: { type: 'copy', text: s.login.authUrl } }));
      items.push(item('cancel-login', 'Cancel sign-in', { action: { type: 'cancelLogin' } }));
    } else if (s.login.phase === 'starting') {
      items.push(item('login', 'Signing in…', { enabled: false }));
    } else {
      items.push(item('login', 'Sign in…', { enabled: engine !== null, action: { type: 'login' } }));
    }
  } else {
    const on = phase === 'connected' || phase === 'exit-node' || phase === 'connecting';
    items.push(
      item('connect', 'Connected', {
        type: 'checkbox',
        checked: on,
        enabled: s.pending === null || s.pending === 'exit-node',
        action: on ? { type: 'disconnect' } : { type: 'connect' },
      }),
    );
    items.push(sep);
    const addr = primaryAddress(self.addresses);
    items.push(
      item('self', menuText(`This device: ${self.name}${addr ? ` (${addr})` : ''}`), {
        enabled: addr !== null,
        ...(addr ? { action: { type: 'copy', text: addr } as TrayAction } : {}),
      }),
    );
    items.push(item('peers', 'Network devices', { submenu: peersSubmenu(engine.peers) }));
    items.push(item('exit-nodes', 'Exit nodes', { submenu: exitSubmenu(s) }));
    items.push(sep);
    const who = engine.user?.loginName ?? engine.user?.displayName ?? 'Signed in';
    items.push(
      item('account', menuText(who), {
        submenu: [
          item('account-who', menuText(engine.user?.displayName ?? who), { enabled: false }),
          ...(engine.controlUrl
            ? [item('account-server', menuText(engine.controlUrl), { enabled: false })]
            : []),
          sep,
          item('logout', 'Sign out', { action: { type: 'logout' } }),
        ],
      }),
    );
  }

  items.push(sep);
  items.push(item('open', 'Open Weft', { action: { type: 'open', view: 'main' } }));
  items.push(
    item('preferences', 'Preferences…', {
      action: { type: 'open', view: 'settings' },
      accelerator: 'CmdOrCtrl+,',
    }),
  );
  items.push(item('quit', 'Quit Weft', { action: { type: 'quit' }, accelerator: 'CmdOrCtrl+Q' }));
  return items;
}

/** Online devices first, then by name; a click copies the device's address. */
function peersSubmenu(peers: readonly BridgePeer[]): TrayItem[] {
  if (peers.length === 0) return [item('peers-none', 'No other devices', { enabled: false })];
  const sorted = [...peers].sort(
    (a, b) => Number(b.online) - Number(a.online) || a.name.localeCompare(b.name),
  );
  return sorted.map((p) => {
    const addr = primaryAddress(p.addresses);
    return item(`peer-${p.id}`, peerLabel(p), {
      enabled: addr !== null,
      ...(addr ? { action: { type: 'copy', text: addr } as TrayAction } : {}),
    });
  });
}

function exitSubmenu(s: AppState): TrayItem[] {
  const { recommended, list, current, allowLan } = exitNodeOptions(s);
  const currentId = current?.id ?? s.engine?.exitNode?.id ?? null;
  const out: TrayItem[] = [
    item('exit-none', 'None', {
      type: 'radio',
      checked: currentId === null,
      action: { type: 'setExitNode', id: null, allowLan },
    }),
  ];
  if (recommended) {
    out.push(
      item('exit-recommended', menuText(`Recommended: ${recommended.name}`), {
        type: 'radio',
        checked: false,
        action: { type: 'setExitNode', id: recommended.id, allowLan },
      }),
    );
  }
  if (list.length > 0) out.push(sep);
  for (const p of list) {
    out.push(
      item(
        `exit-${p.id}`,
        menuText(`${p.name}${p.location ? ` — ${p.location}` : ''}${p.online ? '' : ' (offline)'}`),
        {
          type: 'radio',
          checked: p.id === currentId,
          enabled: p.online,
          action: { type: 'setExitNode', id: p.id, allowLan },
        },
      ),
    );
  }
  if (list.length === 0) out.push(item('exit-empty', 'No exit nodes in your network', { enabled: false }));
  out.push(sep);
  out.push(
    item('exit-allow-lan', 'Allow local network access', {
      type: 'checkbox',
      checked: allowLan,
      action: { type: 'setExitNode', id: currentId, allowLan: !allowLan },
    }),
  );
  return out;
}

// ───────────── icons ─────────────

export type IconVariant = 'light' | 'dark' | 'template';

/**
 * The tray image for a phase. macOS gets template images (the OS tints them); elsewhere the
 * variant follows the panel: 'dark' art for dark panels, 'light' art for light ones.
 */
export function trayIconFile(
  phase: ConnectionPhase,
  platform: NodeJS.Platform,
  darkPanel: boolean,
): { file: string; template: boolean } {
  if (platform === 'darwin') return { file: `tray/${phase}-template.png`, template: true };
  return { file: `tray/${phase}-${darkPanel ? 'dark' : 'light'}.png`, template: false };
}
