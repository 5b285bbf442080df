import { execFileSync } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type ReflectedEndpoint, RelayConnection } from '@weft/core';
import {
  encodeRelayData,
  generateKeyPair,
  type KeyPair,
  RELAY_MAX_FRAME_BYTES,
  RELAY_MAX_PACKET_BYTES,
  RELAY_SUBPROTOCOL,
  RelayCloseCode,
  RelayFrameType,
  relayAuthProof,
} from '@weft/protocol';
import { promSample } from '@weft/protocol/prometheus';
import { afterEach, describe, expect, it } from 'vitest';
import { WebSocket } from 'ws';
import type { RelayLimits } from './connection.js';
import { Membership } from './membership.js';
import { type RunningRelay, startRelay } from './relay.js';

// The relay server over real WebSockets on loopback: honest clients (the engine's RelayConnection) and raw
// WebSockets that misbehave on purpose.

const cleanups: Array<() => Promise<unknown>> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

const relayOn127 = () => ({ keyPair: generateKeyPair(), host: '127.0.0.1', port: 0, reflectorPort: 0 });

async function relay(limits: Partial<RelayLimits> = {}, membership?: Membership): Promise<RunningRelay> {
  const r = await startRelay({ ...relayOn127(), limits, membership });
  cleanups.push(() => r.close());
  return r;
}

interface Received {
  from: string;
  bytes: number;
  first: number;
}

/** A node key as the bytes a relay frame carries. */
const bytes = (key: string) => Buffer.from(key, 'base64');

/** A connected, authenticated client, told its reflected endpoint, that records what it receives. */
async function client(r: RunningRelay, keys = generateKeyPair()) {
  const c = new RelayConnection({
    url: r.url,
    nodePrivateKey: keys.privateKey,
    nodeKey: keys.publicKey,
    relayKey: r.publicKey,
    backoff: { baseMs: 50 },
  });
  const got: Received[] = [];
  c.on('packet', (from, packet) => got.push({ from, bytes: packet.length, first: packet[0] ?? -1 }));
  cleanups.push(async () => c.close());
  const ready = Promise.all([once(c, 'up'), once(c, 'endpoint')]);
  c.start();
  await ready;
  return { c, keys, got };
}

/** A raw WebSocket speaking the relay subprotocol, for misbehaviour. */
async function raw(r: RunningRelay, opts: { autoPong?: boolean; localAddress?: string } = {}) {
  const ws = new WebSocket(r.url, RELAY_SUBPROTOCOL, opts);
  cleanups.push(async () => ws.terminate());
  const [first] = (await once(ws, 'message')) as [Buffer];
  const challenge = JSON.parse(first.toString()) as { relayKey: string; challenge: string };
  const closed = once(ws, 'close').then(([code]) => code as number);
  return { ws, challenge, closed };
}

function authRaw(
  ws: WebSocket,
  challenge: { relayKey: string; challenge: string },
  keys: KeyPair,
  claim = keys.publicKey,
) {
  const proof = relayAuthProof({
    nodePrivateKey: keys.privateKey,
    nodeKey: claim,
    relayKey: challenge.relayKey,
    challenge: challenge.challenge,
  });
  ws.send(JSON.stringify({ type: 'auth', nodeKey: claim, proof }));
}

const packet = (n: number, first = 4) => new Uint8Array(n).fill(first, 0, 1);

async function until(what: string, check: () => boolean, ms = 5_000): Promise<void> {
  const end = Date.now() + ms;
  while (!check()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(10);
  }
}

describe('relay authentication', () => {
  it('forwards between two authenticated nodes, tagged with the proven source', async () => {
    const r = await relay();
    const a = await client(r);
    const b = await client(r);
    expect(a.c.send(bytes(b.keys.publicKey), packet(1400, 7))).toBe(true);
    expect(b.c.send(bytes(a.keys.publicKey), packet(32, 4))).toBe(true);
    await until('both packets', () => a.got.length === 1 && b.got.length === 1);
    expect(b.got[0]).toEqual({ from: a.keys.publicKey, bytes: 1400, first: 7 });
    expect(a.got[0]).toEqual({ from: b.keys.publicKey, bytes: 32, first: 4 });
    expect(r.server.stats()).toMatchObject({ authenticated: 2, forwardedPackets: 2, forwardedBytes: 1432 });
  });

  it('refuses a wrong proof, and a claim to another node key', async () => {
    const r = await relay();
    const victim = await client(r);
    const sender = await client(r);

    const wrong = await raw(r);
    wrong.ws.send(
      JSON.stringify({
        type: 'auth',
        nodeKey: generateKeyPair().publicKey,
        proof: wrong.challenge.challenge,
      }),
    );
    expect(await wrong.closed).toBe(RelayCloseCode.authFailed);

    // An attacker claims the victim's key with a proof made from its own private key.
    const thief = await raw(r);
    const thiefGot: Buffer[] = [];
    thief.ws.on('message', (d: Buffer, isBinary) => isBinary && thiefGot.push(d));
    authRaw(thief.ws, thief.challenge, generateKeyPair(), victim.keys.publicKey);
    expect(await thief.closed).toBe(RelayCloseCode.authFailed);

    // A proof seen on one connection is no good on another: the challenge differs.
    const replay = await raw(r);
    const firstTry = await raw(r);
    const keys = generateKeyPair();
    const proof = relayAuthProof({
      nodePrivateKey: keys.privateKey,
      nodeKey: keys.publicKey,
      relayKey: firstTry.challenge.relayKey,
      challenge: firstTry.challenge.challenge,
    });
    replay.ws.send(JSON.stringify({ type: 'auth', nodeKey: keys.publicKey, proof }));
    expect(await replay.closed).toBe(RelayCloseCode.authFailed);

    // The victim still gets its packets, and only it.
    sender.c.send(bytes(victim.keys.publicKey), packet(100));
    await until('the victim to receive', () => victim.got.length === 1);
    expect(thiefGot).toHaveLength(0);
    expect(r.server.stats().authenticated).toBe(2);
  });

  it('never forwards for an unauthenticated connection', async () => {
    const r = await relay();
    const b = await client(r);
    const u = await raw(r);
    u.ws.send(encodeRelayData(RelayFrameType.send, Buffer.from(b.keys.publicKey, 'base64'), packet(64)));
    expect(await u.closed).toBe(RelayCloseCode.authFailed);
    const q = await raw(r);
    q.ws.send(JSON.stringify({ type: 'endpointRequest' }));
    expect(await q.closed).toBe(RelayCloseCode.authFailed);
    await sleep(100);
    expect(b.got).toHaveLength(0);
    expect(r.server.stats().forwardedPackets).toBe(0);
  });

  it('closes a connection that does not authenticate in time', async () => {
    const r = await relay({ authTimeoutMs: 200, sweepIntervalMs: 50 });
    const u = await raw(r);
    expect(await u.closed).toBe(RelayCloseCode.authTimeout);
  });

  it('refuses upgrades without the subprotocol or on another path, and serves /healthz', async () => {
    const r = await relay();
    const status = (ws: WebSocket) =>
      new Promise<number>((resolve) =>
        ws.on('unexpected-response', (_req, res) => resolve(res.statusCode ?? 0)),
      );
    const noProto = new WebSocket(r.url);
    noProto.on('error', () => {});
    expect(await status(noProto)).toBe(400);
    const otherPath = new WebSocket(r.url.replace('/relay', '/other'), RELAY_SUBPROTOCOL);
    otherPath.on('error', () => {});
    expect(await status(otherPath)).toBe(404);
    const health = await new Promise<number>((resolve) =>
      request(r.url.replace('ws:', 'http:').replace('/relay', '/healthz'), (res) =>
        resolve(res.statusCode ?? 0),
      ).end(),
    );
    expect(health).toBe(200);

    const busy = await relay({ maxPendingConnections: 1 });
    await raw(busy); // connected, never authenticates
    const refused = new WebSocket(busy.url, RELAY_SUBPROTOCOL);
    refused.on('error', () => {});
    expect(await status(refused)).toBe(503);
  });
});

describe('relay robustness', () => {
  it('closes only the sender of an oversized or malformed frame', async () => {
    const r = await relay();
    const a = await client(r);
    const b = await client(r);
    const dst = Buffer.from(b.keys.publicKey, 'base64');
    const offenders: Array<[string, (ws: WebSocket) => void, number]> = [
      ['oversized', (ws) => ws.send(new Uint8Array(RELAY_MAX_FRAME_BYTES + 1)), 1009],
      ['too short', (ws) => ws.send(new Uint8Array(10).fill(1)), RelayCloseCode.protocolError],
      ['unknown type', (ws) => ws.send(new Uint8Array(100).fill(9)), RelayCloseCode.protocolError],
      [
        'recv from a node',
        (ws) => ws.send(encodeRelayData(RelayFrameType.recv, dst, packet(10))),
        RelayCloseCode.protocolError,
      ],
      ['bad JSON', (ws) => ws.send('{"type":'), RelayCloseCode.protocolError],
      ['unknown message', (ws) => ws.send('{"type":"hello"}'), RelayCloseCode.protocolError],
    ];
    for (const [what, offend, code] of offenders) {
      const o = await raw(r);
      authRaw(o.ws, o.challenge, generateKeyPair());
      await once(o.ws, 'message'); // authOk
      offend(o.ws);
      expect(await o.closed, what).toBe(code);
    }
    a.c.send(bytes(b.keys.publicKey), packet(RELAY_MAX_PACKET_BYTES));
    await until('the pair to still work', () => b.got.length === 1);
    expect(b.got[0]?.bytes).toBe(RELAY_MAX_PACKET_BYTES);
    expect(a.c.connected && b.c.connected).toBe(true);
  });

  /** An authenticated raw connection that writes frames as fast as its socket takes them. */
  async function flooder(r: RunningRelay, targets: string[]) {
    const f = await raw(r);
    authRaw(f.ws, f.challenge, generateKeyPair());
    await once(f.ws, 'message');
    const frames = targets.map((k) =>
      encodeRelayData(RelayFrameType.send, Buffer.from(k, 'base64'), packet(RELAY_MAX_PACKET_BYTES)),
    );
    let written = 0;
    return {
      /** Floods until `done` settles, calling `sample` between bursts. */
      async run(done: Promise<unknown>, sample: () => void = () => {}) {
        let finished = false;
        void done.finally(() => {
          finished = true;
        });
        while (!finished) {
          while (f.ws.bufferedAmount < 256 * 1024) f.ws.send(frames[written++ % frames.length] as Uint8Array);
          sample();
          await new Promise((res) => setImmediate(res));
        }
      },
    };
  }

  /** A pair exchanging `count` packets, one every 5 ms; resolves when all have arrived. */
  async function steadyPair(
    from: Awaited<ReturnType<typeof client>>,
    to: Awaited<ReturnType<typeof client>>,
    count: number,
  ) {
    for (let i = 0; i < count; i++) {
      expect(from.c.send(bytes(to.keys.publicKey), packet(1400))).toBe(true);
      await sleep(5);
    }
    await until('the pair to receive all', () => to.got.length === count, 10_000);
  }

  it('bounds what all stalled readers queue together, and keeps a pair with a short queue flowing', async () => {
    // Each victim may queue 512 KiB, four of them 2 MiB; all queues together get 256 KiB (beyond
    // it, each connection only its fair share), so the relay holds at most twice that.
    const limits = { maxQueueBytes: 512 * 1024, maxTotalQueueBytes: 256 * 1024, stallTimeoutMs: 60_000 };
    const r = await relay(limits);
    const victims: string[] = [];
    for (let i = 0; i < 4; i++) {
      const v = await raw(r);
      const keys = generateKeyPair();
      authRaw(v.ws, v.challenge, keys);
      await once(v.ws, 'message');
      v.ws.pause();
      victims.push(keys.publicKey);
    }
    const c = await client(r);
    const d = await client(r);
    const f = await flooder(r, victims);
    let maxQueued = 0;
    const pair = steadyPair(c, d, 200);
    await Promise.all([
      pair,
      f.run(pair, () => (maxQueued = Math.max(maxQueued, r.server.stats().queuedBytes))),
    ]);
    const stats = r.server.stats();
    expect(stats.droppedOverBudget).toBeGreaterThan(0);
    expect(maxQueued).toBeGreaterThan(limits.maxTotalQueueBytes / 2);
    expect(maxQueued).toBeLessThanOrEqual(2 * limits.maxTotalQueueBytes);
    expect(c.c.connected && d.c.connected).toBe(true);
  });

  it('keeps another pair flowing and queued memory bounded while one client floods a stalled reader', async () => {
    const limits = { maxQueueBytes: 256 * 1024, stallTimeoutMs: 60_000 };
    const r = await relay(limits);
    // The victim reads nothing, so everything sent to it queues: the worst case for memory.
    const victim = await raw(r);
    const victimKeys = generateKeyPair();
    authRaw(victim.ws, victim.challenge, victimKeys);
    await once(victim.ws, 'message');
    victim.ws.pause();
    const c = await client(r);
    const d = await client(r);
    const f = await flooder(r, [victimKeys.publicKey, generateKeyPair().publicKey]);
    let maxQueued = 0;
    const pair = steadyPair(c, d, 200);
    await Promise.all([
      pair,
      f.run(pair, () => (maxQueued = Math.max(maxQueued, r.server.stats().queuedBytes))),
    ]);
    const stats = r.server.stats();
    expect(stats.droppedQueueFull).toBeGreaterThan(0);
    expect(stats.droppedNoPeer).toBeGreaterThan(0);
    // Everything the relay holds for the stalled victim stays within one queue bound.
    expect(maxQueued).toBeGreaterThan(limits.maxQueueBytes / 2);
    expect(maxQueued).toBeLessThanOrEqual(limits.maxQueueBytes);
    expect(c.c.connected && d.c.connected).toBe(true);
  });

  it('holds a flooding client to its rate by not reading its socket', async () => {
    const limits = { bytesPerSecond: 4 * 1024 * 1024, burstBytes: 512 * 1024 };
    const r = await relay(limits);
    const sink = await client(r);
    const c = await client(r);
    const d = await client(r);
    const f = await flooder(r, [sink.keys.publicKey]);
    const started = Date.now();
    const pair = steadyPair(c, d, 200);
    await Promise.all([pair, f.run(pair)]);
    const seconds = (Date.now() - started) / 1000;
    await sleep(100);
    const flooded = sink.got.reduce((n, g) => n + g.bytes, 0);
    // The rate for the duration plus the burst, with slack for frames read before a pause.
    expect(flooded).toBeGreaterThan(limits.bytesPerSecond * seconds * 0.5);
    expect(flooded).toBeLessThan(limits.burstBytes + limits.bytesPerSecond * (seconds + 0.5));
  });

  it('drops a reader that stops reading, after bounding its queue', async () => {
    const limits = { maxQueueBytes: 128 * 1024, stallTimeoutMs: 300, sweepIntervalMs: 50 };
    const r = await relay(limits);
    const sender = await client(r);
    const slow = await raw(r);
    const slowKeys = generateKeyPair();
    authRaw(slow.ws, slow.challenge, slowKeys);
    await once(slow.ws, 'message');
    const other = await client(r);
    slow.ws.pause(); // stops reading: the kernel buffers fill, then the relay's queue
    let maxQueued = 0;
    for (let i = 0; i < 2_000 && slow.ws.readyState === WebSocket.OPEN; i++) {
      sender.c.send(bytes(slowKeys.publicKey), packet(16 * 1024));
      if (i % 50 === 0) await sleep(1);
      maxQueued = Math.max(maxQueued, r.server.stats().queuedBytes);
    }
    await until('the slow reader to be dropped', () => r.server.stats().slowReadersDropped === 1);
    expect(maxQueued).toBeLessThanOrEqual(limits.maxQueueBytes);
    expect(r.server.stats().droppedQueueFull).toBeGreaterThan(0);
    sender.c.send(bytes(other.keys.publicKey), packet(10));
    await until('the sender to still be served', () => other.got.length === 1);
    expect(r.server.stats().authenticated).toBe(2);
  });

  it('cuts a connection that stops answering pings', async () => {
    const r = await relay({ pingIntervalMs: 100, sweepIntervalMs: 20 });
    const mute = await raw(r, { autoPong: false });
    authRaw(mute.ws, mute.challenge, generateKeyPair());
    await once(mute.ws, 'message');
    expect(await mute.closed).toBe(1006); // terminated, no close frame
    await until('the relay to forget it', () => r.server.stats().connections === 0);
  });

  it('keeps an idle connection alive with pings', async () => {
    const r = await relay({ pingIntervalMs: 100, sweepIntervalMs: 20 });
    const a = await client(r);
    await sleep(700);
    expect(a.c.connected).toBe(true);
  });
});

describe('relay over TLS', () => {
  it('serves wss:// with the given certificate; the client trusts it through `ca`', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'weft-relay-tls-'));
    cleanups.push(() => rm(dir, { recursive: true, force: true }));
    const [certFile, keyFile] = [join(dir, 'cert.pem'), join(dir, 'key.pem')];
    // biome-ignore format: the openssl command reads best on one line
    execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', keyFile, '-out', certFile, '-days', '1', '-subj', '/CN=weft-relay-test', '-addext', 'subjectAltName=IP:127.0.0.1'], { stdio: 'ignore' });
    const cert = await readFile(certFile);
    const r = await startRelay({
      keyPair: generateKeyPair(),
      host: '127.0.0.1',
      port: 0,
      reflectorPort: 0,
      tls: { cert, key: await readFile(keyFile) },
    });
    cleanups.push(() => r.close());
    expect(r.url).toMatch(/^wss:\/\/127\.0\.0\.1:\d+\/relay$/);
    const keys = [generateKeyPair(), generateKeyPair()];
    const [a, b] = keys.map(
      (k) =>
        new RelayConnection({
          url: r.url,
          nodePrivateKey: k.privateKey,
          nodeKey: k.publicKey,
          relayKey: r.publicKey,
          ca: cert,
        }),
    ) as [RelayConnection, RelayConnection];
    cleanups.push(
      async () => a.close(),
      async () => b.close(),
    );
    const got = once(b, 'packet');
    const connected = [once(a, 'up'), once(b, 'up')];
    a.start();
    b.start();
    await Promise.all(connected);
    a.send(bytes(keys[1]?.publicKey ?? ''), packet(100));
    const [from] = (await got) as [string];
    expect(from).toBe(keys[0]?.publicKey);
  });
});

describe('relay sessions', () => {
  it('lets the newest connection for a key win; the old client stops', async () => {
    const r = await relay();
    const keys = generateKeyPair();
    const first = await client(r, keys);
    const replaced = new Promise((resolve) =>
      first.c.on('closed', ({ code }) => code === RelayCloseCode.replaced && resolve(code)),
    );
    const second = await client(r, keys);
    await replaced;
    const sender = await client(r);
    sender.c.send(bytes(keys.publicKey), packet(50));
    await until('the newest to receive', () => second.got.length === 1);
    await sleep(300);
    expect(first.got).toHaveLength(0);
    expect(first.c.connected).toBe(false);
    expect(r.server.stats().authenticated).toBe(2);
  });

  it('refuses a relay that presents another key than the pinned one, and keeps retrying', async () => {
    const r = await relay();
    const keys = generateKeyPair();
    const c = new RelayConnection({
      url: r.url,
      nodePrivateKey: keys.privateKey,
      nodeKey: keys.publicKey,
      relayKey: generateKeyPair().publicKey,
      backoff: { baseMs: 20, capMs: 50 },
    });
    cleanups.push(async () => c.close());
    const codes: number[] = [];
    c.on('closed', ({ code }) => codes.push(code));
    c.start();
    await until('two refusals', () => codes.length >= 2);
    expect(codes[0]).toBe(RelayCloseCode.protocolError);
    expect(c.connected).toBe(false);
    expect(r.server.stats().authenticated).toBe(0);
  });

  it('reconnects with back-off when the relay restarts', async () => {
    const keyPair = generateKeyPair();
    const first = await startRelay({ keyPair, host: '127.0.0.1', port: 0, reflectorPort: 0 });
    const port = Number(new URL(first.url).port);
    const a = await client(first);
    const b = await client(first);
    const disconnected = once(a.c, 'down');
    await first.close();
    await disconnected;
    expect(a.c.connected).toBe(false);
    expect(a.c.send(bytes(b.keys.publicKey), packet(10))).toBe(false);
    await sleep(300);
    const second = await startRelay({ keyPair, host: '127.0.0.1', port, reflectorPort: 0 });
    cleanups.push(() => second.close());
    await until('both to reconnect', () => a.c.connected && b.c.connected);
    a.c.send(bytes(b.keys.publicKey), packet(10));
    await until('traffic again', () => b.got.length === 1);
  });

  it('tells a node its reflected endpoint on request and when it changes', async () => {
    const r = await relay();
    const a = await client(r);
    const answers: ReflectedEndpoint[] = [];
    a.c.on('endpoint', (e) => answers.push(e));
    a.c.requestEndpoint();
    await until('an answer', () => answers.length === 1);
    expect(answers[0]).toEqual({ endpoint: null, observedAt: null });
    r.observations.record(a.keys.publicKey, '203.0.113.7:41641');
    await until('a push', () => answers.length === 2);
    expect(answers[1]?.endpoint).toBe('203.0.113.7:41641');
    r.observations.record(a.keys.publicKey, '203.0.113.7:41641'); // a refresh, not a change
    r.observations.record(generateKeyPair().publicKey, '198.51.100.1:1'); // someone else
    a.c.requestEndpoint();
    await until('the second answer', () => answers.length === 3);
    expect(answers[2]?.endpoint).toBe('203.0.113.7:41641');
  });
});

describe('relay membership and per-source bounds', () => {
  /** Connects and authenticates a raw socket; resolves with the close code, or 'open' after 300 ms. */
  async function authOutcome(r: RunningRelay, keys: KeyPair) {
    const o = await raw(r);
    let reason = '';
    o.ws.on('close', (_code, why) => {
      reason = why.toString();
    });
    authRaw(o.ws, o.challenge, keys);
    const outcome = await Promise.race([o.closed, sleep(300).then(() => 'open' as const)]);
    return { outcome, reason, o };
  }

  it('refuses a node key that is not in the tailnet, and one before control has said who is', async () => {
    const membership = Membership.tailnet();
    const r = await relay({}, membership);
    const member = generateKeyPair();
    expect(await authOutcome(r, member)).toMatchObject({
      outcome: RelayCloseCode.notMember,
      reason: 'tailnet members not known yet',
    });
    membership.replace([member.publicKey]);
    expect((await authOutcome(r, member)).outcome).toBe('open');
    expect(await authOutcome(r, generateKeyPair())).toMatchObject({
      outcome: RelayCloseCode.notMember,
      reason: 'node key is not in the tailnet',
    });
    expect(r.server.stats().authenticated).toBe(1);
  });

  it('closes the connection of a node removed from the tailnet at once, and forwards nothing more to it', async () => {
    const [a, b] = [generateKeyPair(), generateKeyPair()];
    const membership = Membership.tailnet();
    membership.replace([a.publicKey, b.publicKey]);
    const r = await relay({}, membership);
    const ca = await client(r, a);
    const cb = await client(r, b);
    const closed = once(cb.c, 'closed') as Promise<[{ code: number; reason: string }]>;
    const started = Date.now();
    membership.replace([a.publicKey]);
    const [info] = await closed;
    expect(info).toEqual({ code: RelayCloseCode.notMember, reason: 'node removed from the tailnet' });
    expect(Date.now() - started).toBeLessThan(2_000);
    await until('b gone from the relay', () => r.server.stats().authenticated === 1);
    ca.c.send(bytes(b.publicKey), packet(100));
    await until('the packet to b dropped', () => r.server.stats().droppedNoPeer === 1);
    // b's client retries, and is refused while it is not a member.
    await sleep(300);
    expect(cb.c.connected).toBe(false);
  });

  it('caps connections from one source address; others are unaffected', async () => {
    const r = await relay({ maxConnectionsPerSource: 3 });
    const held = [await raw(r), await raw(r), await raw(r)];
    const refused = new WebSocket(r.url, RELAY_SUBPROTOCOL);
    refused.on('error', () => {}); // terminated at cleanup before it ever opened
    cleanups.push(async () => refused.terminate());
    const [, res] = (await once(refused, 'unexpected-response')) as [unknown, { statusCode: number }];
    expect(res.statusCode).toBe(429);
    expect(r.server.stats().refusedPerSource).toBe(1);
    // Another source address (all of 127/8 is loopback) still gets in.
    const other = await raw(r, { localAddress: '127.0.0.2' });
    expect(other.ws.readyState).toBe(WebSocket.OPEN);
    // A closed connection frees its place.
    held[0]?.ws.close();
    await held[0]?.closed;
    await until('the place to be freed', () => r.server.stats().connections === 3);
    const again = await raw(r);
    expect(again.ws.readyState).toBe(WebSocket.OPEN);
  });
});

async function scrape(r: RunningRelay): Promise<string> {
  if (r.metricsUrl === null) throw new Error('no metrics listener');
  return (await fetch(r.metricsUrl)).text();
}

// The relay's /metrics after real traffic.
describe('relay metrics', () => {
  it('count forwarded packets and bytes, drops for unknown peers and open connections', async () => {
    const r = await startRelay({ ...relayOn127(), metricsListen: { host: '127.0.0.1', port: 0 } });
    cleanups.push(() => r.close());
    const a = await client(r);
    const b = await client(r);
    const before = await scrape(r);
    expect(promSample(before, 'weft_relay_forwarded_packets_total', 'transport="weft"')).toBe(0);
    expect(promSample(before, 'weft_relay_connections', 'transport="weft"')).toBe(2);

    a.c.send(Buffer.from(generateKeyPair().publicKey, 'base64'), new Uint8Array(100));
    a.c.send(Buffer.from(b.keys.publicKey, 'base64'), new Uint8Array(1200));
    await until('b to get the packet', () => b.got.length === 1);

    const after = await scrape(r);
    expect(promSample(after, 'weft_relay_forwarded_packets_total', 'transport="weft"')).toBe(1);
    expect(promSample(after, 'weft_relay_forwarded_bytes_total', 'transport="weft"')).toBe(1200);
    expect(promSample(after, 'weft_relay_forwarded_packets_total', 'transport="derp"')).toBe(0);
    // Frames on one connection are handled in order: the first was dropped before b got the second.
    expect(promSample(after, 'weft_relay_dropped_frames_total', 'reason="unknown_peer"')).toBe(1);
    expect(promSample(after, 'weft_relay_dropped_frames_total', 'reason="not_member"')).toBe(0);
    expect(promSample(after, 'weft_relay_reflector_requests_total', 'result="handshake"')).toBe(0);
  });

  it('are not served without --metrics-listen, nor on the public port', async () => {
    const r = await relay();
    expect(r.metricsUrl).toBeNull();
    const res = await fetch(r.url.replace(/^ws/, 'http').replace(/\/relay$/, '/metrics'));
    expect(res.status).toBe(404);
  });
});
