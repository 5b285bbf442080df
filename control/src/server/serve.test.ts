import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { afterEach, describe, expect, it } from 'vitest';
import { cleanupAll, startTestControl } from '../testing/harness.js';
import { LISTEN_BACKLOG } from './serve.js';

afterEach(cleanupAll);

describe('the public listener', () => {
  it('queues as many connections as the kernel allows, for every node reconnecting after a restart', async () => {
    const control = await startTestControl();
    const port = new URL(control.control.url).port;
    // For a listening socket, ss shows the accept queue's bound in Send-Q.
    const line = execFileSync('ss', ['-ltnH', `sport = :${port}`], { encoding: 'utf8' }).trim();
    const bound = Number(line.split(/\s+/)[2]);
    const somaxconn = Number(readFileSync('/proc/sys/net/core/somaxconn', 'utf8'));
    expect(bound).toBe(Math.min(LISTEN_BACKLOG, somaxconn));
    expect(bound).toBeGreaterThan(511);
  });
});
