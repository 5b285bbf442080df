import { describe, expect, it } from 'vitest';
import { splitByReplica } from './load-kit.js';

describe('splitByReplica', () => {
  it('counts a node on the replica its stream went to, not the one it tried first', () => {
    const a = 'http://127.0.0.1:1001';
    const b = 'http://127.0.0.1:1002';
    // n1 tried a first, timed out there and streams from b; n2 tried b first and ended on a.
    const nodes = [
      { name: 'n0', prefer: 0, url: a },
      { name: 'n1', prefer: 0, url: b },
      { name: 'n2', prefer: 1, url: a },
      { name: 'n3', prefer: 1, url: b },
    ];
    const { cut, stayed } = splitByReplica(nodes, a);
    expect(cut.map((n) => n.name)).toEqual(['n0', 'n2']);
    expect(stayed.map((n) => n.name)).toEqual(['n1', 'n3']);
  });
});
