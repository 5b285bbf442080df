import { createServer, type IncomingMessage } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { generateKeyPair, type RegisterRequest } from '@weft/protocol';
import { afterEach, describe, expect, it } from 'vitest';
import { WebSocketServer } from 'ws';
import { silentLogger } from '../log/logger.js';
import { nodeView, StandInControl } from '../testing/standin-control.js';
import { waitUntil } from '../testing/wait.js';
import { ControlClient } from './client.js';
import { MapSession } from './session.js';

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

/**
 * A control that serves its key and hands each stream upgrade to `upgrade`; the sockets it holds are
 * destroyed at cleanup.
 */
async function fakeControl(
  upgrade: (req: IncomingMessage, socket: Socket, head: Buffer, held: Socket[]) => void,
) {
  const held: Socket[] = [];
  const server = createServer((_req, res) =>
    res.end(JSON.stringify({ publicKey: generateKeyPair().publicKey })),
  );
  server.on('upgrade', (req, socket, head) => upgrade(req, socket as Socket, head, held));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  cleanups.push(() => {
    for (const s of held) s.destroy();
    server.closeAllConnections();
    return new Promise((resolve) => server.close(() => resolve()));
  });
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, held };
}

/** A control whose stream upgrades hang unanswered until `answer` is set, then are accepted and closed. */
async function slowControl() {
  const state = { answer: false };
  const wss = new WebSocketServer({ noServer: true });
  const control = await fakeControl((req, socket, head, held) => {
    if (!state.answer) {
      held.push(socket);
      return;
    }
    wss.handleUpgrade(req, socket, head, (ws) => {
      ws.close();
    });
  });
  return { url: control.url, state };
}

/**
 * A started session against `url` that retries at once and waits 100 ms for each upgrade; `asked`
 * gets the timeouts in a row it was asked to wait after, attempt by attempt.
 */
function startSession(url: string, asked: number[]): MapSession {
  const session = new MapSession(new ControlClient(url, generateKeyPair().privateKey), {
    log: silentLogger,
    backoff: { baseMs: 1, capMs: 1 },
    // The policy is asked how long to wait after n timeouts in a row; the wait itself is short here.
    handshakeTimeoutMs: (timeouts) => {
      asked.push(timeouts);
      return 100;
    },
  });
  cleanups.push(() => session.stop());
  return session;
}

describe('MapSession', () => {
  it('waits longer for an upgrade after each one control left unanswered, and starts over once one is answered', async () => {
    const control = await slowControl();
    const asked: number[] = [];
    const session = startSession(control.url, asked);
    // Attempts are made one at a time: the one that connected is the latest asked.
    const connected: number[] = [];
    session.on('connected', () => connected.push(asked.length - 1));
    session.start();
    await waitUntil('three unanswered upgrades and a fourth made', () => asked.length >= 4);
    expect(asked.slice(0, 4)).toEqual([0, 1, 2, 3]);

    control.state.answer = true;
    await waitUntil('an answered upgrade and one more attempt', () => {
      const first = connected[0];
      return first !== undefined && asked.length > first + 1;
    });
    // The attempt control answered came after a run of timeouts; the one after it starts over.
    const first = connected[0] as number;
    expect(asked[first]).toBeGreaterThanOrEqual(3);
    expect(asked[first + 1]).toBe(0);
  });

  it('retries when control (or a proxy) answers the upgrade with an error whose body stalls', async () => {
    const control = await fakeControl((_req, socket, _head, held) => {
      held.push(socket);
      // Status line and headers, then a body that never finishes.
      socket.write(
        'HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"err',
      );
    });
    const asked: number[] = [];
    startSession(control.url, asked).start();
    await waitUntil('a second upgrade after the stalled one', () => control.held.length >= 2);
    // An error answer is still an answer: it does not count as a timeout in a row.
    expect(asked.slice(0, 2)).toEqual([0, 0]);
  });
});

describe('MapSession after its stream breaks', () => {
  it.each([
    ['its map carried for the steady time: sooner', 0, 100],
    ['its map not carried for long: the first step', 60_000, 300],
  ])('waits by how long the stream had worked (%s)', async (_what, steadyMs, wait) => {
    const control = new StandInControl();
    control.netmapFor = (node) => ({
      self: nodeView(1, node.req.nodeKey),
      peers: [],
      packetFilter: [],
      tailnetRanges: ['100.64.0.0/10'],
    });
    await control.start();
    cleanups.push(() => control.stop());
    const machine = generateKeyPair();
    control.nodes.set(machine.publicKey, {
      machineKey: machine.publicKey,
      req: { nodeKey: generateKeyPair().publicKey, hostname: 'laptop' } as RegisterRequest,
      authorized: true,
    });
    const waits: number[] = [];
    const session = new MapSession(new ControlClient(control.url, machine.privateKey), {
      log: {
        ...silentLogger,
        debug: (msg) => {
          const ms = /reconnecting to control in (\d+) ms/.exec(msg)?.[1];
          if (ms !== undefined) waits.push(Number(ms));
        },
      },
      // The first step is 200-400 ms; random() 0.5 picks its middle, or the middle of 0-200.
      backoff: { baseMs: 400, capMs: 400, random: () => 0.5 },
      steadyMs,
    });
    cleanups.push(() => session.stop());
    let maps = 0;
    session.on('message', (msg) => {
      if (msg.type === 'full' || msg.type === 'resume') maps++;
    });
    session.start();
    await waitUntil('the first map', () => maps === 1);
    // Control's end of the stream dies (its process killed): no close frame.
    for (const ws of control.streams) ws.terminate();
    await waitUntil('the map again', () => maps === 2);
    expect(waits).toEqual([wait]);
  });
});
