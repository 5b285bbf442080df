import { constants } from 'node:http2';
import { afterEach, describe, expect, it } from 'vitest';
import { cleanupAll, startTestControl, type TestControl } from '../testing/harness.js';
import { type MapReader, TsTestClient } from '../testing/tailscale-client.js';

// A Tailscale client that stops reading its map stream must not make control queue every change
// for it (issue 13): past the stream bound control holds its changes back, sends one whole map once
// the client has read what was queued, and drops a client that stays stuck.

afterEach(cleanupAll);

const BOUND = 8 * 1024;

async function joined(t: TestControl, name: string, key: string): Promise<TsTestClient> {
  const c = new TsTestClient(t.control.url);
  const r = await c.register({ Auth: { AuthKey: key } }, name);
  if (r.MachineAuthorized !== true) throw new Error(`not authorized: ${JSON.stringify(r)}`);
  return c;
}

/** `count` endpoint changes of `mover`, each a "lite" map request with 64 new endpoints (~1.5 KB). */
async function moveMany(mover: TsTestClient, count: number): Promise<string[]> {
  const conn = await mover.connection();
  let last: string[] = [];
  for (let i = 0; i < count; i++) {
    last = Array.from(
      { length: 64 },
      (_, j) => `${j < 32 ? '198.51.100' : '203.0.113'}.${1 + j}:${10_000 + i}`,
    );
    const r = await conn.post('/machine/map', {
      Version: 130,
      NodeKey: mover.nodeKey,
      OmitPeers: true,
      Stream: false,
      Endpoints: last,
    });
    if (r.status !== 200) throw new Error(`lite update: ${r.status} ${r.body}`);
  }
  return last;
}

const wholeMaps = (m: MapReader) => m.messages.filter((x) => x.Peers !== undefined).length;

describe('Tailscale map streams over a slow reader', () => {
  it('hold changes back past the bound, then send one whole map once the client reads again', async () => {
    const t = await startTestControl({ limits: { streamBufferBytes: BOUND, streamStuckMs: 60_000 } });
    const key = await t.key('--reusable');
    const slow = await joined(t, 'ts-slow', key);
    const mover = await joined(t, 'ts-mover', key);
    const watcher = await joined(t, 'ts-watcher', key);
    const sm = await slow.map({});
    await sm.until('slow sees mover', (m) => m.peerNamed('ts-mover') !== undefined);
    const wm = await watcher.map({});
    await wm.until('watcher sees mover', (m) => m.peerNamed('ts-mover') !== undefined);

    // The slow client stops reading; ~200 KB of patches (150 × ~1.5 KB) are made for it, more than
    // its HTTP/2 window (64 KB) and the bound together.
    sm.stream.pause();
    const last = await moveMany(mover, 150);
    const moved = (m: MapReader) =>
      JSON.stringify(m.peerNamed('ts-mover')?.Endpoints) === JSON.stringify(last);
    await wm.until('the watcher, reading, has every change', moved, 60_000);
    const received = sm.messages.length;

    sm.stream.resume();
    await sm.until('the slow client catches up', moved, 60_000);
    // It caught up with a whole map, not with every patch it missed.
    expect(wholeMaps(sm)).toBe(2);
    expect(sm.messages.length - received).toBeLessThan(100);
    expect(wm.messages.length).toBeGreaterThanOrEqual(150);
    expect(sm.ended).toBe(false);
  }, 120_000);

  it('drops a client that stays over the bound', async () => {
    const t = await startTestControl({ limits: { streamBufferBytes: BOUND, streamStuckMs: 500 } });
    const key = await t.key('--reusable');
    const slow = await joined(t, 'ts-slow', key);
    const mover = await joined(t, 'ts-mover', key);
    const sm = await slow.map({});
    await sm.until('slow sees mover', (m) => m.peerNamed('ts-mover') !== undefined);
    sm.stream.pause();
    await moveMany(mover, 150);
    // Paused, the client does not see 'end' until it reads again: the stream's close says it.
    await new Promise<void>((resolve) => {
      if (sm.stream.closed) resolve();
      else sm.stream.once('close', () => resolve());
    });
    expect(sm.stream.rstCode).toBe(constants.NGHTTP2_CANCEL);
  }, 120_000);
});
