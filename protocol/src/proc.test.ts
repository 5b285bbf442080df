import { spawnSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { cpuSeconds, cpuTimes, rssBytes } from './proc.js';

// /proc counts CPU time in ticks of 10 ms, user and system each rounded down.
const TICKS = 0.05;

describe('/proc readers', () => {
  it('read this process’s CPU time and resident memory as Node itself counts them', () => {
    const usage = process.cpuUsage();
    const seconds = cpuSeconds(process.pid);
    expect(seconds).toBeGreaterThan(0);
    expect(Math.abs(seconds - (usage.user + usage.system) / 1e6)).toBeLessThan(TICKS);
    expect(Math.abs(cpuTimes('self').own - seconds)).toBeLessThan(TICKS);
    const rss = rssBytes(process.pid);
    expect(Math.abs(rss - process.memoryUsage.rss()) / rss).toBeLessThan(0.1);
  });

  it('count the CPU time of a child this process waited for as its children’s, not its own', () => {
    const before = cpuTimes('self');
    // The child spins a little and says what it used.
    const child = spawnSync(
      process.execPath,
      [
        '-e',
        'const t = Date.now(); while (Date.now() - t < 200); const u = process.cpuUsage(); console.log((u.user + u.system) / 1e6)',
      ],
      { encoding: 'utf8' },
    );
    const used = Number(child.stdout);
    expect(used).toBeGreaterThan(0.1);
    const after = cpuTimes('self');
    expect(Math.abs(after.children - before.children - used)).toBeLessThan(TICKS);
    expect(after.own - before.own).toBeLessThan(used);
  });

  it('refuse a process that never started', () => {
    expect(() => cpuSeconds(undefined)).toThrow(/never started/);
    expect(() => rssBytes(undefined)).toThrow(/never started/);
  });
});
