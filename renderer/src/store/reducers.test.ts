import { demoPeers } from '@weft/core/bridge/testing';
import { DemoApp } from '@weft/core/web/testing';
import {
  AppState,
  type BridgeClient,
  type BridgeTransport,
  createBridgeClient,
  dispatchBridgeCall,
  makeEventMessage,
} from '@weft/protocol';
import { describe, expect, it } from 'vitest';
import { filterPeers, initialData, MAX_TOASTS, osName, reduce, relativeTime } from './reducers.js';
import { boot, createWeftStore } from './store.js';

const NOW = Date.parse('2026-11-25T12:00:00Z');

function snapshot(seq: number): AppState {
  const b = new DemoApp({ signedIn: true, now: () => NOW });
  const s = structuredClone(b.state);
  b.dispose();
  return { ...s, seq };
}

describe('store reducers', () => {
  it('keeps the newest snapshot when the boot reply and an event cross', () => {
    let d = initialData();
    d = reduce(d, { type: 'state', state: snapshot(5) });
    d = reduce(d, { type: 'state', state: snapshot(3) }); // an older getState reply arriving late
    expect(d.session.app?.seq).toBe(5);
    d = reduce(d, { type: 'state', state: snapshot(6) });
    expect(d.session.app?.seq).toBe(6);
  });

  it('a snapshot clears a boot error; link changes are recorded once', () => {
    let d = reduce(initialData(), { type: 'bootError', message: 'Cannot reach Weft' });
    expect(d.session.bootError).toBe('Cannot reach Weft');
    d = reduce(d, { type: 'state', state: snapshot(1) });
    expect(d.session.bootError).toBeNull();
    const live = reduce(d, { type: 'link', link: 'live' });
    expect(reduce(live, { type: 'link', link: 'live' })).toBe(live);
  });

  it('navigation keeps the exit-node search only on that screen', () => {
    let d = reduce(initialData(), { type: 'navigate', view: 'exit-nodes' });
    d = reduce(d, { type: 'exitQuery', query: 'berlin' });
    expect(d.ui.exitQuery).toBe('berlin');
    d = reduce(d, { type: 'navigate', view: 'main' });
    expect(d.ui).toMatchObject({ view: 'main', exitQuery: '' });
  });

  it('toasts: newest kept, at most MAX_TOASTS, dismissable by id', () => {
    let d = initialData();
    for (let i = 0; i < MAX_TOASTS + 2; i++)
      d = reduce(d, { type: 'toast', level: 'info', message: `t${i}` });
    expect(d.ui.toasts.map((t) => t.message)).toEqual(['t2', 't3', 't4']);
    d = reduce(d, { type: 'dismissToast', id: d.ui.toasts[0]?.id ?? 0 });
    expect(d.ui.toasts.map((t) => t.message)).toEqual(['t3', 't4']);
  });

  it('busy flags per call', () => {
    let d = reduce(initialData(), { type: 'busy', call: 'connect', on: true });
    expect(d.ui.busy).toEqual({ connect: true });
    d = reduce(d, { type: 'busy', call: 'connect', on: false });
    expect(d.ui.busy).toEqual({});
  });

  it('unrelated actions return the same object (no re-render)', () => {
    const d = initialData();
    expect(reduce(d, { type: 'link', link: 'booting' })).toBe(d);
  });
});

describe('selectors', () => {
  const peers = demoPeers(NOW);
  const names = (q: string) => filterPeers(peers, q).map((p) => p.name);

  it('search matches name, address, owner, OS, tag, location; online first', () => {
    expect(names('')).toEqual([
      'alice-desktop',
      'build-server',
      'fra-exit',
      'nas',
      'office-gw',
      'bob-phone',
      'pi-exit',
    ]);
    expect(names('exit')).toEqual(['fra-exit', 'office-gw', 'pi-exit']);
    expect(names('100.64.0.6')).toEqual(['bob-phone']);
    expect(names('bob@')).toEqual(['bob-phone']);
    expect(names('tag:ci')).toEqual(['build-server']);
    expect(names('BERLIN')).toEqual(['office-gw']);
    expect(names('linux exit')).toEqual(['fra-exit', 'office-gw', 'pi-exit']);
  });

  it('relative times and OS names', () => {
    const ago = (ms: number) => new Date(NOW - ms).toISOString();
    expect(relativeTime(ago(10_000), NOW)).toBe('just now');
    expect(relativeTime(ago(5 * 60_000), NOW)).toBe('5 min ago');
    expect(relativeTime(ago(2 * 3_600_000), NOW)).toBe('2 h ago');
    expect(relativeTime(ago(26 * 3_600_000), NOW)).toBe('1 day ago');
    expect(relativeTime(ago(9 * 86_400_000), NOW)).toBe('9 days ago');
    expect(relativeTime(null, NOW)).toBeNull();
    expect(relativeTime('yesterday', NOW)).toBeNull();
    expect(osName('ios')).toBe('iOS');
    expect(osName('plan9')).toBe('plan9');
  });
});

describe("store fed by the bridge (the web shell's controller over a stand-in engine)", () => {
  function wire(backend: DemoApp): BridgeClient {
    const transport: BridgeTransport = {
      call: (m, i) => dispatchBridgeCall(backend.handlers, m, i),
      onEvent: (l) => backend.subscribe(l),
    };
    return createBridgeClient(transport);
  }

  it('boots from one snapshot and follows events; a failing call becomes an error toast', async () => {
    const backend = new DemoApp({ delayMs: 1 });
    const bridge = wire(backend);
    const store = createWeftStore(bridge);
    await boot(store, bridge);
    expect(store.getState().session.app?.engine?.backendState).toBe('NeedsLogin');
    expect(AppState.safeParse(store.getState().session.app).success).toBe(true);

    await store.getState().run('connect');
    expect(store.getState().ui.toasts.at(-1)).toMatchObject({ level: 'error', message: 'Sign in first' });
    expect(store.getState().ui.busy).toEqual({});

    await store.getState().run('login', { controlUrl: 'https://weft.example.com' });
    expect(store.getState().session.app?.login.phase).toBe('starting');
    await new Promise((r) => setTimeout(r, 20));
    const authUrl = store.getState().session.app?.login.authUrl ?? '';
    expect(authUrl).toBe('https://weft.example.com/a/mock-login');
    backend.completeLogin(authUrl);
    expect(store.getState().session.app?.engine?.self?.name).toBe('alice-laptop');

    backend.notice('error', 'Helper restarted');
    expect(store.getState().ui.toasts.at(-1)?.message).toBe('Helper restarted');
    backend.subscribe(() => {});
    backend.dispose();
  });

  it('navigate events from main switch the screen', async () => {
    const backend = new DemoApp({ signedIn: true });
    let emit: (m: unknown) => void = () => {};
    const bridge = createBridgeClient({
      call: (m, i) => dispatchBridgeCall(backend.handlers, m, i),
      onEvent: (l) => {
        emit = l;
        return () => {};
      },
    });
    const store = createWeftStore(bridge);
    await boot(store, bridge);
    emit(makeEventMessage('navigate', { view: 'settings' }));
    expect(store.getState().ui.view).toBe('settings');
    backend.dispose();
  });
});
