import { once } from 'node:events';
import type { AddressInfo } from 'node:net';
import { applyStreamMessage, type NetMap, type StreamServerMessage } from '@weft/protocol';
import { afterEach, describe, expect, it, vi } from 'vitest';
import WebSocket, { WebSocketServer } from 'ws';
import { NetmapHub, type StreamSession } from '../netmap/hub.js';
import { PolicyVisibility, wildcardSourcesOf } from '../netmap/policy-visibility.js';
import type { NodeRecord } from '../tailnet/records.js';
import { connectedHub, TEST_RANGES, testNode } from '../testing/nodes.js';
import { frameText } from '../testing/wire.js';
import { DEFAULT_LIMITS } from './limits.js';
import { type Frame, type SendingSocket, StreamSender, sendFrame } from './stream-sender.js';

// A node that stops reading its stream must not make control queue every change for it, nor slow
// the others: its deltas are held back while its socket is over the bound, it gets one whole map
// once it drains, and it is dropped if it never does.

const LIMITS = { streamBufferBytes: 16 * 1024, streamStuckMs: 30_000 };

/** A socket whose peer reads nothing: every send stays queued until drain(). */
class StalledSocket implements SendingSocket {
  readyState = 1;
  bufferedAmount = 0;
  maxBuffered = 0;
  terminated = false;
  private queue: { text: string; done: () => void }[] = [];
  netmap: NetMap | null = null;
  send(data: Frame, done: () => void) {
    const text = frameText(data);
    this.queue.push({ text, done });
    this.bufferedAmount += text.length;
    this.maxBuffered = Math.max(this.maxBuffered, this.bufferedAmount);
  }
  terminate() {
    this.terminated = true;
  }
  /** The peer reads everything queued. */
  drain() {
    for (let next = this.queue.shift(); next !== undefined; next = this.queue.shift()) {
      const { text, done } = next;
      this.bufferedAmount -= text.length;
      this.netmap = applyStreamMessage(this.netmap, JSON.parse(text) as StreamServerMessage);
      done();
    }
  }
}

/** A socket whose peer reads `rate` bytes per tick(): messages leave it in order, partly at a time. */
class SlowLinkSocket implements SendingSocket {
  readyState = 1;
  bufferedAmount = 0;
  full = 0;
  deltas = 0;
  private queue: { left: number; type: string; done: () => void }[] = [];
  send(data: Frame, done: () => void) {
    const text = frameText(data);
    const { type } = JSON.parse(text) as StreamServerMessage;
    this.queue.push({ left: text.length, type, done });
    this.bufferedAmount += text.length;
  }
  terminate() {
    this.readyState = 3;
  }
  tick(rate: number) {
    let budget = rate;
    for (let head = this.queue[0]; head !== undefined && budget > 0; head = this.queue[0]) {
      const sent = Math.min(budget, head.left);
      head.left -= sent;
      budget -= sent;
      this.bufferedAmount -= sent;
      if (head.left > 0) break;
      this.queue.shift();
      if (head.type === 'full') this.full++;
      else this.deltas++;
      head.done();
    }
  }
}

class Session implements StreamSession {
  netmap: NetMap | null = null;
  deltas = 0;
  constructor(readonly nodeId: string) {}
  send(m: StreamServerMessage) {
    if (m.type === 'delta') this.deltas++;
    this.netmap = applyStreamMessage(this.netmap, m);
  }
  close() {}
}

function setup() {
  const nodes = Array.from({ length: 20 }, (_, i) => testNode(i + 1, { name: 'alice' }));
  const { hub, sessions } = connectedHub(nodes, null, (id) => new Session(id));
  const socket = new StalledSocket();
  const slow = testNode(100, { name: 'alice' });
  const session: StreamSession = {
    nodeId: slow.id,
    send: (m) => sender.send(m),
    close: () => {},
    backlogged: () => sender.backlogged(),
  };
  const sender: StreamSender = new StreamSender(
    socket,
    LIMITS,
    () => hub.resync(session),
    () => {},
  );
  hub.apply([slow.id], [slow]);
  hub.connect(session);
  const mapBytes = socket.bufferedAmount;
  let rows = [...nodes];
  /** Node 1 reports new endpoints `count` times (each one a delta to every node). */
  const churn = (count: number) => {
    for (let k = 0; k < count; k++) {
      const moved: NodeRecord = { ...(rows[0] as NodeRecord), endpoints: [`203.0.113.1:${1000 + k}`] };
      rows = [moved, ...rows.slice(1)];
      hub.apply([moved.id], [moved]);
    }
  };
  return { hub, sessions, socket, churn, slow, sender, mapBytes };
}

describe('StreamSender', () => {
  afterEach(() => vi.useRealTimers());

  it('holds a stalled node to its bound while the others get every delta, then sends it one whole map', () => {
    const { hub, sessions, socket, churn, slow, mapBytes } = setup();
    churn(2_000);
    // Without the bound the stalled socket would hold all 2,000 deltas (hundreds of KiB). The
    // unwritten first map is not counted against the bound.
    const largest = 2 * 1024;
    expect(socket.maxBuffered).toBeLessThanOrEqual(mapBytes + LIMITS.streamBufferBytes + largest);
    for (const s of sessions.values()) {
      if (s.nodeId !== 'n1') expect(s.deltas).toBeGreaterThanOrEqual(2_000);
    }

    socket.drain();
    // The drain brought one whole map, with the latest endpoints of node 1.
    const peer = socket.netmap?.peers.find((p) => p.id === 'n1');
    expect(peer?.endpoints).toEqual(['203.0.113.1:2999']);
    expect(socket.netmap).toEqual(hub.snapshot(slow.id));
    expect(socket.terminated).toBe(false);
  });

  it('sends deltas after a whole map larger than the bound while it is still being written', () => {
    // 5,000 peers make a map of about 1.7 MB, over the 1 MiB bound; the link moves 64 KiB a tick.
    const nodes = Array.from({ length: 5_000 }, (_, i) => testNode(i + 1, { name: 'alice' }));
    const hub = new NetmapHub(new PolicyVisibility(wildcardSourcesOf(TEST_RANGES)), TEST_RANGES);
    hub.update(nodes);
    const socket = new SlowLinkSocket();
    const session: StreamSession = {
      nodeId: 'n2',
      send: (m) => sender.send(m),
      close: () => {},
      backlogged: () => sender.backlogged(),
    };
    const sender: StreamSender = new StreamSender(
      socket,
      DEFAULT_LIMITS,
      () => hub.resync(session),
      () => {},
    );
    hub.connect(session);
    expect(socket.bufferedAmount).toBeGreaterThan(DEFAULT_LIMITS.streamBufferBytes);
    let mover = nodes[0] as NodeRecord;
    for (let tick = 0; tick < 200; tick++) {
      mover = { ...mover, endpoints: [`203.0.113.1:${1000 + tick}`] };
      hub.apply([mover.id], [mover]);
      socket.tick(64 * 1024);
    }
    for (let k = 0; k < 10 && socket.bufferedAmount > 0; k++) socket.tick(64 * 1024);
    sender.close();
    expect(socket.full).toBe(1);
    expect(socket.deltas).toBe(200);
  });

  it('disconnects a node that stays backlogged past the bound', () => {
    vi.useFakeTimers();
    const { socket, churn } = setup();
    churn(500);
    vi.advanceTimersByTime(LIMITS.streamStuckMs - 1);
    expect(socket.terminated).toBe(false);
    vi.advanceTimersByTime(1);
    expect(socket.terminated).toBe(true);
  });

  it('serialises a message shared by many streams once', () => {
    const spy = vi.spyOn(JSON, 'stringify');
    const sockets = Array.from({ length: 5 }, () => new StalledSocket());
    const senders = sockets.map(
      (s) =>
        new StreamSender(
          s,
          LIMITS,
          () => {},
          () => {},
        ),
    );
    const message: StreamServerMessage = { type: 'delta', peersRemoved: ['n1'] };
    spy.mockClear();
    for (const sender of senders) sender.send(message);
    expect(spy).toHaveBeenCalledTimes(1);
    expect(sockets.every((s) => s.bufferedAmount > 0)).toBe(true);
    spy.mockRestore();
  });
});

// A whole map to a member of a class goes as parts (its class's shared bytes): they must arrive as
// one text message, in order with the messages around it, however the parts cut its UTF-8.

let server: WebSocketServer | null = null;

/** Ends the server of `connected` and its connections. */
async function closeServer(): Promise<void> {
  for (const client of server?.clients ?? []) client.terminate();
  await new Promise((resolve) => server?.close(resolve));
  server = null;
}

/** A server's end of a connection and the client's, both open. */
async function connected(): Promise<{ socket: WebSocket; client: WebSocket }> {
  server = new WebSocketServer({ host: '127.0.0.1', port: 0 });
  await once(server, 'listening');
  const accepted = once(server, 'connection');
  const client = new WebSocket(`ws://127.0.0.1:${(server.address() as AddressInfo).port}`);
  const [[socket]] = await Promise.all([accepted, once(client, 'open')]);
  return { socket: socket as WebSocket, client };
}

describe('sendFrame', () => {
  afterEach(closeServer);

  it('writes a string, parts and bytes as whole text messages, in order', async () => {
    const { socket, client } = await connected();
    const received: { text: string; binary: boolean }[] = [];
    const three = new Promise<void>((resolve) => {
      client.on('message', (data, binary) => {
        received.push({ text: String(data), binary });
        if (received.length === 3) resolve();
      });
      // A client that finds invalid UTF-8 in a message closes the connection.
      client.on('close', () => resolve());
    });
    const text = '{"name":"café €"}';
    const bytes = Buffer.from(text);
    // Cut inside "€" (three bytes): neither fragment is valid UTF-8 alone.
    const euro = bytes.indexOf(Buffer.from('€'));
    const parts = [bytes.subarray(0, euro + 1), bytes.subarray(euro + 1, euro + 2), bytes.subarray(euro + 2)];
    const written: (Error | undefined)[] = [];
    sendFrame(socket, 'first', () => {});
    sendFrame(socket, parts, (err) => written.push(err));
    sendFrame(socket, Buffer.from('last'), () => {});
    await three;
    expect(received).toEqual([
      { text: 'first', binary: false },
      { text, binary: false },
      { text: 'last', binary: false },
    ]);
    expect(written).toHaveLength(1);
    expect(written[0] ?? undefined).toBeUndefined();
  });

  it("calls the last part's done with an error when the socket is terminated mid-way", async () => {
    const { socket } = await connected();
    // More than the kernel takes at once: the later parts are still queued when it ends.
    const parts = Array.from({ length: 32 }, () => Buffer.alloc(1024 * 1024, 'a'));
    const done = new Promise<Error | undefined>((resolve) => sendFrame(socket, parts, resolve));
    socket.terminate();
    expect(await done).toBeInstanceOf(Error);
  });
});
