import { readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { publicKeyOf, Status } from '@weft/protocol';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { waitForLogin } from '../cli/login.js';
import { LocalApiClient } from '../localapi/client.js';
import { LocalApiServer } from '../localapi/server.js';
import { silentLogger } from '../log/logger.js';
import { type EngineFixture, engineFixture } from '../testing/engine-fixture.js';
import { waitUntil } from '../testing/wait.js';
import type { Engine } from './engine.js';

// Interactive login, key expiry and logout, against the stand-in control (real HTTP, real machine
// signatures, waiting registrations held as control holds them).

let fx: EngineFixture;

beforeEach(async () => {
  fx = await engineFixture();
});

afterEach(async () => {
  await fx.cleanup();
});

const interactiveUp = (engine: Engine) => engine.up({ controlUrl: fx.control.url, hostname: 'laptop' });
const machineKey = () => [...fx.control.nodes.keys()][0] as string;
const waits = () => fx.control.registrations.filter((r) => r.wait === true).length;
const nodeKeyFile = async () => (await readFile(join(fx.stateDir, 'node.key'), 'utf8')).trim();

async function signedIn(): Promise<Engine> {
  const engine = await fx.startEngine();
  await interactiveUp(engine);
  fx.control.approve(machineKey());
  await waitUntil('Running', () => engine.backendState() === 'Running');
  return engine;
}

describe('interactive login (stand-in control)', () => {
  it('waits at control with the same signed registration, and is Running as soon as the person signs in', async () => {
    fx.control.waitMs = 60_000;
    const engine = await fx.startEngine();
    await interactiveUp(engine);
    const st = engine.snapshot();
    expect(st.backendState).toBe('NeedsLogin');
    expect(st.authUrl).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/a\/[0-9a-f]+$/);
    expect(Date.parse(st.authUrlExpiresAt as string)).toBeGreaterThan(Date.now());
    await waitUntil('a waiting registration', () => waits() === 1);
    // Held by control, not polled: no more requests while the person takes their time.
    await new Promise((r) => setTimeout(r, 300));
    expect(fx.control.registrations).toHaveLength(2);
    const [first, second] = fx.control.registrations;
    expect(second).toEqual({ ...first, wait: true });
    expect(first).not.toHaveProperty('authKey');

    const t0 = Date.now();
    fx.control.approve(machineKey());
    await waitUntil('Running after sign-in', () => engine.backendState() === 'Running');
    expect(Date.now() - t0).toBeLessThan(1_000);
    expect(engine.snapshot()).toMatchObject({ authUrl: null, authUrlExpiresAt: null, health: [] });
    expect(fx.helper.lastApply()?.interface.privateKey).toBe(await nodeKeyFile());
  });

  it('asks again when control answers needs-auth after its wait, keeping the link', async () => {
    fx.control.waitMs = 30;
    const engine = await fx.startEngine();
    await interactiveUp(engine);
    const url = engine.snapshot().authUrl;
    await waitUntil('several waits', () => waits() >= 4);
    expect(engine.snapshot().authUrl).toBe(url);
    expect(engine.backendState()).toBe('NeedsLogin');
    fx.control.approve(machineKey());
    await waitUntil('Running', () => engine.backendState() === 'Running');
  });

  it('an expired link ends the login with a clear message and no more requests', async () => {
    fx.control.waitMs = 60_000;
    const engine = await fx.startEngine();
    await interactiveUp(engine);
    await waitUntil('waiting', () => waits() === 1);
    fx.control.endLogin(machineKey(), 'login-expired');
    await waitUntil('login ended', () => engine.snapshot().authUrl === null);
    const st = engine.snapshot();
    expect(st.backendState).toBe('NeedsLogin');
    expect(st.health).toEqual(['sign-in ended: the sign-in link expired']);
    const calls = fx.control.registerCalls;
    await new Promise((r) => setTimeout(r, 200));
    expect(fx.control.registerCalls).toBe(calls);
    // A new `up` starts a new login with a new link.
    await interactiveUp(engine);
    expect(engine.snapshot()).toMatchObject({ authUrl: expect.stringContaining('/a/'), health: [] });
  });

  it('a link cancelled at control (login-cancelled) ends the login too', async () => {
    fx.control.waitMs = 60_000;
    const engine = await fx.startEngine();
    await interactiveUp(engine);
    await waitUntil('waiting', () => waits() === 1);
    fx.control.endLogin(machineKey(), 'login-cancelled');
    await waitUntil('login ended', () => engine.snapshot().authUrl === null);
    expect(engine.snapshot().health).toEqual(['sign-in ended: this sign-in was cancelled']);
  });

  it('cancelLogin sends the signed cancel to control and stops waiting', async () => {
    fx.control.waitMs = 60_000;
    const engine = await fx.startEngine();
    await interactiveUp(engine);
    await waitUntil('waiting', () => waits() === 1);
    await engine.cancelLogin();
    expect(fx.control.cancels).toEqual([machineKey()]);
    expect(fx.control.nodes.get(machineKey())?.loginEnded).toBe('login-cancelled');
    expect(engine.snapshot()).toMatchObject({ backendState: 'NeedsLogin', authUrl: null });
    expect(engine.snapshot().health).toEqual(['sign-in cancelled']);
    const calls = fx.control.registerCalls;
    await new Promise((r) => setTimeout(r, 200));
    expect(fx.control.registerCalls).toBe(calls);
  });

  it('down while a login waits cancels it at control', async () => {
    fx.control.waitMs = 60_000;
    const engine = await fx.startEngine();
    await interactiveUp(engine);
    await waitUntil('waiting', () => waits() === 1);
    await engine.down();
    expect(fx.control.cancels).toHaveLength(1);
    expect(engine.snapshot().authUrl).toBeNull();
  });

  it('keeps waiting through a control outage, says so in health, and signs in once control is back', async () => {
    fx.control.waitMs = 60_000;
    const engine = await fx.startEngine();
    await interactiveUp(engine);
    await waitUntil('waiting', () => waits() === 1);
    const port = fx.control.port;
    await fx.control.stop();
    await waitUntil('outage in health', () =>
      engine.snapshot().health.some((h) => h.includes('control unreachable')),
    );
    expect(engine.snapshot().authUrl).not.toBeNull();
    await fx.control.start(port);
    fx.control.approve(machineKey());
    await waitUntil('Running', () => engine.backendState() === 'Running', 5_000);
    expect(engine.snapshot().health).toEqual([]);
  });
});

describe('weft up, waiting for the sign-in (LocalAPI, stand-in control)', () => {
  let api: LocalApiServer | null = null;

  afterEach(async () => {
    await api?.close();
    api = null;
  });

  /** An engine behind a real LocalAPI socket, asked by its client for an interactive `up`. */
  async function pendingUp() {
    fx.control.waitMs = 60_000;
    const engine = await fx.startEngine();
    const socket = join(fx.dir, 'weftd.sock');
    api = new LocalApiServer(engine, silentLogger);
    await api.listen(socket);
    const client = new LocalApiClient(socket);
    const st = await client.up({ controlUrl: fx.control.url, hostname: 'laptop' });
    const out: string[] = [];
    const err: string[] = [];
    const io = { out: (l: string) => out.push(l), err: (l: string) => err.push(l) };
    return { engine, client, authUrl: st.authUrl as string, out, err, io };
  }

  it('prints the URL alone on stdout and returns once Running', async () => {
    const { client, authUrl, out, err, io } = await pendingUp();
    const done = waitForLogin(client, authUrl, 5_000, io);
    await waitUntil('waiting', () => waits() === 1);
    fx.control.approve(machineKey());
    expect((await done).backendState).toBe('Running');
    expect(out).toEqual([authUrl]);
    expect(err).toEqual(['To log in, open this URL in a browser:']);
  });

  it('on timeout cancels the sign-in at control and fails with a clear message', async () => {
    const { engine, client, authUrl, io } = await pendingUp();
    await expect(waitForLogin(client, authUrl, 1_200, io)).rejects.toMatchObject({
      code: 'timeout',
      message: 'not logged in within 1s; the sign-in was cancelled',
    });
    expect(fx.control.cancels).toEqual([machineKey()]);
    expect(engine.snapshot()).toMatchObject({ backendState: 'NeedsLogin', authUrl: null });
  });

  it('on Ctrl-C cancels the sign-in at control', async () => {
    const { client, authUrl, io } = await pendingUp();
    const interrupt = new AbortController();
    const done = waitForLogin(client, authUrl, 60_000, { ...io, interrupt: interrupt.signal });
    await waitUntil('waiting', () => waits() === 1);
    interrupt.abort();
    await expect(done).rejects.toMatchObject({
      code: 'interrupted',
      message: 'interrupted before the sign-in finished; the sign-in was cancelled',
    });
    expect(fx.control.cancels).toHaveLength(1);
  });

  it('fails with control’s reason when the link expires', async () => {
    const { client, authUrl, io } = await pendingUp();
    const done = waitForLogin(client, authUrl, 60_000, io);
    await waitUntil('waiting', () => waits() === 1);
    fx.control.endLogin(machineKey(), 'login-expired');
    await expect(done).rejects.toMatchObject({
      code: 'login-ended',
      message: 'not logged in: sign-in ended: the sign-in link expired',
    });
    expect(fx.control.cancels).toHaveLength(0);
  });

  it('POST /login/cancel answers with the status', async () => {
    const { client } = await pendingUp();
    const st = await client.cancelLogin();
    expect(Status.parse(st)).toMatchObject({ backendState: 'NeedsLogin', authUrl: null });
    expect(fx.control.cancels).toHaveLength(1);
  });
});

describe('key expiry and logout (stand-in control)', () => {
  it('shows the key expiry of this node in status', async () => {
    const keyExpiry = new Date(Date.now() + 7 * 86_400_000).toISOString();
    const netmapFor = fx.control.netmapFor;
    fx.control.netmapFor = (node) => {
      const m = netmapFor(node);
      return { ...m, self: { ...m.self, keyExpiry } };
    };
    const engine = await signedIn();
    expect((await engine.status()).self?.keyExpiry).toBe(keyExpiry);
  });

  it('a logout message for an expired key means NeedsLogin; signing in again uses a fresh node key', async () => {
    const engine = await signedIn();
    const oldKey = await nodeKeyFile();
    fx.control.expire(machineKey(), true);
    await waitUntil('NeedsLogin', () => engine.backendState() === 'NeedsLogin');
    await waitUntil('tunnel down', () => fx.helper.state === null);
    expect(engine.snapshot()).toMatchObject({ self: null, health: ['logged out by control: key expired'] });

    await interactiveUp(engine);
    expect(engine.snapshot().authUrl).not.toBeNull();
    fx.control.approve(machineKey());
    await waitUntil('Running again', () => engine.backendState() === 'Running');
    const newKey = await nodeKeyFile();
    expect(newKey).not.toBe(oldKey);
    expect(fx.helper.lastApply()?.interface.privateKey).toBe(newKey);
    expect(fx.control.nodes.get(machineKey())?.req.nodeKey).toBe(publicKeyOf(newKey));
  });

  it('a stream refused with node-key-expired means NeedsLogin at the first refusal', async () => {
    const engine = await signedIn();
    fx.control.expire(machineKey(), false);
    for (const ws of fx.control.streams) ws.terminate();
    await waitUntil('NeedsLogin with the reason', () =>
      engine.snapshot().health.some((h) => /logged out by control: .*key has expired/.test(h)),
    );
    expect(engine.backendState()).toBe('NeedsLogin');
    expect(fx.control.expiredRefusals).toBe(1);
  });

  it('logout tells control first (signed POST /machine/logout), then forgets the login', async () => {
    const engine = await signedIn();
    await engine.logout();
    expect(fx.control.logouts).toEqual([machineKey()]);
    expect(fx.control.nodes.get(machineKey())?.expired).toBe(true);
    expect(engine.snapshot()).toMatchObject({ backendState: 'NeedsLogin', health: [] });
    await expect(stat(join(fx.stateDir, 'node.key'))).rejects.toThrow();
    expect(fx.helper.state).toBeNull();
  });

  it('logout with control unreachable still logs out here, and says control was not told', async () => {
    const engine = await signedIn();
    await fx.control.stop();
    await engine.logout();
    expect(engine.backendState()).toBe('NeedsLogin');
    expect(engine.snapshot().health.join()).toMatch(
      /logged out here, but control could not be told \(control unreachable at .*\): the node key stays valid there/,
    );
  });
});
