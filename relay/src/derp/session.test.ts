import { once } from 'node:events';
import { request } from 'node:http';
import { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { RelayConnection } from '@weft/core';
import {
  DERP_WS_SUBPROTOCOL,
  DerpFrameType,
  DerpPeerGoneReason,
  generateKeyPair,
  type KeyPair,
} from '@weft/protocol';
import { afterEach, describe, expect, it } from 'vitest';
import { WebSocket } from 'ws';
import type { RelayLimits } from '../connection.js';
import { Membership } from '../membership.js';
import { type RunningRelay, startRelay } from '../relay.js';
import { sealBox } from './box.js';
import { DerpClient } from './client.js';
import { DerpFrameReader, encodeDerpFrame } from './frames.js';

// DERP on weft-relay over real sockets on loopback: DerpClient (the honest TS client) and raw
// bytes that misbehave on purpose. Tailscale's own clients (derpprobe, stunc) are in anchor.real.test.ts.

const cleanups: Array<() => Promise<unknown> | unknown> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function until(what: string, check: () => boolean, ms = 5_000): Promise<void> {
  const end = Date.now() + ms;
  while (!check()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(10);
  }
}

async function relay(opts: { limits?: Partial<RelayLimits>; membership?: Membership } = {}) {
  const r = await startRelay({
    keyPair: generateKeyPair(),
    host: '127.0.0.1',
    port: 0,
    reflectorPort: 0,
    ...opts,
  });
  cleanups.push(() => r.close());
  return r;
}

const derpUrl = (r: RunningRelay) => r.url.replace(/^ws/, 'http').replace(/\/relay$/, '/derp');
const raw32 = (k: KeyPair) => new Uint8Array(Buffer.from(k.publicKey, 'base64'));

interface Got {
  packets: Array<{ from: string; data: string }>;
  frames: Array<{ type: number; payload: Buffer }>;
  closed: boolean;
}

/** A DERP client that records what it receives; `login` waits for the ServerInfo. */
async function derp(r: RunningRelay, keys = generateKeyPair(), login = true) {
  const c = await DerpClient.connect(derpUrl(r), keys);
  cleanups.push(() => c.close());
  const got: Got = { packets: [], frames: [], closed: false };
  c.on('packet', (from, data) =>
    got.packets.push({ from: Buffer.from(from).toString('base64'), data: data.toString() }),
  );
  c.on('frame', (type, payload) => got.frames.push({ type, payload: Buffer.from(payload) }));
  c.on('close', () => {
    got.closed = true;
  });
  if (login) await c.loggedIn();
  return { c, keys, got };
}

const healthText = (got: Got) =>
  got.frames.filter((f) => f.type === DerpFrameType.health).map((f) => f.payload.toString());

describe('DERP login', () => {
  it('greets with the magic and the relay key, and answers a sealed ClientInfo with a sealed ServerInfo', async () => {
    const r = await relay();
    const a = await DerpClient.connect(derpUrl(r), generateKeyPair());
    cleanups.push(() => a.close());
    expect(Buffer.from(a.serverKey).toString('base64')).toBe(r.publicKey);
    const info = await a.loggedIn();
    expect(info).toMatchObject({ version: 2, TokenBucketBytesPerSecond: 128 * 1024 * 1024 });
    expect(r.server.stats().authenticated).toBe(1);
  });

  it('refuses a key that is not in the tailnet (and before control has said who is), with a reason', async () => {
    const membership = Membership.tailnet();
    const r = await relay({ membership });
    const early = await derp(r, generateKeyPair(), false);
    await until('refusal', () => early.got.closed);
    expect(healthText(early.got)).toEqual(['tailnet members not known yet']);
    const member = generateKeyPair();
    membership.replace([member.publicKey]);
    const stranger = await derp(r, generateKeyPair(), false);
    await expect(stranger.c.loggedIn()).rejects.toThrow(/closed/);
    expect(healthText(stranger.got)).toEqual(['node key is not in the tailnet']);
    await derp(r, member);
    expect(r.server.stats().authenticated).toBe(1);
  });

  it('refuses a ClientInfo sealed with another key than the one it claims, and a first frame that is not ClientInfo', async () => {
    const r = await relay();
    const claimed = generateKeyPair();
    const other = generateKeyPair();
    for (const bytes of [
      (serverKey: Uint8Array) =>
        encodeDerpFrame(
          DerpFrameType.clientInfo,
          raw32(claimed),
          sealBox(new Uint8Array(Buffer.from(other.privateKey, 'base64')), serverKey, Buffer.from('{}')),
        ),
      () => encodeDerpFrame(DerpFrameType.sendPacket, new Uint8Array(32), Buffer.from('x')),
      () => encodeDerpFrame(DerpFrameType.clientInfo, raw32(claimed)),
    ]) {
      const s = await rawDerp(r);
      s.write(bytes(s.serverKey));
      await s.closed;
      expect(s.health()).toMatch(
        /not sealed by that node key|first frame must be ClientInfo|short ClientInfo/,
      );
    }
    expect(r.server.stats().authenticated).toBe(0);
  });

  it('refuses a frame longer than the protocol allows before reading it', async () => {
    const r = await relay();
    const s = await rawDerp(r);
    s.write(Buffer.from([DerpFrameType.clientInfo, 0x00, 0x10, 0x00, 0x00]));
    await s.closed;
    expect(s.health()).toMatch(/over the limit/);
  });

  it('skips the HTTP 101 response for a client that asks for a fast start', async () => {
    const r = await relay();
    const port = Number(new URL(derpUrl(r)).port);
    const socket = new Socket();
    cleanups.push(() => socket.destroy());
    await new Promise<void>((resolve) => socket.connect(port, '127.0.0.1', resolve));
    socket.write(
      'GET /derp HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: DERP\r\nDerp-Fast-Start: 1\r\n\r\n',
    );
    const [first] = (await once(socket, 'data')) as [Buffer];
    // The first bytes are the ServerKey frame itself: type 1, length 40, the magic.
    expect([...first.subarray(0, 5)]).toEqual([DerpFrameType.serverKey, 0, 0, 0, 40]);
    expect(first.subarray(5, 13).toString('utf8')).toBe('DERP🔑');
  });

  it('serves the probe endpoints and refuses a /derp request without an upgrade', async () => {
    const r = await relay();
    for (const path of ['/derp/probe', '/derp/latency-check']) {
      const res = await get(`${derpUrl(r).replace('/derp', '')}${path}`);
      expect(res.status).toBe(200);
      expect(res.headers['access-control-allow-origin']).toBe('*');
    }
    expect((await get(derpUrl(r))).status).toBe(426);
  });
});

describe('DERP forwarding (one table with Weft)', () => {
  it('forwards between two DERP clients, tagged with the proven source', async () => {
    const r = await relay();
    const a = await derp(r);
    const b = await derp(r);
    a.c.send(raw32(b.keys), Buffer.from('hello b'));
    b.c.send(raw32(a.keys), Buffer.from('hello a'));
    await until('both packets', () => a.got.packets.length === 1 && b.got.packets.length === 1);
    expect(b.got.packets).toEqual([{ from: a.keys.publicKey, data: 'hello b' }]);
    expect(a.got.packets).toEqual([{ from: b.keys.publicKey, data: 'hello a' }]);
  });

  it('forwards between a DERP client and a Weft relay client, both ways', async () => {
    const r = await relay();
    const d = await derp(r);
    const weftKeys = generateKeyPair();
    const w = new RelayConnection({
      url: r.url,
      nodePrivateKey: weftKeys.privateKey,
      nodeKey: weftKeys.publicKey,
      relayKey: r.publicKey,
    });
    cleanups.push(async () => w.close());
    const fromDerp: string[] = [];
    w.on('packet', (from, packet) => fromDerp.push(`${from}:${Buffer.from(packet).toString()}`));
    const connected = once(w, 'up');
    w.start();
    await connected;
    d.c.send(raw32(weftKeys), Buffer.from('to weft'));
    w.send(raw32(d.keys), Buffer.from('to derp'));
    await until('both packets', () => fromDerp.length === 1 && d.got.packets.length === 1);
    expect(fromDerp).toEqual([`${d.keys.publicKey}:to weft`]);
    expect(d.got.packets).toEqual([{ from: weftKeys.publicKey, data: 'to derp' }]);
  });

  it('answers PeerGone "not here" for an absent key and "disconnected" when a peer it sent to leaves', async () => {
    const r = await relay();
    const a = await derp(r);
    const absent = generateKeyPair();
    a.c.send(raw32(absent), Buffer.from('anyone?'));
    const b = await derp(r);
    a.c.send(raw32(b.keys), Buffer.from('hi'));
    await until('b got it', () => b.got.packets.length === 1);
    b.c.close();
    const gone = () => a.got.frames.filter((f) => f.type === DerpFrameType.peerGone);
    await until('two PeerGone', () => gone().length === 2);
    expect(gone().map((f) => [f.payload.subarray(0, 32).toString('base64'), f.payload[32]])).toEqual([
      [absent.publicKey, DerpPeerGoneReason.notHere],
      [b.keys.publicKey, DerpPeerGoneReason.disconnected],
    ]);
  });

  it('notes NotePreferred, answers Ping with Pong, refuses mesh frames, and ignores unknown frame types', async () => {
    const r = await relay();
    const a = await derp(r);
    a.c.writeRaw(encodeDerpFrame(0x7f as DerpFrameType, Buffer.from('future')));
    a.c.writeRaw(encodeDerpFrame(DerpFrameType.notePreferred, Uint8Array.of(1)));
    a.c.writeRaw(encodeDerpFrame(DerpFrameType.ping, Buffer.from('pingpong')));
    await until('pong', () => a.got.frames.some((f) => f.type === DerpFrameType.pong));
    expect(r.server.stats()).toMatchObject({ derpClients: 1, derpHome: 1 });
    expect(a.got.frames.find((f) => f.type === DerpFrameType.pong)?.payload.toString()).toBe('pingpong');
    a.c.writeRaw(encodeDerpFrame(DerpFrameType.watchConns));
    await until('closed', () => a.got.closed);
    expect(healthText(a.got)).toEqual(['mesh frames are refused: this relay has no mesh']);
  });

  it('lets the newest connection of a key win, and closes a key removed from the tailnet at once', async () => {
    const [k, other] = [generateKeyPair(), generateKeyPair()];
    const membership = Membership.tailnet();
    membership.replace([k.publicKey, other.publicKey]);
    const r = await relay({ membership });
    const first = await derp(r, k);
    const second = await derp(r, k);
    await until('first replaced', () => first.got.closed);
    expect(healthText(first.got)).toEqual(['replaced by a newer connection']);
    const o = await derp(r, other);
    o.c.send(raw32(k), Buffer.from('to the second'));
    await until('delivered', () => second.got.packets.length === 1);
    membership.replace([other.publicKey]);
    await until('removed', () => second.got.closed);
    expect(healthText(second.got)).toEqual(['node removed from the tailnet']);
    expect(r.server.stats().authenticated).toBe(1);
  });
});

describe('DERP bounds (the same as Weft clients)', () => {
  it('caps connections per source across both protocols', async () => {
    const r = await relay({ limits: { maxConnectionsPerSource: 2 } });
    await derp(r);
    const ws = new WebSocket(r.url, 'weft-relay.v1');
    cleanups.push(() => ws.terminate());
    await once(ws, 'open');
    const refused = await get(derpUrl(r), { connection: 'Upgrade', upgrade: 'DERP' });
    expect(refused.status).toBe(429);
    expect(r.server.stats().refusedPerSource).toBe(1);
  });

  it("bounds a DERP reader's queue that stops reading, and drops it after the stall timeout", async () => {
    // The stall timeout is long enough for a loaded machine to fill the queue first.
    const limits = { maxQueueBytes: 256 * 1024, stallTimeoutMs: 2_000, sweepIntervalMs: 50 };
    const r = await relay({ limits });
    const reader = await derp(r);
    reader.c.pause();
    const sender = await derp(r);
    const packet = Buffer.alloc(1200);
    let maxQueued = 0;
    // Bounded: at most 20 000 packets (~24 MB), until the relay drops one for the full queue.
    for (let i = 0; i < 20_000 && r.server.stats().droppedQueueFull === 0 && !reader.got.closed; i++) {
      if (sender.c.bufferedAmount > 1024 * 1024) await sleep(5);
      sender.c.send(raw32(reader.keys), packet);
      if (i % 100 === 0) await sleep(1);
      maxQueued = Math.max(maxQueued, r.server.stats().queuedBytes);
    }
    expect(r.server.stats().droppedQueueFull).toBeGreaterThan(0);
    // Cut by the stall check, and gone from the table once its socket has closed.
    await until(
      'the reader dropped',
      () => r.server.stats().slowReadersDropped === 1 && r.server.stats().authenticated === 1,
    );
    expect(maxQueued).toBeLessThanOrEqual(limits.maxQueueBytes);
  });
});

describe('DERP over WebSocket (subprotocol derp)', () => {
  it('logs in and forwards to a raw DERP client', async () => {
    const r = await relay();
    const keys = generateKeyPair();
    const ws = new WebSocket(derpUrl(r).replace(/^http/, 'ws'), DERP_WS_SUBPROTOCOL);
    cleanups.push(() => ws.terminate());
    const reader = new DerpFrameReader(() => 70_000);
    const frames: Array<{ type: number; payload: Buffer }> = [];
    ws.on('message', (m: Buffer) => {
      reader.push(m);
      for (let f = reader.next(); f !== null; f = reader.next())
        frames.push({ type: f.type, payload: f.payload });
    });
    await until('server key', () => frames.length === 1);
    const serverKey = frames[0]?.payload.subarray(8, 40) as Buffer;
    const priv = new Uint8Array(Buffer.from(keys.privateKey, 'base64'));
    const hello = encodeDerpFrame(
      DerpFrameType.clientInfo,
      raw32(keys),
      sealBox(priv, serverKey, Buffer.from('{}')),
    );
    // The stream may be cut anywhere between messages.
    ws.send(hello.subarray(0, 10));
    ws.send(hello.subarray(10));
    await until('server info', () => frames.some((f) => f.type === DerpFrameType.serverInfo));
    const b = await derp(r);
    ws.send(encodeDerpFrame(DerpFrameType.sendPacket, raw32(b.keys), Buffer.from('over ws')));
    await until('delivered', () => b.got.packets.length === 1);
    expect(b.got.packets).toEqual([{ from: keys.publicKey, data: 'over ws' }]);
  });
});

/** A DERP connection spoken byte by byte: the greeting is read, the rest is up to the test. */
async function rawDerp(r: RunningRelay) {
  const { socket } = await upgrade(derpUrl(r));
  cleanups.push(() => socket.destroy());
  const reader = new DerpFrameReader(() => 70_000);
  const frames: Array<{ type: number; payload: Buffer }> = [];
  socket.on('data', (c: Buffer) => {
    reader.push(c);
    for (let f = reader.next(); f !== null; f = reader.next())
      frames.push({ type: f.type, payload: f.payload });
  });
  const closed = once(socket, 'close');
  await until('greeting', () => frames.length === 1);
  return {
    serverKey: new Uint8Array(frames[0]?.payload.subarray(8, 40) as Buffer),
    write: (b: Uint8Array) => socket.write(b),
    closed,
    health: () =>
      frames
        .filter((f) => f.type === DerpFrameType.health)
        .map((f) => f.payload.toString())
        .join(),
  };
}

function upgrade(url: string): Promise<{ socket: Duplex }> {
  return new Promise((resolve, reject) => {
    const req = request(url, { headers: { connection: 'Upgrade', upgrade: 'DERP' } });
    req.once('error', reject);
    req.once('upgrade', (_res, socket, head) => {
      if (head.length > 0) socket.unshift(head);
      resolve({ socket });
    });
    req.end();
  });
}

function get(url: string, headers: Record<string, string> = {}) {
  return new Promise<{ status: number; headers: Record<string, unknown> }>((resolve, reject) => {
    const req = request(url, { headers });
    req.once('error', reject);
    req.once('response', (res) => {
      res.resume();
      resolve({ status: res.statusCode ?? 0, headers: res.headers });
    });
    req.end();
  });
}
