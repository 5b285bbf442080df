import { describe, expect, it } from 'vitest';
import { testNode } from '../testing/nodes.js';
import { RelayMembers } from './members.js';

const node = (i: number, keyExpiry: string | null = null) =>
  testNode(i, null, { nodeKey: `key-${String(i).padStart(3, '0')}`, keyExpiry });

describe('RelayMembers', () => {
  it('works out the keys only when asked while no relay listens (a registration burst costs no sorts)', () => {
    let asked = 0;
    const members = new RelayMembers(() => {
      asked++;
      return new Date('2026-06-01T00:00:00Z');
    });
    for (let n = 1; n <= 50; n++) members.update(Array.from({ length: n }, (_, i) => node(i)));
    expect(asked).toBe(0);
    members.update([node(2), node(1), node(3, '2026-01-01T00:00:00Z')]);
    expect(members.current()).toEqual(['key-001', 'key-002']);
    expect(asked).toBe(1);
  });

  it('tells a listener at once of every change, and a newcomer only of changes after it asked', () => {
    const members = new RelayMembers(() => new Date('2026-06-01T00:00:00Z'));
    members.update([node(1)]);
    const heard: (readonly string[])[] = [];
    members.subscribe((keys) => heard.push(keys));
    expect(members.current()).toEqual(['key-001']);
    expect(heard).toEqual([]);
    members.update([node(1), node(2)]);
    expect(heard).toEqual([['key-001', 'key-002']]);
    members.update([node(2), node(1)]);
    expect(heard).toHaveLength(1);
  });
});
