import { chown, mkdtemp, rm } from 'node:fs/promises';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type DesiredState, generateKeyPair } from '@weft/protocol';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { silentLogger } from '../log/logger.js';
import { StandInHelper } from '../testing/standin-helper.js';
import { waitUntil } from '../testing/wait.js';
import { HelperClient } from './client.js';
import { Reconciler } from './reconciler.js';

let dir: string;
let clients: HelperClient[];
let servers: Server[];

const state = (port: number): DesiredState => ({
  interface: {
    name: 'weft0',
    privateKey: generateKeyPair().privateKey,
    listenPort: port,
    addresses: ['100.64.0.1/32'],
    mtu: 1280,
  },
  peers: [],
  routes: ['100.64.0.0/10'],
});

function client(path: string): HelperClient {
  const c = new HelperClient(path, {
    log: silentLogger,
    backoff: { baseMs: 10, capMs: 50 },
    timeoutsMs: { status: 50 },
  });
  clients.push(c);
  c.start();
  return c;
}

/** A raw socket server answering each line with `reply(line)` (or not at all when it returns null). */
async function rawHelper(
  reply: (req: { id: number }, write: (text: string) => void) => string | null,
): Promise<string> {
  const path = join(dir, `raw-${servers.length}.sock`);
  const server = createServer((s) => {
    s.setEncoding('utf8');
    let buf = '';
    s.on('data', (chunk: string) => {
      buf += chunk;
      for (let nl = buf.indexOf('\n'); nl >= 0; nl = buf.indexOf('\n')) {
        const out = reply(JSON.parse(buf.slice(0, nl)), (text) => s.write(text));
        buf = buf.slice(nl + 1);
        if (out !== null) s.write(out);
      }
    });
  });
  servers.push(server);
  await new Promise<void>((r) => server.listen(path, r));
  return path;
}

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'weft-helper-client-'));
  clients = [];
  servers = [];
});
afterEach(async () => {
  for (const c of clients) await c.close();
  for (const s of servers) await new Promise((r) => s.close(r));
  await rm(dir, { recursive: true, force: true });
});

describe('helper client', () => {
  it('numbers requests, validates answers and reconnects after the helper restarts', async () => {
    const helper = new StandInHelper(join(dir, 'h.sock'));
    await helper.start();
    const c = client(helper.path);
    await waitUntil('connected', () => c.connected);
    const st = await c.apply(state(41000));
    expect(st).toMatchObject({ name: 'weft0', exists: true, listenPort: 41000 });
    expect((await c.status('weft0')).exists).toBe(true);
    expect((await c.down('weft0')).exists).toBe(false);
    expect(helper.requests.map((r) => r.id)).toEqual([1, 2, 3]);

    await helper.stop();
    await waitUntil('disconnect noticed', () => !c.connected);
    await expect(c.status('weft0')).rejects.toMatchObject({ code: 'helper-unavailable' });
    await helper.start();
    await waitUntil('reconnected', () => c.connected);
    expect((await c.status('weft0')).exists).toBe(false);
  });

  it('reports a helper error with its code', async () => {
    const path = await rawHelper(
      (req) =>
        `${JSON.stringify({
          id: req.id,
          ok: false,
          error: { code: 'os-error', message: 'ip: RTNETLINK answers: File exists' },
        })}\n`,
    );
    const c = client(path);
    await waitUntil('connected', () => c.connected);
    await expect(c.apply(state(41000))).rejects.toMatchObject({
      code: 'helper-error',
      helperCode: 'os-error',
      message: 'weft-helper: os-error: ip: RTNETLINK answers: File exists',
    });
  });

  it('times out a request the helper does not answer in time, and ignores its late reply', async () => {
    const answer = (id: number, name: string) =>
      `${JSON.stringify({ id, ok: true, status: { name, exists: true, backend: null, publicKey: null, listenPort: null, addresses: [], peers: [] } })}\n`;
    const path = await rawHelper((req, write) => {
      if (req.id !== 1) return answer(req.id, 'second');
      setTimeout(() => write(answer(1, 'late')), 120);
      return null;
    });
    const c = client(path);
    await waitUntil('connected', () => c.connected);
    await expect(c.status('weft0')).rejects.toThrow(/did not answer 'status' within 50 ms/);
    expect((await c.status('weft0')).name).toBe('second');
    await new Promise((r) => setTimeout(r, 150));
    expect((await c.status('weft0')).name).toBe('second');
  });

  it('drops a connection that sends something invalid', async () => {
    const path = await rawHelper(() => '{"id":1,"ok":true,"status":{"bogus":true}}\n');
    const c = client(path);
    await waitUntil('connected', () => c.connected);
    await expect(c.status('weft0')).rejects.toMatchObject({ code: 'helper-unavailable' });
  });
});

describe('helper socket ownership', () => {
  // Needs root to give the socket away; the machines that run the suite run it as root.
  it.runIf(process.getuid?.() === 0)(
    'refuses a socket bound by another user, before connecting to it, and says why',
    async () => {
      let connections = 0;
      const path = join(dir, 'stranger.sock');
      const server = createServer(() => connections++);
      servers.push(server);
      await new Promise<void>((r) => server.listen(path, r));
      await chown(path, 65534, 65534);
      const warnings: string[] = [];
      const c = new HelperClient(path, {
        log: { ...silentLogger, warn: (m: string) => warnings.push(m) },
        backoff: { baseMs: 10, capMs: 50 },
      });
      clients.push(c);
      c.start();
      await waitUntil('the refusal logged', () => warnings.length > 0);
      expect(warnings[0]).toBe(
        `weft-helper at ${path}: ${path} is owned by uid 65534, not by root or this user: refusing to talk to it`,
      );
      expect(connections).toBe(0);
      expect(c.connected).toBe(false);
      // Given back to root, the same socket is used.
      await chown(path, 0, 0);
      await waitUntil('connected', () => c.connected);
    },
  );
});

describe('reconciler', () => {
  it('turns a burst of targets into one apply of the last, and skips an unchanged target', async () => {
    const helper = new StandInHelper(join(dir, 'h.sock'));
    await helper.start();
    const c = client(helper.path);
    await waitUntil('connected', () => c.connected);
    const r = new Reconciler(c, { log: silentLogger, debounceMs: 20, reapplyMs: 60_000 });
    const last = state(41003);
    r.set({ op: 'apply', state: state(41001) });
    r.set({ op: 'apply', state: state(41002) });
    r.set({ op: 'apply', state: last });
    await waitUntil('applied', () => helper.requests.length === 1);
    expect(helper.lastApply()).toEqual(last);
    r.set({ op: 'apply', state: structuredClone(last) });
    await new Promise((res) => setTimeout(res, 60));
    expect(helper.requests).toHaveLength(1);
    const result = await r.sync();
    expect(result.ok).toBe(true);
    expect(helper.requests).toHaveLength(2);
    r.stop();
  });

  it('sends a debounced change at once when asked, so a status read right after sees it', async () => {
    const helper = new StandInHelper(join(dir, 'h.sock'));
    await helper.start();
    const c = client(helper.path);
    await waitUntil('connected', () => c.connected);
    const r = new Reconciler(c, { log: silentLogger, debounceMs: 10_000 });
    r.set({ op: 'apply', state: state(41004) });
    r.flushPending();
    expect((await c.status('weft0')).listenPort).toBe(41004);
    expect(helper.ops()).toEqual(['apply', 'status']);
    r.stop();
  });

  it('treats "down" of an interface that is already gone as done', async () => {
    const path = await rawHelper(
      (req) =>
        `${JSON.stringify({
          id: req.id,
          ok: false,
          error: { code: 'not-found', message: 'no interface weft0' },
        })}\n`,
    );
    const c = client(path);
    await waitUntil('connected', () => c.connected);
    const r = new Reconciler(c, { log: silentLogger, debounceMs: 1 });
    r.set({ op: 'down', interface: 'weft0' });
    expect((await r.sync()).ok).toBe(true);
    r.stop();
  });
});
