import { describe, expect, it } from 'vitest';
import { dropDatabase } from './postgres.js';

/** A client whose queries fail with `codes` in turn, then succeed; it records what it was asked. */
function failingClient(codes: string[]) {
  const asked: string[] = [];
  return {
    asked,
    query: async (text: string) => {
      asked.push(text);
      const code = codes.shift();
      if (code !== undefined) throw Object.assign(new Error(`failed with ${code}`), { code });
      return { rows: [] };
    },
  };
}

describe('dropDatabase', () => {
  it('drops again while a backend it may not terminate (an autovacuum worker) is still there', async () => {
    const client = failingClient(['42501', '42501']);
    await dropDatabase(client as never, 'weft_test_x', 1);
    expect(client.asked).toEqual(Array(3).fill('drop database if exists weft_test_x with (force)'));
  });

  it('throws any other error at once', async () => {
    const client = failingClient(['3D000']);
    await expect(dropDatabase(client as never, 'weft_test_x', 1)).rejects.toThrow('failed with 3D000');
    expect(client.asked).toHaveLength(1);
  });

  it('gives up after its bounded tries', async () => {
    const client = failingClient(Array(100).fill('42501'));
    await expect(dropDatabase(client as never, 'weft_test_x', 1)).rejects.toThrow('failed with 42501');
    expect(client.asked).toHaveLength(50);
  });
});
