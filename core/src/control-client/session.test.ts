import { createServer } from 'node:http';
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

/** A control whose stream upgrades hang unanswered until `answer` is set, then are accepted and closed. */
async function slowControl() {
  const state = { answer: false };
  const held: Socket[] = [];
  const wss = new WebSocketServer({ noServer: true });
  const server = createServer((_req, res) =>
    res.end(JSON.stringify({ publicKey: generateKeyPair().publicKey })),
  );
  server.on('upgrade', (req, socket, head) => {
    if (!state.answer) {
      held.push(socket as Socket);
      return;
    }
    wss.handleUpgrade(req, socket, head, (ws) => {
      ws.close();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  cleanups.push(() => {
    for (const s of held) s.destroy();
    server.closeAllConnections();
    return new Promise((resolve) => server.close(() => resolve()));
  });
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, state };
}

describe('MapSession', () => {
  it('waits longer for an upgrade after each one control left unanswered, and starts over once one is answered', async () => {
    const control = await slowControl();
    const asked: number[] = [];
    const session = new MapSession(new ControlClient(control.url, generateKeyPair().privateKey), {
      log: silentLogger,
      backoff: { baseMs: 1, capMs: 1 },
      // The policy is asked how long to wait after n timeouts in a row; the wait itself is short here.
      handshakeTimeoutMs: (timeouts) => {
        asked.push(timeouts);
        return 100;
      },
    });
    cleanups.push(() => session.stop());
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
    const held: Socket[] = [];
    const server = createServer((_req, res) =>
      res.end(JSON.stringify({ publicKey: generateKeyPair().publicKey })),
    );
    server.on('upgrade', (_req, socket) => {
      held.push(socket as Socket);
      // Status line and headers, then a body that never finishes.
      socket.write(
        'HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"err',
      );
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    cleanups.push(() => {
      for (const s of held) s.destroy();
      server.closeAllConnections();
      return new Promise((resolve) => server.close(() => resolve()));
    });
    const asked: number[] = [];
    const session = new MapSession(
      new ControlClient(
        `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
        generateKeyPair().privateKey,
      ),
      {
        log: silentLogger,
        backoff: { baseMs: 1, capMs: 1 },
        handshakeTimeoutMs: (timeouts) => {
          asked.push(timeouts);
          return 100;
        },
      },
    );
    cleanups.push(() => session.stop());
    session.start();
    await waitUntil('a second upgrade after the stalled one', () => held.length >= 2);
    // An error answer is still an answer: it does not count as a timeout in a row.
    expect(asked.slice(0, 2)).toEqual([0, 0]);
  });
});
