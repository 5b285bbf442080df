import { FakeClock, flush } from '@weft/core/bridge/testing';
import type { HelperState } from '@weft/protocol';
import { describe, expect, it } from 'vitest';
import {
  backoffDelay,
  type DEFAULT_SUPERVISOR_OPTIONS,
  type HelperHandle,
  HelperSupervisor,
} from './supervisor.js';

/** A fake helper process the test can kill, with a health flag. */
class FakeHelper {
  starts = 0;
  reapplies = 0;
  healthy = true;
  failStart: Error | null = null;
  private exit: ((v: { code: number | null; signal: string | null }) => void) | null = null;
  stops = 0;

  start = async (): Promise<HelperHandle> => {
    this.starts++;
    if (this.failStart) throw this.failStart;
    return {
      exited: new Promise((r) => {
        this.exit = r;
      }),
      stop: async () => {
        this.stops++;
        this.exit?.({ code: null, signal: 'SIGTERM' });
      },
    };
  };
  healthCheck = async () => this.healthy;
  reapplyError: Error | null = null;
  reapply = async () => {
    this.reapplies++;
    if (this.reapplyError) throw this.reapplyError;
  };
  crash(code = 1) {
    this.exit?.({ code, signal: null });
  }
}

function setup(opts: Partial<typeof DEFAULT_SUPERVISOR_OPTIONS> = {}) {
  const clock = new FakeClock();
  const helper = new FakeHelper();
  const states: HelperState[] = [];
  const sup = new HelperSupervisor(
    {
      start: helper.start,
      healthCheck: helper.healthCheck,
      reapply: helper.reapply,
      onState: (s) => states.push(s),
      clock,
    },
    { initialBackoffMs: 100, maxBackoffMs: 1600, failuresBeforeError: 4, healthIntervalMs: 1000, ...opts },
  );
  return { clock, helper, states, sup };
}

describe('backoffDelay', () => {
  it('doubles from the initial delay and caps at the maximum', () => {
    const o = { initialBackoffMs: 500, maxBackoffMs: 30_000, factor: 2 };
    expect([1, 2, 3, 4, 5, 6, 7, 8].map((n) => backoffDelay(n, o))).toEqual([
      500, 1000, 2000, 4000, 8000, 16000, 30000, 30000,
    ]);
    expect(backoffDelay(0, o)).toBe(500);
  });
});

describe('HelperSupervisor', () => {
  it('starts the helper, waits for health, re-applies the desired state, then runs', async () => {
    const { helper, states, sup } = setup();
    sup.start();
    await flush();
    expect(helper.starts).toBe(1);
    expect(helper.reapplies).toBe(1);
    expect(states.map((s) => s.phase)).toEqual(['starting', 'running']);
    expect(sup.current).toMatchObject({ phase: 'running', restarts: 0, message: null });
  });

  it('restarts a crashed helper with exponential back-off and re-applies each time', async () => {
    const { clock, helper, sup } = setup();
    sup.start();
    await flush();
    const delays: number[] = [];
    for (let i = 0; i < 3; i++) {
      helper.healthy = false; // it will not come back healthy: each start fails its start-up probe…
      helper.crash(1);
      await flush();
      expect(sup.current.phase).toBe('restarting');
      expect(sup.current.message).toBe('The network helper exited with code 1');
      delays.push(clock.pending[0] ?? -1);
      helper.healthy = true; // …until now
      await clock.advance(delays[i] ?? 0);
    }
    // each crash after a short healthy run counts toward the back-off
    expect(delays).toEqual([100, 200, 400]);
    expect(helper.starts).toBe(4);
    expect(helper.reapplies).toBe(4);
    expect(sup.current.phase).toBe('running');
    expect(sup.current.restarts).toBe(3);
  });

  it('resets the back-off after the helper has run stably', async () => {
    const { clock, helper, sup } = setup({ stableAfterMs: 5000 });
    sup.start();
    await flush();
    helper.crash();
    await flush();
    expect(clock.pending[0]).toBe(100);
    await clock.advance(100);
    helper.crash();
    await flush();
    expect(clock.pending[0]).toBe(200);
    await clock.advance(200);
    await clock.advance(6000); // health ticks while stable
    helper.crash();
    await flush();
    expect(clock.pending[0]).toBe(100);
  });

  it('a helper that stops answering health checks is restarted', async () => {
    const { clock, helper, sup } = setup({ healthFailuresToRestart: 2 });
    sup.start();
    await flush();
    helper.healthy = false;
    await clock.advance(1000);
    expect(sup.current.phase).toBe('running'); // one missed probe is tolerated
    await clock.advance(1000);
    expect(helper.stops).toBe(1);
    expect(sup.current).toMatchObject({
      phase: 'restarting',
      message: 'The network helper stopped answering health checks',
    });
    helper.healthy = true;
    await clock.advance(100);
    expect(helper.starts).toBe(2);
    expect(sup.current.phase).toBe('running');
  });

  it('a helper that never becomes healthy is killed after the start-up timeout', async () => {
    const { clock, helper, sup } = setup({ startupTimeoutMs: 1000, startupProbeMs: 250 });
    helper.healthy = false;
    sup.start();
    await clock.advance(999);
    expect(sup.current.phase).toBe('starting');
    await clock.advance(1);
    expect(helper.stops).toBe(1);
    expect(sup.current.message).toBe('The network helper did not answer within the start-up time');
  });

  it('enters the error state after repeated failures, keeps retrying at the capped delay, and recovers', async () => {
    const { clock, helper, sup } = setup();
    helper.failStart = new Error('pkexec: not authorized');
    sup.start();
    await flush();
    const seen: string[] = [];
    for (let i = 0; i < 6; i++) {
      seen.push(`${sup.current.phase}@${clock.pending[0]}`);
      await clock.advance(clock.pending[0] ?? 0);
    }
    expect(seen).toEqual([
      'restarting@100',
      'restarting@200',
      'restarting@400',
      'failed@800',
      'failed@1600',
      'failed@1600',
    ]);
    expect(sup.current.message).toBe('The network helper could not start: pkexec: not authorized');
    expect(sup.current.nextAttemptAt).not.toBeNull();
    helper.failStart = null;
    await clock.advance(1600);
    expect(sup.current).toMatchObject({ phase: 'running', message: null, nextAttemptAt: null });
  });

  it('retryNow skips the wait; stop() stops the helper and all timers', async () => {
    const { clock, helper, sup } = setup();
    helper.failStart = new Error('nope');
    sup.start();
    await flush();
    expect(helper.starts).toBe(1);
    helper.failStart = null;
    sup.retryNow();
    await flush();
    expect(helper.starts).toBe(2);
    expect(sup.current.phase).toBe('running');
    await sup.stop();
    expect(helper.stops).toBe(1);
    expect(clock.pending).toEqual([]);
    await clock.advance(60_000);
    expect(helper.starts).toBe(2);
  });

  it('a re-apply failure is reported but the helper stays running', async () => {
    const { helper, sup } = setup();
    helper.reapplyError = new Error('engine busy');
    sup.start();
    await flush();
    expect(sup.current).toMatchObject({
      phase: 'running',
      message: 'could not re-apply the network settings: engine busy',
    });
  });
});
