import { describe, expect, it } from 'vitest';
import { FanOut } from './fan-out.js';

// A node's picture here is the set of peer names in its map.
type Picture = Set<string>;
const has = (name: string) => (p: Picture) => p.has(name);

describe('FanOut', () => {
  it('is done only once every expected node has the change, each timed from t0 at its first arrival', () => {
    const fan = new FanOut<Picture>([1, 2, 3], has('joiner'), 1000);
    fan.changed(1, new Set(['a']), 1010); // a change, but not this one
    expect(fan.done).toBe(false);
    fan.changed(1, new Set(['a', 'joiner']), 1020);
    fan.changed(2, new Set(['joiner']), 1030);
    expect(fan.done).toBe(false);
    fan.changed(1, new Set(['joiner']), 1090); // counted once: its first arrival stays
    fan.changed(3, new Set(['joiner']), 1050);
    expect(fan.done).toBe(true);
    expect(fan.times().sort((a, b) => a - b)).toEqual([20, 30, 50]);
  });

  it('ignores nodes it does not wait for', () => {
    const fan = new FanOut<Picture>([1], has('joiner'), 0);
    fan.changed(7, new Set(['joiner']), 5);
    expect(fan.done).toBe(false);
    expect(fan.times()).toEqual([]);
    expect(fan.expectedCount).toBe(1);
  });

  it('counts a removal when the peer is gone from the picture', () => {
    const fan = new FanOut<Picture>([1, 2], (p) => !p.has('victim'), 0);
    fan.changed(1, new Set(['victim']), 3);
    fan.changed(2, new Set([]), 4);
    expect(fan.done).toBe(false);
    fan.changed(1, new Set([]), 9);
    expect(fan.done).toBe(true);
    expect(fan.times()).toEqual([4, 9]);
  });
});
