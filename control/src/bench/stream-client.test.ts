import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { WebSocketServer } from 'ws';
import { CLOSED, FrameReader, OPEN, StreamClient, type StreamHandlers } from './stream-client.js';

/** A server frame (unmasked) with `opcode`; `fin` false for a message's fragment but the last. */
function serverFrame(opcode: number, payload: string, fin = true): Buffer {
  const body = Buffer.from(payload);
  const len = body.length;
  const head = len < 126 ? Buffer.from([0, len]) : Buffer.from([0, 126, len >> 8, len & 0xff]);
  head[0] = (fin ? 0x80 : 0) | opcode;
  return Buffer.concat([head, body]);
}

interface Got {
  messages: { head: string; length: number; body: string | null }[];
  pings: string[];
  closed: number;
}

function reader(headBytes: number): { reader: FrameReader; got: Got } {
  const got: Got = { messages: [], pings: [], closed: 0 };
  const r = new FrameReader(headBytes, {
    keep: (head) => head.toString().includes('delta'),
    message: (head, length, body) =>
      got.messages.push({ head: head.toString(), length, body: body?.toString() ?? null }),
    ping: (payload) => got.pings.push(payload.toString()),
    closed: () => got.closed++,
  });
  return { reader: r, got };
}

describe('FrameReader', () => {
  const big = `{"type":"full","peers":"${'p'.repeat(300)}"}`;
  const frames = Buffer.concat([
    // A whole map in three fragments, a ping between two of them; then a delta; then a close.
    serverFrame(1, big.slice(0, 10), false),
    serverFrame(0, big.slice(10, 200), false),
    serverFrame(9, 'are you there'),
    serverFrame(0, big.slice(200)),
    serverFrame(1, '{"type":"delta","peersRemoved":["n1"]}'),
    serverFrame(1, ''),
    serverFrame(8, ''),
  ]);
  const expected: Got = {
    messages: [
      { head: big.slice(0, 16), length: big.length, body: null },
      { head: '{"type":"delta",', length: 38, body: '{"type":"delta","peersRemoved":["n1"]}' },
      { head: '', length: 0, body: null },
    ],
    pings: ['are you there'],
    closed: 1,
  };

  it('reports whole messages, their heads and the kept ones’ bytes, read at once', () => {
    const { reader: r, got } = reader(16);
    r.feed(frames);
    expect(got).toEqual(expected);
  });

  it('reads the same however the bytes are split', () => {
    for (const step of [1, 2, 3, 7, 64]) {
      const { reader: r, got } = reader(16);
      for (let at = 0; at < frames.length; at += step) r.feed(frames.subarray(at, at + step));
      expect(got).toEqual(expected);
    }
  });

  it('refuses a continuation without a message', () => {
    const { reader: r } = reader(16);
    expect(() => r.feed(serverFrame(0, 'x'))).toThrow(/continuation/);
  });
});

describe('StreamClient against a ws server', () => {
  let server: WebSocketServer | null = null;
  afterEach(() => server?.close());

  async function listen(options: ConstructorParameters<typeof WebSocketServer>[0] = {}): Promise<string> {
    const s = new WebSocketServer({ host: '127.0.0.1', port: 0, ...options });
    server = s;
    await new Promise((r) => s.once('listening', r));
    return `http://127.0.0.1:${(s.address() as AddressInfo).port}`;
  }

  function open(url: string, keep: (head: string) => boolean) {
    const seen: string[] = [];
    const messages: { head: string; length: number; body: string | null }[] = [];
    let resolveClosed: () => void = () => {};
    const closed = new Promise<void>((r) => {
      resolveClosed = r;
    });
    const handlers: StreamHandlers = {
      connected: () => seen.push('connected'),
      upgrade: () => seen.push('upgrade'),
      keep: (head) => keep(head.toString()),
      message: (head, length, body) =>
        messages.push({ head: head.toString(), length, body: body?.toString() ?? null }),
      refused: (status) => seen.push(`refused ${status}`),
      error: (err) => seen.push(`error ${err.message}`),
      close: () => {
        seen.push('close');
        resolveClosed();
      },
    };
    const client = new StreamClient(url, '/stream?x=1', { 'x-sig': 'signed' }, '127.0.0.1', 16, handlers);
    return { client, seen, messages, closed };
  }

  it('upgrades, reads a fragmented whole map and a delta, answers a ping, sends, and closes', async () => {
    const url = await listen();
    const map = `{"type":"full","peers":"${'p'.repeat(200_000)}"}`;
    const fromClient: string[] = [];
    let pong = '';
    server?.on('connection', (ws, req) => {
      fromClient.push(`${req.url} ${req.headers['x-sig']}`);
      ws.on('message', (d) => fromClient.push(d.toString()));
      ws.on('pong', (d) => {
        pong = d.toString();
        ws.close(1000, 'bye');
      });
      // As control's sendFrame writes a class's whole map: its parts as one message's fragments.
      const parts = [map.slice(0, 5), map.slice(5, 150_000), map.slice(150_000)];
      parts.forEach((part, i) => {
        ws.send(part, { binary: false, fin: i === parts.length - 1 });
      });
      ws.send('{"type":"delta","peersRemoved":["a"]}');
    });
    const c = open(url, (head) => head.includes('delta'));
    await new Promise<void>((resolve) => {
      const poll = setInterval(() => {
        if (c.messages.length === 2) {
          clearInterval(poll);
          resolve();
        }
      }, 5);
    });
    expect(c.client.readyState).toBe(OPEN);
    c.client.send('{"type":"endpoints","endpoints":[]}');
    // The server pings only after the message arrived, then closes on the pong.
    for (const ws of server?.clients ?? []) ws.ping('p1');
    await c.closed;
    expect(c.seen).toEqual(['connected', 'upgrade', 'close']);
    expect(c.messages).toEqual([
      { head: map.slice(0, 16), length: map.length, body: null },
      { head: '{"type":"delta",', length: 37, body: '{"type":"delta","peersRemoved":["a"]}' },
    ]);
    expect(fromClient).toEqual(['/stream?x=1 signed', '{"type":"endpoints","endpoints":[]}']);
    expect(pong).toBe('p1');
    expect(c.client.readyState).toBe(CLOSED);
  });

  it('reports a refused upgrade by its status', async () => {
    const url = await listen({ verifyClient: (_info, cb) => cb(false, 401) });
    const c = open(url, () => false);
    await c.closed;
    expect(c.seen).toEqual(['connected', 'refused 401', 'close']);
  });
});
