import type { AddressInfo, Socket } from 'node:net';
import { Worker } from 'node:worker_threads';
import { afterEach, describe, expect, it } from 'vitest';
import WebSocket, { WebSocketServer } from 'ws';
import { keepAlive } from './keepalive.js';

// The peer runs on a thread of its own, as a node is a process of its own. It answers a ping only
// when told, so a test can have the pong arrive while this thread's event loop is held, as while
// control is busy: the pong then waits in the kernel.
const PEER = `
const { parentPort, workerData } = require('node:worker_threads');
const WebSocket = require('ws');
const ws = new WebSocket(workerData.url, { autoPong: false });
ws.on('ping', () => parentPort.postMessage('ping'));
ws.on('close', () => parentPort.postMessage('closed'));
ws.on('message', (data) => parentPort.postMessage(data.length));
const open = new Promise((r) => ws.once('open', r));
parentPort.on('message', async (m) => {
  await open;
  if (m === 'pong') ws.pong();
  else if (m === 'mute') ws._socket.pause();
  else trickle(ws._socket);
});
// Reads one chunk, then nothing for 5 ms: a node busy with other work, reading its maps slowly.
function trickle(socket) {
  socket.on('data', () => {
    socket.pause();
    setTimeout(() => socket.resume(), 5);
  });
}
`;

const INTERVAL_MS = 100;

interface Peer {
  worker: Worker;
  pings: number;
  /** Bytes of messages it has read. */
  read: number;
  closed: boolean;
  server: WebSocket;
}

let cleanup: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const c of cleanup.reverse()) await c();
  cleanup = [];
});

/** A server socket under keepAlive, its peer on a worker thread; `onPing` runs on each ping the peer sees. */
async function connect(
  onPing: (peer: Peer) => void,
  intervalMs = INTERVAL_MS,
): Promise<{ peer: Peer; dead: () => number }> {
  const wss = new WebSocketServer({ host: '127.0.0.1', port: 0 });
  await new Promise((r) => wss.once('listening', r));
  cleanup.push(() => new Promise((r) => wss.close(() => r(undefined))));
  const accepted = new Promise<[WebSocket, Socket]>((r) =>
    wss.once('connection', (ws, req) => r([ws, req.socket])),
  );
  const worker = new Worker(PEER, {
    eval: true,
    workerData: { url: `ws://127.0.0.1:${(wss.address() as AddressInfo).port}` },
  });
  cleanup.push(async () => {
    await worker.terminate();
  });
  const [server, tcp] = await accepted;
  let deaths = 0;
  const stop = keepAlive(server, tcp, intervalMs, () => deaths++);
  server.on('close', stop);
  const peer: Peer = { worker, pings: 0, read: 0, closed: false, server };
  worker.on('message', (m) => {
    if (typeof m === 'number') peer.read += m;
    if (m === 'closed') peer.closed = true;
    if (m === 'ping') {
      peer.pings++;
      onPing(peer);
    }
  });
  return { peer, dead: () => deaths };
}

function holdLoop(ms: number): void {
  const end = performance.now() + ms;
  while (performance.now() < end) {
    // busy: control's event loop held, as by a herd's work
  }
}

const until = async (what: string, test: () => boolean, ms = 5000) => {
  const end = performance.now() + ms;
  while (!test()) {
    if (performance.now() > end) throw new Error(`not within ${ms} ms: ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
};

describe('keepAlive', () => {
  it('keeps a peer that answered while this side was busy past the next ping', async () => {
    // After each of the first three pings, the peer answers while this thread is held for 1.5
    // intervals: the pong is there at once, but the next ping is due before this thread reads it.
    const { peer, dead } = await connect((p) => {
      p.worker.postMessage('pong');
      if (p.pings <= 3) holdLoop(INTERVAL_MS * 1.5);
    });
    await until('six pings', () => peer.pings >= 6);
    expect(dead()).toBe(0);
    expect(peer.closed).toBe(false);
    expect(peer.server.readyState).toBe(WebSocket.OPEN);
  });

  it('drops a peer that stops answering', async () => {
    const { peer, dead } = await connect((p) => p.worker.postMessage(p.pings <= 2 ? 'pong' : 'mute'));
    await until('dropped', () => dead() === 1 && peer.server.readyState === WebSocket.CLOSED);
  });

  // 64 MiB queued at once, as a whole map is: more than the kernel takes, so each ping waits behind
  // what is left of it. The peer reads about 10 MiB a second: for several pings of 2 s. Not much
  // slower, nor shorter intervals: once the rest fits in the kernel's buffers (about 10 MB on
  // loopback), a ping goes straight in behind it and needs its pong within the interval, and the
  // kernel wakes a writer only once half of what it holds has gone. With 16 MiB at 500 ms the
  // backlog drained before the third ping on a loaded machine; at 1 MiB a second no progress showed.
  const BACKLOG_MIB = 64;
  const queueBacklog = (server: WebSocket) => {
    for (let i = 0; i < BACKLOG_MIB * 16; i++) server.send(Buffer.alloc(64 * 1024, 0x61));
  };

  it('keeps a peer that is still reading what it was sent, its pings queued behind it', async () => {
    const { peer, dead } = await connect(() => {}, 2_000);
    peer.worker.postMessage('trickle');
    queueBacklog(peer.server);
    // Never a pong: without one, a peer that takes none of our bytes is dropped at the second ping's
    // turn, while the backlog (longer than two intervals) is still being read. A ping is read only
    // once all of it has been.
    await until('the backlog and a ping read', () => peer.pings >= 1 || dead() > 0, 30_000);
    expect(dead()).toBe(0);
    expect(peer.read).toBeGreaterThanOrEqual(BACKLOG_MIB * 2 ** 20);
  }, 40_000);

  it('drops a peer that neither reads nor answers, with bytes waiting for it', async () => {
    const { peer, dead } = await connect(() => {});
    peer.worker.postMessage('mute');
    queueBacklog(peer.server);
    await until('dropped', () => dead() === 1 && peer.server.readyState === WebSocket.CLOSED);
    expect(peer.pings).toBe(0);
  });
});
