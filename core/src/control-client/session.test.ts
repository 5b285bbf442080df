import { createServer, type IncomingMessage } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { generateKeyPair } from '@weft/protocol';
import { afterEach, describe, expect, it } from 'vitest';
import { WebSocketServer } from 'ws';
import { silentLogger } from '../log/logger.js';
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
