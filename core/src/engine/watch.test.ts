import type { PeerStatus, Status, WatchEvent } from '@weft/protocol';
import { describe, expect, it } from 'vitest';
import { StatusWatch } from './watch.js';

const peer = (extra: Partial<PeerStatus> = {}): PeerStatus => ({
  id: 'p1',
  name: 'nas',
  user: null,
  tags: [],
  os: 'linux',
  addresses: ['100.64.0.2'],
  online: true,
  lastSeen: null,
  endpoint: '198.18.0.2:41641',
  lastHandshake: null,
  rxBytes: 0,
  txBytes: 0,
  ...extra,
});
const status = (p: PeerStatus): Status => ({
  backendState: 'Running',
  controlUrl: 'http://198.18.0.1',
  authUrl: null,
  self: null,
  peers: [p],
  health: [],
});
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('StatusWatch', () => {
  it('while watched, polls and sends handshake and path changes, not byte counters; stops polling when nobody watches', async () => {
    let current = status(peer());
    let computed = 0;
    const watch = new StatusWatch(
      async () => {
        computed++;
        return current;
      },
      5,
      20,
    );
    /** Resolves once the status has been computed `n` more times (polls, not the clock, decide). */
    const cycles = async (n: number) => {
      const target = computed + n;
      await expect.poll(() => computed >= target, { timeout: 5_000, interval: 5 }).toBe(true);
    };
    const events: WatchEvent[] = [];
    const stop = watch.add((e) => events.push(e));
    await expect.poll(() => events.length).toBe(1);
    expect(events[0]?.initial).toBe(true);

    current = status(peer({ rxBytes: 100, txBytes: 200 }));
    await cycles(3);
    expect(events).toHaveLength(1); // bytes alone are no change

    current = status(peer({ lastHandshake: '2026-11-25T12:00:00.000Z', rxBytes: 300 }));
    await expect.poll(() => events.length).toBe(2);
    expect(events[1]).toMatchObject({ initial: false, status: { peers: [{ rxBytes: 300 }] } });

    current = status(peer({ lastHandshake: '2026-11-25T12:00:00.000Z', rxBytes: 300, path: 'relay' }));
    await expect.poll(() => events.length).toBe(3);
    expect(events.map((e) => e.status.peers[0]?.path)).toEqual([undefined, undefined, 'relay']);
    await cycles(2);
    expect(events).toHaveLength(3);

    stop();
    await sleep(30); // a cycle already under way may finish
    const after = computed;
    await sleep(100);
    expect(computed).toBe(after);
    watch.close();
  });
});
