import { describe, expect, it } from 'vitest';
import { cpuSeconds, rssBytes } from './proc.js';

describe('/proc readers', () => {
  it('read this process’s CPU time and resident memory as Node itself counts them', () => {
    const usage = process.cpuUsage();
    const seconds = cpuSeconds(process.pid);
    // /proc counts in ticks of 10 ms, user and system each rounded down.
    expect(seconds).toBeGreaterThan(0);
    expect(Math.abs(seconds - (usage.user + usage.system) / 1e6)).toBeLessThan(0.05);
    const rss = rssBytes(process.pid);
    expect(Math.abs(rss - process.memoryUsage.rss()) / rss).toBeLessThan(0.1);
  });

  it('refuse a process that never started', () => {
    expect(() => cpuSeconds(undefined)).toThrow(/never started/);
    expect(() => rssBytes(undefined)).toThrow(/never started/);
  });
});
