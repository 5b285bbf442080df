import { describe, expect, it } from 'vitest';
import { httpTransport, takeToken } from './http.js';

class FakeSocket {
  static all: FakeSocket[] = [];
  onopen: (() => void) | null = null;
  onmessage: ((e: { data: string }) => void) | null = null;
  onclose: (() => void) | null = null;
  constructor(readonly url: string) {
    FakeSocket.all.push(this);
  }
  close() {
    this.onclose?.();
  }
}

describe('web shell transport', () => {
  it('POSTs calls with the token; copyText stays in the browser', async () => {
    const requests: { url: string; init: RequestInit }[] = [];
    const copied: string[] = [];
    const t = httpTransport({
      origin: 'http://127.0.0.1:5000',
      token: 'tok',
      fetch: (async (url: URL, init: RequestInit) => {
        requests.push({ url: String(url), init });
        return new Response(JSON.stringify({ ok: true, value: { ok: true } }));
      }) as unknown as typeof fetch,
      WebSocket: FakeSocket as unknown as typeof WebSocket,
      copy: async (text) => {
        copied.push(text);
      },
    });
    expect(await t.call('setExitNode', { id: null, allowLan: false })).toEqual({
      ok: true,
      value: { ok: true },
    });
    expect(requests[0]?.url).toBe('http://127.0.0.1:5000/bridge/v0/call/setExitNode');
    expect((requests[0]?.init.headers as Record<string, string> | undefined)?.authorization).toBe(
      'Bearer tok',
    );
    expect(await t.call('copyText', { text: '100.64.0.2' })).toEqual({ ok: true, value: { ok: true } });
    expect(copied).toEqual(['100.64.0.2']);
    expect(requests).toHaveLength(1);
  });

  it('an unreachable shell is an "unavailable" result, not a throw', async () => {
    const t = httpTransport({
      origin: 'http://127.0.0.1:5000',
      token: 'tok',
      fetch: (async () => {
        throw new TypeError('fetch failed');
      }) as unknown as typeof fetch,
      WebSocket: FakeSocket as unknown as typeof WebSocket,
    });
    expect(await t.call('connect', {})).toMatchObject({ ok: false, error: { code: 'unavailable' } });
  });

  it('events over one WebSocket with the token; reconnects with back-off after a drop', async () => {
    FakeSocket.all = [];
    const links: boolean[] = [];
    const t = httpTransport({
      origin: 'https://127.0.0.1:5000',
      token: 'a b',
      WebSocket: FakeSocket as unknown as typeof WebSocket,
      onLink: (up) => links.push(up),
    });
    const got: unknown[] = [];
    t.onEvent((m) => got.push(m));
    t.onEvent(() => {});
    expect(FakeSocket.all).toHaveLength(1);
    const ws = FakeSocket.all[0] as FakeSocket;
    expect(ws.url).toBe('wss://127.0.0.1:5000/bridge/v0/events?token=a+b');
    ws.onopen?.();
    ws.onmessage?.({ data: '{"event":"navigate","payload":{"view":"main"}}' });
    ws.onmessage?.({ data: 'not json' });
    expect(got).toEqual([{ event: 'navigate', payload: { view: 'main' } }]);
    ws.onclose?.();
    await new Promise((r) => setTimeout(r, 300));
    expect(FakeSocket.all).toHaveLength(2);
    expect(links).toEqual([true, false]);
    t.close();
  });

  it('takes the token from the URL once, then from session storage', () => {
    const store = new Map<string, string>();
    const storage = {
      getItem: (k: string) => store.get(k) ?? null,
      setItem: (k: string, v: string) => store.set(k, v),
    } as unknown as Storage;
    const replaced: string[] = [];
    const history = {
      replaceState: (_a: unknown, _b: string, url: string) => replaced.push(url),
    } as unknown as History;
    const loc = (search: string, hash = '') => ({ search, hash, pathname: '/' }) as Location;
    expect(takeToken(loc('?token=abc'), storage, history)).toBe('abc');
    expect(replaced).toEqual(['/']);
    expect(takeToken(loc(''), storage, history)).toBe('abc');
    expect(takeToken(loc('', '#token=xyz'), storage, history)).toBe('xyz');
  });
});
