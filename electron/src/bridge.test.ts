import { readFileSync } from 'node:fs';
import { appState, peer, runningEngine } from '@weft/core/bridge/testing';
import {
  AppState,
  BRIDGE_IPC,
  BridgeError,
  type BridgeHandlers,
  type BridgeTransport,
  bridgeCalls,
  CALL_NAMES,
  createBridgeClient,
  dispatchBridgeCall,
  EngineStatus,
  isControlUrl,
  makeEventMessage,
  parseRoutesText,
  pathCounts,
  peerPath,
  primaryAddress,
  type Status,
} from '@weft/protocol';
import { describe, expect, it } from 'vitest';
import type { PreloadApi } from './preload.cjs';

// The bridge schema: what passes, what is refused, and the two ends it types.

const ok = { ok: true } as const;
function handlers(over: Partial<BridgeHandlers> = {}): BridgeHandlers {
  return {
    getState: () => appState(),
    connect: () => ok,
    disconnect: () => ok,
    login: () => ok,
    cancelLogin: () => ok,
    openAuthUrl: () => ok,
    logout: () => ok,
    setExitNode: () => ok,
    copyText: () => ok,
    setPreferences: () => ok,
    ...over,
  };
}

describe('bridge schema', () => {
  it('a plain LocalAPI Status (no UI extras) is a valid EngineStatus', () => {
    const plain: Status = {
      backendState: 'Running',
      controlUrl: 'http://198.18.0.1:8080',
      authUrl: null,
      self: { id: 'a', name: 'a', addresses: ['100.64.0.1/32'] },
      peers: [],
      health: [],
    };
    expect(EngineStatus.safeParse(plain).success).toBe(true);
    expect(EngineStatus.safeParse(runningEngine()).success).toBe(true);
  });

  it('refuses unknown fields and wrong types in the snapshot', () => {
    expect(AppState.safeParse(appState()).success).toBe(true);
    expect(AppState.safeParse({ ...appState(), extra: 1 }).success).toBe(false);
    expect(AppState.safeParse({ ...appState(), seq: -1 }).success).toBe(false);
    const bad = appState();
    (bad.prefs as { theme: string }).theme = 'purple';
    expect(AppState.safeParse(bad).success).toBe(false);
    const badPeer = runningEngine({ peers: [{ ...peer('x'), path: 'teleport' as never }] });
    expect(EngineStatus.safeParse(badPeer).success).toBe(false);
  });

  it('control URL: http(s) with a host, no credentials or fragment', () => {
    for (const good of [
      'https://weft.example.com',
      'http://127.0.0.1:8080',
      ' https://weft.example.com/path ',
    ]) {
      expect(bridgeCalls.login.input.safeParse({ controlUrl: good }).success, good).toBe(true);
    }
    for (const bad of [
      '',
      'weft.example.com',
      'ftp://x',
      'javascript:alert(1)',
      'https://u:p@x.com',
      'https://x.com/#a',
    ]) {
      expect(bridgeCalls.login.input.safeParse({ controlUrl: bad }).success, bad).toBe(false);
    }
    expect(isControlUrl('file:///etc/passwd')).toBe(false);
  });

  it('setExitNode, copyText and setPreferences inputs are bounded', () => {
    expect(bridgeCalls.setExitNode.input.safeParse({ id: null, allowLan: false }).success).toBe(true);
    expect(bridgeCalls.setExitNode.input.safeParse({ id: '', allowLan: false }).success).toBe(false);
    expect(bridgeCalls.setExitNode.input.safeParse({ id: 'x' }).success).toBe(false);
    expect(bridgeCalls.copyText.input.safeParse({ text: 'x'.repeat(4097) }).success).toBe(false);
    expect(bridgeCalls.setPreferences.input.safeParse({ advertiseRoutes: ['198.51.100.0/24'] }).success).toBe(
      true,
    );
    expect(bridgeCalls.setPreferences.input.safeParse({ advertiseRoutes: ['198.51.100.1/24'] }).success).toBe(
      false,
    );
    expect(bridgeCalls.setPreferences.input.safeParse({ theme: 'dark', nodeIntegration: true }).success).toBe(
      false,
    );
  });

  it('dispatch: unknown method, bad input, handler error and bad output all become error results', async () => {
    const h = handlers({
      connect: () => {
        throw new BridgeError('failed', 'Sign in first');
      },
      disconnect: () => ({ ok: false }) as never,
    });
    expect(await dispatchBridgeCall(h, 'constructor', {})).toMatchObject({
      ok: false,
      error: { code: 'bad-method' },
    });
    expect(await dispatchBridgeCall(h, '__proto__', {})).toMatchObject({
      ok: false,
      error: { code: 'bad-method' },
    });
    expect(await dispatchBridgeCall(h, 'login', { controlUrl: 'nope' })).toMatchObject({
      ok: false,
      error: { code: 'bad-input' },
    });
    expect(await dispatchBridgeCall(h, 'connect', {})).toEqual({
      ok: false,
      error: { code: 'failed', message: 'Sign in first' },
    });
    expect(await dispatchBridgeCall(h, 'disconnect', {})).toMatchObject({
      ok: false,
      error: { code: 'bad-output' },
    });
    expect(await dispatchBridgeCall(h, 'getState', undefined)).toMatchObject({ ok: true, value: { seq: 1 } });
  });

  it('client ↔ dispatch round trip over a transport; events are validated on arrival', async () => {
    const seen: unknown[] = [];
    let emit: (m: unknown) => void = () => {};
    const calls: string[] = [];
    const transport: BridgeTransport = {
      call: (method, input) => {
        calls.push(method);
        return dispatchBridgeCall(handlers(), method, input);
      },
      onEvent: (l) => {
        emit = l;
        return () => {};
      },
    };
    const problems: string[] = [];
    const client = createBridgeClient(transport, (p) => problems.push(p));
    client.on('state', (s) => seen.push(s.seq));
    client.on('navigate', (n) => seen.push(n.view));
    expect((await client.getState()).seq).toBe(1);
    await client.setExitNode({ id: 'exit-a', allowLan: true });
    await expect(client.login({ controlUrl: 'not a url' })).rejects.toThrow(/https/);
    expect(calls).toEqual(['getState', 'setExitNode']); // the bad input never left the renderer
    emit(makeEventMessage('state', appState({ seq: 7 })));
    emit(makeEventMessage('navigate', { view: 'settings' }));
    emit({ event: 'state', payload: { seq: 'x' } });
    emit({ event: 'exec', payload: 'rm -rf /' });
    expect(seen).toEqual([7, 'settings']);
    expect(problems).toHaveLength(2);
  });

  it('every call has an input and output schema; names are the handler keys', () => {
    expect(CALL_NAMES.sort()).toEqual(Object.keys(handlers()).sort());
  });

  it('the preload uses the channel names of BRIDGE_IPC and matches the transport type', () => {
    const src = readFileSync(new URL('./preload.cts', import.meta.url), 'utf8');
    expect(src).toContain(`const CALL = '${BRIDGE_IPC.call}'`);
    expect(src).toContain(`const EVENT = '${BRIDGE_IPC.event}'`);
    expect(src).toContain("exposeInMainWorld('weft'");
    // compile-time: the preload's API is a BridgeTransport
    const check = (api: PreloadApi): BridgeTransport => api;
    expect(typeof check).toBe('function');
  });
});

describe('derived views', () => {
  it('primaryAddress prefers IPv4 and strips the prefix length', () => {
    expect(primaryAddress(['fd7a::1/128', '100.64.0.9/32'])).toBe('100.64.0.9');
    expect(primaryAddress(['fd7a::1/128'])).toBe('fd7a::1');
    expect(primaryAddress([])).toBeNull();
  });

  it('peerPath: engine word first, else loopback endpoint = relay, other endpoint = direct', () => {
    expect(peerPath(peer('a'))).toBe('direct');
    expect(peerPath(peer('a', { endpoint: '127.0.0.1:4000' }))).toBe('relay');
    expect(peerPath(peer('a', { endpoint: '[::1]:4000' }))).toBe('relay');
    expect(peerPath(peer('a', { lastHandshake: null }))).toBe('none');
    expect(peerPath(peer('a', { online: false }))).toBe('none');
    expect(peerPath(peer('a', { path: 'relay' }))).toBe('relay');
    expect(pathCounts(runningEngine().peers)).toEqual({ total: 6, online: 4, direct: 3, relay: 1 });
  });

  it('parseRoutesText', () => {
    expect(parseRoutesText('198.51.100.0/24, 203.0.113.0/24 198.51.100.0/24')).toEqual({
      routes: ['198.51.100.0/24', '203.0.113.0/24'],
    });
    expect(parseRoutesText('')).toEqual({ routes: [] });
    expect(parseRoutesText('198.51.100.7/24')).toHaveProperty('error');
  });
});
