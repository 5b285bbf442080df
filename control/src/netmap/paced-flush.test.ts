import { describe, expect, it } from 'vitest';
import { testNode } from '../testing/nodes.js';
import type { StreamSession } from './hub.js';
import { NetmapHub } from './hub.js';
import { pacedFlush } from './paced-flush.js';
import { allowAll } from './visibility.js';

const turn = () => new Promise((r) => setImmediate(r));
const owner = { name: 'alice' };

describe('paced flushes', () => {
  it('send an isolated change on the next turn, and a burst as one message per node per gap', async () => {
    let clock = 0;
    const hub = new NetmapHub(
      allowAll,
      ['100.64.0.0/10'],
      undefined,
      pacedFlush(100, () => clock),
    );
    const nodes = Array.from({ length: 3 }, (_, i) => testNode(i + 1, owner));
    hub.update(nodes);
    const got: string[] = [];
    const watcher: StreamSession = { nodeId: 'n1', send: (m) => void got.push(m.type), close() {} };
    hub.connect(watcher);
    got.length = 0;
    // An isolated change: out on the next turn.
    clock = 1_000;
    hub.update([...nodes, testNode(4, owner)]);
    await turn();
    expect(got).toEqual(['delta']);
    // A burst within the gap: held until it ends, then one message with all of it.
    clock = 1_010;
    for (let i = 5; i < 25; i++) {
      hub.update([...nodes, ...Array.from({ length: i - 3 }, (_, k) => testNode(k + 4, owner))]);
      await turn();
    }
    expect(got).toEqual(['delta']);
    clock = 1_200;
    await new Promise((r) => setTimeout(r, 150));
    expect(got).toEqual(['delta', 'delta']);
  });
});
