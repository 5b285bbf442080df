import { describe, expect, it } from 'vitest';
import { streamHandshakeTimeoutMs } from './control-api.js';

describe('streamHandshakeTimeoutMs', () => {
  it('doubles from 15 s with each timeout in a row up to 2 minutes, plus up to a quarter at random', () => {
    const least = [0, 1, 2, 3, 4, 10].map((n) => streamHandshakeTimeoutMs(n, () => 0));
    expect(least).toEqual([15_000, 30_000, 60_000, 120_000, 120_000, 120_000]);
    expect(streamHandshakeTimeoutMs(0, () => 0.999_999)).toBe(18_750);
    expect(streamHandshakeTimeoutMs(5, () => 0.5)).toBe(135_000);
  });
});
