import { setImmediate as nextTurn } from 'node:timers/promises';
import { describe, expect, it } from 'vitest';
import { ConnectQueue } from './connect-queue.js';

describe('ConnectQueue', () => {
  it('runs connects in order, not in the turn they were added in but in the next, past one that throws', async () => {
    const errors: unknown[] = [];
    const queue = new ConnectQueue(1_000, (err) => errors.push(err));
    const ran: string[] = [];
    queue.add(() => ran.push('a'));
    queue.add(() => {
      throw new Error('b');
    });
    queue.add(() => ran.push('c'));
    await nextTurn();
    // The turn they were added in: a socket that ended meanwhile has not been read yet.
    expect(ran).toEqual([]);
    await nextTurn();
    expect(ran).toEqual(['a', 'c']);
    expect(errors).toEqual([new Error('b')]);
  });

  it('a connect added while the queue runs waits for a later turn', async () => {
    const queue = new ConnectQueue(1_000, (err) => {
      throw err;
    });
    const ran: string[] = [];
    queue.add(() => {
      ran.push('a');
      queue.add(() => ran.push('b'));
    });
    await nextTurn();
    await nextTurn();
    expect(ran).toEqual(['a']);
    await nextTurn();
    expect(ran).toEqual(['a', 'b']);
  });

  it('runs no connect once closed, neither one waiting nor one added after', async () => {
    const queue = new ConnectQueue(1_000, (err) => {
      throw err;
    });
    const ran: string[] = [];
    queue.add(() => ran.push('before'));
    queue.close();
    queue.add(() => ran.push('after'));
    await nextTurn();
    await nextTurn();
    await nextTurn();
    expect(ran).toEqual([]);
  });
});
