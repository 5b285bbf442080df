import { createSocket, type Socket } from 'node:dgram';
import { once } from 'node:events';
import { generateKeyPair, type NetMap, publicKeyOf } from '@weft/protocol';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { RelayConnection } from '../paths/relay-client.js';
import { type EngineFixture, engineFixture } from '../testing/engine-fixture.js';
import { weftRelay } from '../testing/relay.js';
import { nodeView, type RegisteredNode } from '../testing/standin-control.js';
import { waitUntil } from '../testing/wait.js';

// Node key rotation with a real `weft-relay` on loopback: relays deliver packets by node key, so
// after a rotation the engine's relay connection must prove, and be reachable at, the new key.

let fx: EngineFixture;
const cleanups: Array<() => Promise<unknown> | unknown> = [];

beforeEach(async () => {
  fx = await engineFixture();
});

afterEach(async () => {
  await fx.cleanup();
  for (const c of cleanups.splice(0).reverse()) await c();
});

/** The engine's node key, from the private key it gave WireGuard. */
const engineKey = (): string => publicKeyOf(fx.helper.state?.interface.privateKey as string);

/** A UDP socket on the engine's WireGuard listen port, where the relay proxy delivers. */
async function wireGuardPort(
  port: number,
): Promise<{ socket: Socket; got: Array<{ data: string; from: number }> }> {
  const socket = createSocket('udp4');
  const got: Array<{ data: string; from: number }> = [];
  socket.on('message', (m, r) => got.push({ data: m.toString(), from: r.port }));
  socket.bind(port, '127.0.0.1');
  await once(socket, 'listening');
  cleanups.push(() => socket.close());
  return { socket, got };
}

/** Sends `data` from the peer through the relay to node key `to` until it reaches WireGuard. */
async function reaches(
  peer: RelayConnection,
  to: string,
  data: string,
  got: Array<{ data: string; from: number }>,
): Promise<void> {
  const dst = Buffer.from(to, 'base64');
  const arrived = () => got.some((g) => g.data === data);
  const deadline = Date.now() + 5_000;
  while (!arrived()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for "${data}" to reach WireGuard`);
    peer.send(dst, Buffer.from(data));
    await new Promise((r) => setTimeout(r, 50));
  }
}

describe('node key rotation with a relay', () => {
  it('reconnects to the relay as the new key, so packets to the new key reach WireGuard', async () => {
    const relay = await weftRelay((c) => cleanups.push(c));
    const peerKeys = generateKeyPair();
    const peer = new RelayConnection({
      url: relay.url,
      relayKey: relay.key,
      nodePrivateKey: peerKeys.privateKey,
      nodeKey: peerKeys.publicKey,
      backoff: { baseMs: 50, capMs: 200 },
    });
    cleanups.push(() => peer.close());
    peer.start();
    await waitUntil('the peer on the relay', () => peer.connected);

    fx.control.netmapFor = (node: RegisteredNode): NetMap => ({
      self: nodeView(1, node.req.nodeKey, { name: node.req.hostname }),
      peers: [nodeView(2, peerKeys.publicKey)],
      packetFilter: [],
      tailnetRanges: ['100.64.0.0/10', 'fd7a:115c:a1e0::/48'],
      relayMap: { regions: [{ regionId: 1, name: 'one', url: relay.url, publicKey: relay.key }] },
    });

    // Logged in and relayed, without rotation: the peer reaches the engine at its first key.
    const first = await fx.startEngine({ keyRotationMs: null });
    await first.up({ controlUrl: fx.control.url, authKey: 'tskey-good', hostname: 'laptop' });
    await waitUntil('the interface applied', () => fx.helper.state !== null);
    const listenPort = fx.helper.state?.interface.listenPort as number;
    const wg = await wireGuardPort(listenPort);
    const oldKey = engineKey();
    await reaches(peer, oldKey, 'to the first key', wg.got);

    // Started again with rotation on: it comes up relayed as the old key, then rotates.
    await fx.stopEngine(first);
    const engine = await fx.startEngine({ keyRotationMs: 300 });
    await waitUntil('Running', () => engine.backendState() === 'Running');
    await waitUntil('a rotation', () => fx.control.registrations.some((r) => r.oldNodeKey === oldKey), 5_000);
    await waitUntil('the new key applied', () => engineKey() !== oldKey, 5_000);
    const newKey = engineKey();
    expect(fx.helper.state?.interface.listenPort).toBe(listenPort);

    await reaches(peer, newKey, 'to the new key', wg.got);
    // Delivered by the proxy's socket for the peer: the endpoint WireGuard was told for it.
    const from = wg.got.find((g) => g.data === 'to the new key')?.from;
    await waitUntil('the peer relayed through the proxy', () =>
      Boolean(
        fx.helper.state?.peers.some(
          (p) => p.publicKey === peerKeys.publicKey && p.endpoint === `127.0.0.1:${from}`,
        ),
      ),
    );
  });
});
