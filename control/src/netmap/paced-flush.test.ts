import type { StreamServerMessage } from '@weft/protocol';
import { describe, expect, it } from 'vitest';
import { testNode } from '../testing/nodes.js';
import { NetmapHub, type StreamSession } from './hub.js';
import { pacedFlush } from './paced-flush.js';
import { allowAll } from './visibility.js';

const turn = () => new Promise((r) => setImmediate(r));
const owner = { name: 'alice' };

/** A hub on a pretend clock where each message sent costs `sendMs` of it (a flush's duration). */
function setUp(maxPauseMs = 500) {
  const clock = { now: 0, sendMs: 0 };
  const hub = new NetmapHub(
    allowAll,
    ['100.64.0.0/10'],
    undefined,
    pacedFlush(3, maxPauseMs, () => clock.now),
  );
  let nodes = Array.from({ length: 3 }, (_, i) => testNode(i + 1, owner));
  hub.update(nodes);
  const got: StreamServerMessage[] = [];
  const watcher: StreamSession = {
    nodeId: 'n1',
    send: (m) => {
      got.push(m);
      clock.now += clock.sendMs;
    },
    close() {},
  };
  hub.connect(watcher);
  got.length = 0;
  const join = () => {
    nodes = [...nodes, testNode(nodes.length + 1, owner)];
    hub.update(nodes);
  };
  return { clock, got, join };
}

describe('paced flushes', () => {
  it('send a change after a quick flush on the next turn', async () => {
    const { got, join } = setUp();
    for (let i = 0; i < 3; i++) {
      join();
      await turn();
    }
    expect(got.map((m) => m.type)).toEqual(['delta', 'delta', 'delta']);
  });

  it('after a long flush, hold what follows for three times as long and send it as one message', async () => {
    const { clock, got, join } = setUp();
    clock.sendMs = 10; // the flush takes 10 ms: the next waits 30 ms
    join();
    await turn();
    expect(got).toHaveLength(1);
    // A burst within the pause, over many turns: held.
    for (let i = 0; i < 5; i++) {
      join();
      await turn();
    }
    expect(got).toHaveLength(1);
    clock.now += 30;
    await new Promise((r) => setTimeout(r, 60));
    expect(got).toHaveLength(2);
    const merged = got[1] as Extract<StreamServerMessage, { type: 'delta' }>;
    expect(merged.peersUpserted?.map((p) => p.id)).toEqual(['n5', 'n6', 'n7', 'n8', 'n9']);
  });

  it('pause at most maxPauseMs, however long the flush took', async () => {
    const { clock, got, join } = setUp(40);
    clock.sendMs = 1_000; // three seconds' pause, were it not capped
    join();
    await turn();
    join();
    clock.now += 40;
    await new Promise((r) => setTimeout(r, 100));
    expect(got).toHaveLength(2);
  });
  it('keep the pause of a long flush when a flush scheduled before an early (256-change) one finds little', async () => {
    const { clock, got, join } = setUp();
    clock.sendMs = 10; // every flush that sends takes 10 ms: the next waits 30 ms
    join();
    await turn();
    expect(got).toHaveLength(1);
    // 256 changes without a turn: the batch goes at once, and the flush scheduled for the first of
    // them stays pending.
    for (let i = 0; i < 256; i++) join();
    expect(got).toHaveLength(2);
    join(); // scheduled again
    await new Promise((r) => setTimeout(r, 60)); // both scheduled flushes run
    expect(got).toHaveLength(3);
    // The last flush that sent anything took 10 ms: the next change waits 30 ms, not one turn.
    join();
    await turn();
    expect(got).toHaveLength(3);
  });
});
