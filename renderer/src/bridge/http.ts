import { type BridgeResult, type BridgeTransport, type CallName, WEB_BRIDGE } from '@weft/protocol';

// The web shell's transport: calls as POST requests, events over one WebSocket that reconnects
// with back-off. The server sends a full `state` event first on every (re)connection, so a client
// that was away catches up without asking.

export interface HttpTransportOptions {
  /** Origin of the web shell, e.g. http://127.0.0.1:41112 */
  origin: string;
  token: string;
  fetch?: typeof fetch;
  WebSocket?: typeof WebSocket;
  /** Copies text on this machine (the server's clipboard is not the person's). */
  copy?: (text: string) => Promise<void>;
  onLink?: (up: boolean) => void;
}

export interface HttpTransport extends BridgeTransport {
  close(): void;
}

export async function copyWithBrowser(text: string): Promise<void> {
  if (navigator.clipboard?.writeText) {
    try {
      await navigator.clipboard.writeText(text);
      return;
    } catch {
      // fall through: not focused or not permitted
    }
  }
  const area = document.createElement('textarea');
  area.value = text;
  area.setAttribute('readonly', '');
  area.style.position = 'fixed';
  area.style.opacity = '0';
  document.body.append(area);
  area.select();
  const done = document.execCommand('copy');
  area.remove();
  if (!done) throw new Error('The browser refused to copy');
}

const unavailable = (message: string): BridgeResult => ({
  ok: false,
  error: { code: 'unavailable', message },
});

export function httpTransport(opts: HttpTransportOptions): HttpTransport {
  const doFetch = opts.fetch ?? fetch.bind(globalThis);
  const WS = opts.WebSocket ?? WebSocket;
  const copy = opts.copy ?? copyWithBrowser;
  const listeners = new Set<(m: unknown) => void>();
  let socket: WebSocket | null = null;
  let closed = false;
  let backoff = 250;
  let timer: ReturnType<typeof setTimeout> | null = null;

  const wsUrl = () => {
    const u = new URL(WEB_BRIDGE.events, opts.origin);
    u.protocol = u.protocol === 'https:' ? 'wss:' : 'ws:';
    u.searchParams.set(WEB_BRIDGE.tokenParam, opts.token);
    return u.toString();
  };

  const open = () => {
    if (closed) return;
    const ws = new WS(wsUrl());
    socket = ws;
    ws.onopen = () => {
      backoff = 250;
      opts.onLink?.(true);
    };
    ws.onmessage = (ev) => {
      let msg: unknown;
      try {
        msg = JSON.parse(String(ev.data));
      } catch {
        return;
      }
      for (const l of listeners) l(msg);
    };
    ws.onclose = () => {
      if (socket === ws) socket = null;
      opts.onLink?.(false);
      if (closed) return;
      timer = setTimeout(open, backoff);
      backoff = Math.min(backoff * 2, 5000);
    };
  };

  return {
    async call(method: CallName, input: unknown): Promise<unknown> {
      if (method === 'copyText') {
        try {
          await copy((input as { text: string }).text);
          return { ok: true, value: { ok: true } };
        } catch (e) {
          return { ok: false, error: { code: 'failed', message: (e as Error).message } };
        }
      }
      let res: Response;
      try {
        res = await doFetch(new URL(`${WEB_BRIDGE.call}/${method}`, opts.origin), {
          method: 'POST',
          headers: { 'content-type': 'application/json', authorization: `Bearer ${opts.token}` },
          body: JSON.stringify(input ?? {}),
        });
      } catch {
        return unavailable('Cannot reach Weft. Is it still running?');
      }
      try {
        return await res.json();
      } catch {
        return unavailable(`Weft answered ${res.status}`);
      }
    },
    onEvent(listener) {
      listeners.add(listener);
      if (!socket && !timer) open();
      return () => listeners.delete(listener);
    },
    close() {
      closed = true;
      if (timer) clearTimeout(timer);
      socket?.close();
    },
  };
}

/**
 * The token from the shell's URL (`?token=` or `#token=`), remembered for this tab so a reload
 * works, and removed from the address bar so it is not shared by accident.
 */
export function takeToken(loc: Location, storage: Storage, history: History): string | null {
  const fromQuery = new URLSearchParams(loc.search).get(WEB_BRIDGE.tokenParam);
  const fromHash = new URLSearchParams(loc.hash.replace(/^#/, '')).get(WEB_BRIDGE.tokenParam);
  const token = fromQuery ?? fromHash;
  if (token) {
    storage.setItem('weft.token', token);
    history.replaceState(null, '', loc.pathname);
    return token;
  }
  return storage.getItem('weft.token');
}
