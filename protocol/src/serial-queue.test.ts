import { describe, expect, it } from 'vitest';
import { BatchQueue, SerialQueue } from './serial-queue.js';

describe('SerialQueue', () => {
  it('runs operations one at a time in call order, and a failure does not stop the next', async () => {
    const serial = new SerialQueue();
    const log: string[] = [];
    const op =
      (name: string, fail = false) =>
      async () => {
        log.push(`${name} start`);
        await new Promise((r) => setImmediate(r));
        log.push(`${name} end`);
        if (fail) throw new Error(name);
        return name;
      };
    const a = serial.run(op('a'));
    const b = serial.run(op('b', true));
    const c = serial.run(op('c'));
    await expect(a).resolves.toBe('a');
    await expect(b).rejects.toThrow('b');
    await expect(c).resolves.toBe('c');
    expect(log).toEqual(['a start', 'a end', 'b start', 'b end', 'c start', 'c end']);
  });
});

describe('BatchQueue', () => {
  it('runs the items added while a batch is on its way together in the next, one batch at a time', async () => {
    const batches: number[][] = [];
    let release = () => {};
    const first = new Promise<void>((resolve) => {
      release = resolve;
    });
    const queue = new BatchQueue(async (items: readonly number[]) => {
      batches.push([...items]);
      if (batches.length === 1) await first;
      if (items.includes(13)) throw new Error('13');
      return items.length;
    });
    const a = queue.add(1);
    await new Promise((r) => setImmediate(r));
    // The first batch is on its way: these wait for it and go in one.
    const rest = [2, 3, 4].map((i) => queue.add(i));
    release();
    expect(await a).toBe(1);
    expect(await Promise.all(rest)).toEqual([3, 3, 3]);
    // Idle: the next item goes at once; a failed batch fails its items, and the next runs.
    await expect(queue.add(13)).rejects.toThrow('13');
    expect(await queue.add(5)).toBe(1);
    expect(batches).toEqual([[1], [2, 3, 4], [13], [5]]);
  });
});
