import { AppState, dispatchBridgeCall, type Preferences } from '@weft/protocol';
import { describe, expect, it } from 'vitest';
import { AppController, DEFAULT_PREFERENCES } from './controller.js';
import { FakeClock, flush } from './testing/fake-clock.js';
import { FakeEngine } from './testing/fake-engine.js';
import { runningEngine } from './testing/fixtures.js';

function setup(prefs: Partial<Preferences> = {}) {
  const engine = new FakeEngine();
  const clock = new FakeClock();
  let saved: Preferences = { ...DEFAULT_PREFERENCES, ...prefs };
  const opened: string[] = [];
  const copied: string[] = [];
  const loginItems: boolean[] = [];
  const c = new AppController({
    engine,
    prefs: { load: () => saved, save: (p) => (saved = p) },
    openExternal: async (u) => {
      opened.push(u);
    },
    copyText: (t) => copied.push(t),
    setLaunchAtLogin: (on) => loginItems.push(on),
    clock,
    shell: 'electron',
    version: '0.1.0',
    autoOpenAuthUrl: true,
  });
  const states: AppState[] = [];
  c.subscribe((s) => states.push(s));
  return { c, engine, clock, opened, copied, loginItems, states, saved: () => saved };
}

const call = (c: AppController, m: string, input: unknown = {}) => dispatchBridgeCall(c.handlers, m, input);

describe('AppController', () => {
  it('follows the engine; every published state is valid and seq increases', async () => {
    const { c, engine, states } = setup();
    c.start();
    await flush();
    expect(c.state.engine?.backendState).toBe('NeedsLogin');
    engine.set(runningEngine());
    expect(c.state.engine?.backendState).toBe('Running');
    for (const s of states) expect(AppState.safeParse(s).success).toBe(true);
    const seqs = states.map((s) => s.seq);
    expect([...seqs].sort((a, b) => a - b)).toEqual(seqs);
    c.stop();
  });

  it('sign-in: starting → waiting with the auth URL (opened once in the browser) → signed in', async () => {
    const { c, engine, opened, saved } = setup();
    c.start();
    await flush();
    expect(await call(c, 'login', { controlUrl: 'https://weft.example.com' })).toEqual({
      ok: true,
      value: { ok: true },
    });
    await flush();
    expect(c.state.login).toEqual({
      phase: 'waiting',
      authUrl: 'https://weft.example.com/a/xyz',
      error: null,
    });
    expect(opened).toEqual(['https://weft.example.com/a/xyz']);
    expect(saved().controlUrl).toBe('https://weft.example.com');
    engine.completeLogin();
    await flush();
    expect(c.state.login.phase).toBe('idle');
    expect(c.state.engine?.self?.name).toBe('laptop');
    expect(opened).toHaveLength(1);
    c.stop();
  });

  it('cancel sign-in aborts the waiting request and clears the link (engine without /login/cancel)', async () => {
    const { c, engine } = setup();
    c.start();
    await flush();
    await call(c, 'login', { controlUrl: 'https://weft.example.com' });
    await flush();
    const signal = engine.pendingUp?.signal;
    expect(await call(c, 'cancelLogin')).toMatchObject({ ok: true });
    expect(signal?.aborted).toBe(true);
    expect(c.state.login).toEqual({ phase: 'idle', authUrl: null, error: null });
    expect(engine.calls).toContain('cancelLogin');
    expect(engine.calls.at(-1)).toBe('down'); // no /login/cancel: /down drops the pending login
    expect(c.state.login.authUrl).toBeNull();
    c.stop();
  });

  it('opens the browser when the auth URL comes in the /up answer (core answers once the login is pending)', async () => {
    const { c, engine, opened } = setup();
    c.start();
    await flush();
    engine.up = async (req) => {
      engine.status_ = {
        ...engine.status_,
        controlUrl: req.controlUrl,
        authUrl: `${req.controlUrl}/a/fromup`,
      };
      return engine.status_;
    };
    await call(c, 'login', { controlUrl: 'https://weft.example.com' });
    await flush();
    expect(c.state.login).toMatchObject({ phase: 'waiting', authUrl: 'https://weft.example.com/a/fromup' });
    expect(opened).toEqual(['https://weft.example.com/a/fromup']);
    c.stop();
  });

  it('a failed sign-in shows the error', async () => {
    const { c, engine } = setup();
    c.start();
    await flush();
    engine.up = async () => {
      throw new Error('control server unreachable');
    };
    await call(c, 'login', { controlUrl: 'https://weft.example.com' });
    await flush();
    expect(c.state.login).toEqual({ phase: 'error', authUrl: null, error: 'control server unreachable' });
    c.stop();
  });

  it('disconnect and connect go through /down and /up with the control URL', async () => {
    const { c, engine } = setup();
    engine.status_ = runningEngine();
    c.start();
    await flush();
    await call(c, 'disconnect');
    expect(c.state.engine?.backendState).toBe('Stopped');
    expect(c.state.pending).toBeNull();
    await call(c, 'connect');
    expect(c.state.engine?.backendState).toBe('Running');
    expect(engine.calls.filter((x) => x !== 'status')).toEqual(['down', 'up https://weft.example.com']);
    c.stop();
  });

  it('setExitNode: engine prefs, recent list (last used first), allow-LAN remembered by the engine', async () => {
    const { c, engine, saved } = setup();
    const e = runningEngine();
    engine.status_ = {
      ...e,
      peers: e.peers.map((p) => (p.id === 'nas' ? { ...p, exitNodeOption: false } : p)),
    };
    c.start();
    await flush();
    await call(c, 'setExitNode', { id: 'exit-a', allowLan: false });
    await call(c, 'setExitNode', { id: 'exit-b', allowLan: true });
    expect(c.state.engine?.exitNode).toEqual({ id: 'exit-b', allowLan: true });
    expect(saved().recentExitNodes).toEqual(['exit-b', 'exit-a']);
    expect(c.state.engine?.prefs?.exitNodeAllowLan).toBe(true);
    await call(c, 'setExitNode', { id: null, allowLan: true });
    expect(c.state.engine?.exitNode).toBeNull();
    expect(await call(c, 'setExitNode', { id: 'nas', allowLan: false })).toMatchObject({ ok: false });
    expect(await call(c, 'setExitNode', { id: 'gone', allowLan: false })).toMatchObject({
      ok: false,
      error: { message: 'That device is no longer in your network' },
    });
    c.stop();
  });

  it('an engine without /prefs gets a plain-words error', async () => {
    const { c, engine } = setup();
    engine.status_ = runningEngine();
    engine.prefsFail = Object.assign(new Error('no such endpoint'), { httpStatus: 404 });
    c.start();
    await flush();
    expect(await call(c, 'setExitNode', { id: 'exit-a', allowLan: false })).toEqual({
      ok: false,
      error: { code: 'failed', message: 'This version of the Weft engine cannot change the exit node yet' },
    });
    expect(c.state.pending).toBeNull();
    c.stop();
  });

  it('preferences: launch at login goes to the OS, advertise goes to the engine (which keeps it), the rest are saved', async () => {
    const { c, engine, loginItems, saved } = setup();
    engine.status_ = runningEngine();
    c.start();
    await flush();
    await call(c, 'setPreferences', { launchAtLogin: true, theme: 'dark', advertiseExitNode: true });
    expect(loginItems).toEqual([true]);
    expect(engine.calls).toContain('prefs {"advertiseExitNode":true}');
    expect(saved()).toMatchObject({ launchAtLogin: true, theme: 'dark' });
    expect(c.state.engine?.prefs?.advertiseExitNode).toBe(true);
    expect(c.state.prefs.theme).toBe('dark');
    c.stop();
  });

  it('copyText and openAuthUrl', async () => {
    const { c, copied } = setup();
    c.start();
    await flush();
    await call(c, 'copyText', { text: '100.64.0.2' });
    expect(copied).toEqual(['100.64.0.2']);
    expect(await call(c, 'openAuthUrl')).toMatchObject({
      ok: false,
      error: { message: 'No sign-in is waiting' },
    });
    c.stop();
  });

  it('engine down: error state, commands refused, reconnects with back-off, falls back to polling without /watch', async () => {
    const { c, engine, clock } = setup();
    engine.watchFails = Object.assign(new Error('the Weft engine is not running'), { httpStatus: null });
    c.start();
    await flush();
    expect(c.state.engine).toBeNull();
    expect(c.state.engineError).toBe('the Weft engine is not running');
    expect(await call(c, 'connect')).toMatchObject({ ok: false, error: { code: 'unavailable' } });
    expect(clock.pending).toEqual([500]);
    await clock.advance(500);
    expect(clock.pending).toEqual([1000]);
    engine.watchFails = Object.assign(new Error('no such endpoint'), { httpStatus: 404 });
    engine.status_ = runningEngine();
    await clock.advance(1000);
    expect(c.state.engine?.backendState).toBe('Running');
    expect(clock.pending).toEqual([2000]); // polling interval
    c.stop();
  });

  it('helper state is part of the snapshot', () => {
    const { c } = setup();
    c.setHelperState({ phase: 'failed', restarts: 5, message: 'x', nextAttemptAt: null });
    expect(c.state.helper.phase).toBe('failed');
  });
});
