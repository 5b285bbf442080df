import { createSocket, type Socket } from 'node:dgram';
import { once } from 'node:events';
import { generateKeyPair, isCallMeMaybe, type KeyPair, type RelayMap } from '@weft/protocol';
import { afterEach, describe, expect, it } from 'vitest';
import { silentLogger } from '../log/logger.js';
import { type Relay, weftRelay } from '../testing/relay.js';
import { CallMeMaybeChannel } from './call-me-maybe.js';
import { RelayConnection } from './relay-client.js';
import { RelayManager } from './relay-manager.js';
import { RelayProxy } from './relay-proxy.js';

// Core's relay side against the real `weft-relay` binary (built by `npm run build`; core does not
// import the relay's code) on loopback: authentication with a pinned key, the loopback proxy that
// WireGuard would talk to, home region and fail-over.

const cleanups: Array<() => Promise<unknown> | unknown> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function waitUntil(what: string, check: () => boolean, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!check()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

const relay = (): Promise<Relay> => weftRelay((c) => cleanups.push(c));

function manager(keys: KeyPair): RelayManager {
  const m = new RelayManager({
    nodePrivateKey: keys.privateKey,
    nodeKey: keys.publicKey,
    log: silentLogger,
    backoff: { baseMs: 50, capMs: 300 },
    pingMs: 200,
  });
  cleanups.push(() => m.close());
  return m;
}

/** A UDP socket standing in for a node's WireGuard port. */
async function fakeWireGuard(): Promise<{
  socket: Socket;
  port: number;
  got: Array<{ data: string; from: number }>;
}> {
  const socket = createSocket('udp4');
  const got: Array<{ data: string; from: number }> = [];
  socket.on('message', (m, r) => got.push({ data: m.toString(), from: r.port }));
  socket.bind(0, '127.0.0.1');
  await once(socket, 'listening');
  cleanups.push(() => socket.close());
  return { socket, port: socket.address().port, got };
}

describe('relay connection', () => {
  it('authenticates with the node key and refuses a relay that is not the pinned one', async () => {
    const r = await relay();
    const keys = generateKeyPair();
    const good = new RelayConnection({
      url: r.url,
      relayKey: r.key,
      nodePrivateKey: keys.privateKey,
      nodeKey: keys.publicKey,
    });
    cleanups.push(() => good.close());
    good.start();
    await waitUntil('authenticated', () => good.connected);
    expect(good.reflectorPort).toBeGreaterThan(0);
    await waitUntil('latency', () => good.latencyMs !== null);

    const impostor = generateKeyPair().publicKey;
    const bad = new RelayConnection({
      url: r.url,
      relayKey: impostor,
      nodePrivateKey: keys.privateKey,
      nodeKey: generateKeyPair().publicKey,
      backoff: { baseMs: 50, capMs: 100 },
    });
    cleanups.push(() => bad.close());
    bad.start();
    await waitUntil('refusal', () => bad.lastError !== null);
    expect(bad.lastError).toMatch(/not the pinned/);
    await sleep(300);
    expect(bad.connected).toBe(false);
  });
});

describe('loopback relay proxy', () => {
  it('carries WireGuard datagrams between two nodes, each peer on a socket of its own', async () => {
    const r = await relay();
    const map: RelayMap = { regions: [{ regionId: 1, name: 'one', url: r.url, publicKey: r.key }] };
    const [ka, kb] = [generateKeyPair(), generateKeyPair()];
    const [wa, wb] = [await fakeWireGuard(), await fakeWireGuard()];
    const [ma, mb] = [manager(ka), manager(kb)];
    const pa = new RelayProxy({ send: (d, p) => ma.send(d, p) });
    const pb = new RelayProxy({ send: (d, p) => mb.send(d, p) });
    cleanups.push(
      () => pa.close(),
      () => pb.close(),
    );
    ma.on('packet', (src, pkt) => pa.deliver(src, pkt));
    mb.on('packet', (src, pkt) => pb.deliver(src, pkt));
    pa.setWireGuardPort(wa.port);
    pb.setWireGuardPort(wb.port);
    const third = generateKeyPair().publicKey;
    pa.setPeers([kb.publicKey, third]);
    pb.setPeers([ka.publicKey]);
    ma.setMap(map);
    mb.setMap(map);
    await waitUntil('both connected and sockets bound', () =>
      Boolean(ma.available && mb.available && pa.endpointFor(kb.publicKey) && pb.endpointFor(ka.publicKey)),
    );
    expect(ma.homeRegion?.name).toBe('one');
    expect(pa.endpointFor(kb.publicKey)).not.toBe(pa.endpointFor(third));

    // A's WireGuard sends to its proxy endpoint for B…
    const toB = pa.endpointFor(kb.publicKey) as string;
    wa.socket.send('handshake from a', Number(toB.split(':')[1]), '127.0.0.1');
    await waitUntil('B receives', () => wb.got.length > 0);
    // …and B's WireGuard sees it come from B's proxy socket for A: a stable endpoint per peer.
    const fromA = Number((pb.endpointFor(ka.publicKey) as string).split(':')[1]);
    expect(wb.got[0]).toEqual({ data: 'handshake from a', from: fromA });
    wb.socket.send('response from b', fromA, '127.0.0.1');
    await waitUntil('A receives', () => wa.got.length > 0);
    expect(wa.got[0]).toEqual({ data: 'response from b', from: Number(toB.split(':')[1]) });

    // While B's candidate is opened, what the relay delivers from B is queued, then delivered in order.
    pa.hold(kb.publicKey, 'queue');
    wb.socket.send('queued 1', fromA, '127.0.0.1');
    wb.socket.send('queued 2', fromA, '127.0.0.1');
    await waitUntil('both reach A’s proxy', () => pa.queued === 2);
    expect(wa.got).toHaveLength(1);
    pa.hold(kb.publicKey, 'off');
    await waitUntil('A receives the queued ones', () => wa.got.length > 2);
    // Once the candidate answered, they are dropped; then they flow again.
    pa.hold(kb.publicKey, 'drop');
    wb.socket.send('dropped', fromA, '127.0.0.1');
    await waitUntil('the held one dropped', () => pa.dropped > 0);
    pa.hold(kb.publicKey, 'off');
    wb.socket.send('after the trial', fromA, '127.0.0.1');
    await waitUntil('A receives again', () => wa.got.length > 3);
    expect(wa.got.map((g) => g.data)).toEqual(['response from b', 'queued 1', 'queued 2', 'after the trial']);

    // Only our own WireGuard port may send through the proxy.
    const stranger = await fakeWireGuard();
    stranger.socket.send('injected', Number(toB.split(':')[1]), '127.0.0.1');
    await sleep(200);
    expect(wb.got.map((g) => g.data)).not.toContain('injected');

    // The reflector is a WireGuard peer of the home region, trusted with no traffic.
    const [reflector] = ma.reflectorPeers();
    expect(reflector).toMatchObject({
      publicKey: r.key,
      allowedIPs: [],
      persistentKeepalive: 25,
    });
    expect(reflector?.endpoint).toMatch(/^127\.0\.0\.1:\d+$/);
  });
});

describe('relay regions', () => {
  it('fails over to another region when the home one goes down, and reconnects when it is back', async () => {
    const [r1, r2] = [await relay(), await relay()];
    const map: RelayMap = {
      regions: [
        { regionId: 1, name: 'one', url: r1.url, publicKey: r1.key },
        { regionId: 2, name: 'two', url: r2.url, publicKey: r2.key },
      ],
    };
    const m = manager(generateKeyPair());
    m.setMap(map);
    await waitUntil('both regions up', () => m.report().every((x) => x.connected && x.latencyMs !== null));
    const home = m.homeRegion?.name;
    expect(['one', 'two']).toContain(home);
    const [down, other] = home === 'one' ? [r1, 'two'] : [r2, 'one'];
    expect(m.reflectorPeers()).toHaveLength(2);
    expect(m.reflectorPeers().map((p) => p.allowedIPs)).toEqual([[], []]);

    await down.stop();
    await waitUntil('fail-over', () => m.homeRegion?.name === other);
    expect(m.available).toBe(true);
    expect(m.problems()).toEqual([]);
    await down.start();
    await waitUntil('reconnected', () => m.report().every((x) => x.connected), 5000);
  });

  it('says in health why a relay that serves only its tailnet refuses this node', async () => {
    // A relay whose control never answers serves no one (it has no member list yet).
    const r = await weftRelay(
      (c) => cleanups.push(c),
      ['--control-url', 'http://127.0.0.1:9', '--control-key', generateKeyPair().publicKey],
    );
    const m = manager(generateKeyPair());
    m.setMap({ regions: [{ regionId: 3, name: 'three', url: r.url, publicKey: r.key }] });
    await waitUntil('a refusal', () => /does not serve/.test(m.problems()[0] ?? ''));
    expect(m.problems()[0]).toBe(
      'no relay reachable (three: the relay does not serve this node: tailnet members not known yet); peers without a direct path are unreachable',
    );
    expect(m.available).toBe(false);
  });

  it('says in health when no relay is reachable', async () => {
    const r = await relay();
    const m = manager(generateKeyPair());
    m.setMap({ regions: [{ regionId: 7, name: 'seven', url: r.url, publicKey: r.key }] });
    await waitUntil('up', () => m.available);
    await r.stop();
    await waitUntil('down', () => !m.available);
    expect(m.problems()[0]).toMatch(/no relay reachable \(seven: /);
  });
});

describe('call me maybe through the relay', () => {
  it('delivers an ask sealed by the sender, and refuses a copy sent by anyone else or again', async () => {
    const r = await relay();
    const map: RelayMap = { regions: [{ regionId: 1, name: 'one', url: r.url, publicKey: r.key }] };
    const [ka, kb, kc] = [generateKeyPair(), generateKeyPair(), generateKeyPair()];
    const [ma, mb, mc] = [manager(ka), manager(kb), manager(kc)];
    const channel = (k: KeyPair, m: RelayManager) =>
      new CallMeMaybeChannel({
        nodePrivateKey: k.privateKey,
        nodeKey: k.publicKey,
        send: (d, p) => m.send(d, p),
        log: silentLogger,
      });
    const [ca, cb] = [channel(ka, ma), channel(kb, mb)];
    const heard: Array<{ from: string; candidates: string[] | null }> = [];
    const sent: Uint8Array[] = [];
    mb.on('packet', (from, pkt) => {
      if (isCallMeMaybe(pkt)) heard.push({ from, candidates: cb.receive(from, pkt) });
    });
    ma.on('packet', () => {});
    for (const m of [ma, mb, mc]) m.setMap(map);
    await waitUntil('all connected', () => ma.available && mb.available && mc.available);
    const kbRaw = new Uint8Array(Buffer.from(kb.publicKey, 'base64'));
    const tap = new CallMeMaybeChannel({
      nodePrivateKey: ka.privateKey,
      nodeKey: ka.publicKey,
      send: (d, p) => {
        sent.push(p.slice());
        return ma.send(d, p);
      },
      log: silentLogger,
    });
    expect(tap.ask(kb.publicKey, ['198.18.0.101:41641'])).toBe(true);
    await waitUntil('the ask', () => heard.length === 1);
    expect(heard[0]).toEqual({ from: ka.publicKey, candidates: ['198.18.0.101:41641'] });
    // The same bytes from another node (a relay or a peer replaying it as its own): refused.
    mc.send(kbRaw, sent[0] as Uint8Array);
    // The same bytes again from A's own connection (a replay): refused too.
    ma.send(kbRaw, sent[0] as Uint8Array);
    await waitUntil('both copies', () => heard.length === 3);
    expect(heard.slice(1)).toEqual([
      { from: kc.publicKey, candidates: null },
      { from: ka.publicKey, candidates: null },
    ]);
    // A fresh ask from A still gets through.
    expect(ca.ask(kb.publicKey, ['198.18.0.101:5000'])).toBe(true);
    await waitUntil('a fresh ask', () => heard.length === 4);
    expect(heard[3]?.candidates).toEqual(['198.18.0.101:5000']);
  });
});
