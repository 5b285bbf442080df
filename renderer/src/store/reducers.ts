import type { AppState, BridgePeer, CallName, View } from '@weft/protocol';

// The store's data and its pure reducers, one per slice. The zustand store only dispatches here.

export type Link = 'booting' | 'live' | 'lost';

export interface SessionSlice {
  /** The latest snapshot from the bridge; null until the boot snapshot arrives. */
  app: AppState | null;
  link: Link;
  bootError: string | null;
}

export interface Toast {
  id: number;
  level: 'info' | 'error';
  message: string;
}

export interface UiSlice {
  view: View;
  peerQuery: string;
  exitQuery: string;
  toasts: Toast[];
  nextToastId: number;
  /** Calls in flight, to disable their controls. */
  busy: Partial<Record<CallName, true>>;
}

export interface StoreData {
  session: SessionSlice;
  ui: UiSlice;
}

export type Action =
  | { type: 'state'; state: AppState }
  | { type: 'link'; link: Link }
  | { type: 'bootError'; message: string }
  | { type: 'navigate'; view: View }
  | { type: 'peerQuery'; query: string }
  | { type: 'exitQuery'; query: string }
  | { type: 'toast'; level: Toast['level']; message: string }
  | { type: 'dismissToast'; id: number }
  | { type: 'busy'; call: CallName; on: boolean };

export const MAX_TOASTS = 3;

export function initialData(): StoreData {
  return {
    session: { app: null, link: 'booting', bootError: null },
    ui: { view: 'main', peerQuery: '', exitQuery: '', toasts: [], nextToastId: 1, busy: {} },
  };
}

export function sessionReducer(s: SessionSlice, a: Action): SessionSlice {
  switch (a.type) {
    case 'state':
      // Snapshots may cross (the boot reply after a newer event): keep the newest.
      if (s.app && a.state.seq < s.app.seq) return s;
      return { ...s, app: a.state, bootError: null };
    case 'link':
      return s.link === a.link ? s : { ...s, link: a.link };
    case 'bootError':
      return { ...s, bootError: a.message };
    default:
      return s;
  }
}

export function uiReducer(u: UiSlice, a: Action): UiSlice {
  switch (a.type) {
    case 'navigate':
      return { ...u, view: a.view, exitQuery: a.view === 'exit-nodes' ? u.exitQuery : '' };
    case 'peerQuery':
      return { ...u, peerQuery: a.query };
    case 'exitQuery':
      return { ...u, exitQuery: a.query };
    case 'toast': {
      const toast = { id: u.nextToastId, level: a.level, message: a.message };
      return { ...u, toasts: [...u.toasts, toast].slice(-MAX_TOASTS), nextToastId: u.nextToastId + 1 };
    }
    case 'dismissToast':
      return { ...u, toasts: u.toasts.filter((t) => t.id !== a.id) };
    case 'busy': {
      const busy = { ...u.busy };
      if (a.on) busy[a.call] = true;
      else delete busy[a.call];
      return { ...u, busy };
    }
    default:
      return u;
  }
}

export function reduce(d: StoreData, a: Action): StoreData {
  const session = sessionReducer(d.session, a);
  const ui = uiReducer(d.ui, a);
  return session === d.session && ui === d.ui ? d : { session, ui };
}

// ───────────── selectors (pure) ─────────────

/** Peers matching a search over name, addresses, owner, OS, tags and location; online first. */
export function filterPeers(peers: readonly BridgePeer[], query: string): BridgePeer[] {
  const words = query.toLowerCase().split(/\s+/).filter(Boolean);
  const hay = (p: BridgePeer) =>
    [p.name, p.os, p.user ?? '', p.location ?? '', ...p.tags, ...p.addresses].join(' ').toLowerCase();
  return peers
    .filter((p) => words.every((w) => hay(p).includes(w)))
    .sort((a, b) => Number(b.online) - Number(a.online) || a.name.localeCompare(b.name));
}

/** "just now", "5 min ago", "3 h ago", "2 days ago"; null for no time. */
export function relativeTime(iso: string | null | undefined, now: number): string | null {
  if (!iso) return null;
  const t = Date.parse(iso);
  if (Number.isNaN(t)) return null;
  const s = Math.max(0, Math.round((now - t) / 1000));
  if (s < 60) return 'just now';
  const m = Math.round(s / 60);
  if (m < 60) return `${m} min ago`;
  const h = Math.round(m / 60);
  if (h < 24) return `${h} h ago`;
  const d = Math.round(h / 24);
  return d === 1 ? '1 day ago' : `${d} days ago`;
}

const OS_NAMES: Record<string, string> = {
  linux: 'Linux',
  windows: 'Windows',
  macos: 'macOS',
  darwin: 'macOS',
  ios: 'iOS',
  android: 'Android',
  freebsd: 'FreeBSD',
};

export function osName(os: string | undefined): string {
  if (!os) return 'Unknown OS';
  return OS_NAMES[os.toLowerCase()] ?? os;
}
