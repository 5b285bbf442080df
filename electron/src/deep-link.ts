// weft:// deep links. Anything not on this list is ignored: a link is an untrusted input from any
// web page or app on the machine, so it can only navigate, never act.

export const DEEP_LINK_SCHEME = 'weft';

export type DeepLink =
  | { type: 'open'; view: 'main' | 'exit-nodes' | 'settings' }
  | { type: 'login-complete' };

const VIEWS: Record<string, 'main' | 'exit-nodes' | 'settings'> = {
  '': 'main',
  open: 'main',
  peers: 'main',
  'exit-nodes': 'exit-nodes',
  settings: 'settings',
};

export function parseDeepLink(raw: string): DeepLink | null {
  if (raw.length > 2048) return null;
  let u: URL;
  try {
    u = new URL(raw);
  } catch {
    return null;
  }
  if (u.protocol !== `${DEEP_LINK_SCHEME}:`) return null;
  // weft://settings parses with host "settings"; weft:settings with pathname "settings".
  const where = `${u.host}${u.pathname}`.replace(/^\/+|\/+$/g, '');
  if (where === 'login-complete') return { type: 'login-complete' };
  const view = VIEWS[where];
  return view ? { type: 'open', view } : null;
}

/** The deep link among a second instance's command-line arguments, if any. */
export function deepLinkFromArgv(argv: readonly string[]): string | null {
  return argv.find((a) => a.startsWith(`${DEEP_LINK_SCHEME}:`)) ?? null;
}
