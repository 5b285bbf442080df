import { setImmediate as nextTurn } from 'node:timers/promises';
import { describe, expect, it } from 'vitest';
import { ConnectQueue } from './connect-queue.js';

// Only a closed queue drops.
const fail = () => {
  throw new Error('dropped while open');
};

describe('ConnectQueue', () => {
  it('runs connects in order, not in the turn they were added in but in the next, past one that throws', async () => {
    const errors: unknown[] = [];
    const queue = new ConnectQueue(1_000, (err) => errors.push(err));
    const ran: string[] = [];
    queue.add(() => ran.push('a'), fail);
    queue.add(() => {
      throw new Error('b');
    }, fail);
    queue.add(() => ran.push('c'), fail);
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
      queue.add(() => ran.push('b'), fail);
    }, fail);
    await nextTurn();
    await nextTurn();
    expect(ran).toEqual(['a']);
    await nextTurn();
    expect(ran).toEqual(['a', 'b']);
  });

  it('runs no connect once closed but drops each, the one waiting and the one added after', async () => {
    const queue = new ConnectQueue(1_000, (err) => {
      throw err;
    });
    const ran: string[] = [];
    queue.add(
      () => ran.push('before'),
      () => ran.push('before dropped'),
    );
    queue.close();
    queue.add(
      () => ran.push('after'),
      () => ran.push('after dropped'),
    );
    await nextTurn();
    await nextTurn();
    await nextTurn();
    expect(ran).toEqual(['before dropped', 'after dropped']);
  });
});
