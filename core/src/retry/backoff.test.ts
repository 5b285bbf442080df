import { describe, expect, it } from 'vitest';
import { Backoff, sleep } from './backoff.js';

describe('back-off', () => {
  it('doubles up to the cap, with jitter in the upper half of each step', () => {
    const low = new Backoff({ baseMs: 100, capMs: 1000, random: () => 0 });
    const high = new Backoff({ baseMs: 100, capMs: 1000, random: () => 0.999999 });
    expect(Array.from({ length: 6 }, () => low.next())).toEqual([50, 100, 200, 400, 500, 500]);
    expect(Array.from({ length: 6 }, () => high.next())).toEqual([100, 200, 400, 800, 1000, 1000]);
  });

  it('spreads delays when random', () => {
    const b = new Backoff({ baseMs: 1000, capMs: 1000 });
    const delays = new Set(Array.from({ length: 50 }, () => b.next()));
    expect(delays.size).toBeGreaterThan(10);
    for (const d of delays) expect(d).toBeGreaterThanOrEqual(500);
  });

  it('after a connection that worked for a while, tries first within the lower half of the first step, then as usual', () => {
    const low = new Backoff({ baseMs: 100, capMs: 1000, random: () => 0 });
    const high = new Backoff({ baseMs: 100, capMs: 1000, random: () => 0.999999 });
    expect([low.next(true), low.next(true), low.next()]).toEqual([0, 100, 200]);
    expect([high.next(true), high.next(true), high.next()]).toEqual([50, 200, 400]);
  });

  it('starts small again after reset', () => {
    const b = new Backoff({ baseMs: 100, capMs: 10_000, random: () => 0 });
    for (let i = 0; i < 10; i++) b.next();
    b.reset();
    expect(b.next()).toBe(50);
  });

  it('does not overflow after many attempts', () => {
    const b = new Backoff({ baseMs: 500, capMs: 15_000, random: () => 0.5 });
    for (let i = 0; i < 5000; i++) b.next();
    expect(b.next()).toBe(11_250);
  });

  it('sleep ends early when aborted', async () => {
    const abort = new AbortController();
    const t = Date.now();
    setTimeout(() => abort.abort(), 10);
    await sleep(10_000, abort.signal);
    expect(Date.now() - t).toBeLessThan(1000);
  });
});
