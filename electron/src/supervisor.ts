import { type Clock, systemClock } from '@weft/core/bridge';
import type { HelperState } from '@weft/protocol';

// Supervises the privileged helper: starts it, checks its health, restarts it with exponential
// back-off when it dies or stops answering, re-applies the desired state after every (re)start,
// and reports a plain-words error state when it cannot run. Every effect is injected.

/** A started helper. For an installed service we did not start, `exited` never settles. */
export interface HelperHandle {
  exited: Promise<{ code: number | null; signal: string | null }>;
  stop(): Promise<void>;
}

export interface SupervisorDeps {
  /** Starts the helper (a privileged child in development; a no-op handle for the service). */
  start(): Promise<HelperHandle>;
  /** One health probe (the helper answers a status request); must time out by itself. */
  healthCheck(): Promise<boolean>;
  /** Sends the complete desired state again (the engine re-applies through the helper). */
  reapply(): Promise<void>;
  onState(state: HelperState): void;
  clock?: Clock;
}

export interface SupervisorOptions {
  initialBackoffMs: number;
  maxBackoffMs: number;
  factor: number;
  /** Consecutive failed (re)starts after which the state says "failed" (it keeps retrying). */
  failuresBeforeError: number;
  healthIntervalMs: number;
  /** Consecutive failed probes of a running helper that count as it being dead. */
  healthFailuresToRestart: number;
  /** How long a fresh helper has to answer its first probe. */
  startupTimeoutMs: number;
  startupProbeMs: number;
  /** Running healthily this long resets the back-off. */
  stableAfterMs: number;
}

export const DEFAULT_SUPERVISOR_OPTIONS: SupervisorOptions = {
  initialBackoffMs: 500,
  maxBackoffMs: 30_000,
  factor: 2,
  failuresBeforeError: 5,
  healthIntervalMs: 5_000,
  healthFailuresToRestart: 2,
  startupTimeoutMs: 10_000,
  startupProbeMs: 250,
  stableAfterMs: 60_000,
};

/** The wait before restart number `failures` (1-based): initial·factor^(n-1), capped. */
export function backoffDelay(
  failures: number,
  o: Pick<SupervisorOptions, 'initialBackoffMs' | 'maxBackoffMs' | 'factor'>,
): number {
  const n = Math.max(1, failures);
  return Math.min(o.maxBackoffMs, Math.round(o.initialBackoffMs * o.factor ** (n - 1)));
}

export class HelperSupervisor {
  private readonly clock: Clock;
  private readonly o: SupervisorOptions;
  private state: HelperState = { phase: 'starting', restarts: 0, message: null, nextAttemptAt: null };
  private handle: HelperHandle | null = null;
  private timer: unknown = null;
  private failures = 0;
  private healthFailures = 0;
  private runningSince: number | null = null;
  private generation = 0;
  private stopped = true;

  constructor(
    private readonly deps: SupervisorDeps,
    options: Partial<SupervisorOptions> = {},
  ) {
    this.clock = deps.clock ?? systemClock;
    this.o = { ...DEFAULT_SUPERVISOR_OPTIONS, ...options };
  }

  get current(): HelperState {
    return this.state;
  }

  start(): void {
    if (!this.stopped) return;
    this.stopped = false;
    this.failures = 0;
    void this.launch();
  }

  /** Retries at once (the error state's "Try again"). */
  retryNow(): void {
    if (this.stopped || this.state.phase === 'running') return;
    this.clearTimer();
    void this.launch();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.generation++;
    this.clearTimer();
    const h = this.handle;
    this.handle = null;
    await h?.stop();
  }

  private set(patch: Partial<HelperState>): void {
    this.state = { ...this.state, ...patch };
    this.deps.onState(this.state);
  }

  private clearTimer(): void {
    if (this.timer !== null) this.clock.clearTimeout(this.timer);
    this.timer = null;
  }

  private schedule(ms: number, fn: () => void): void {
    this.clearTimer();
    this.timer = this.clock.setTimeout(() => {
      this.timer = null;
      fn();
    }, ms);
  }

  private async launch(): Promise<void> {
    const gen = ++this.generation;
    if (this.state.phase !== 'restarting' && this.state.phase !== 'failed')
      this.set({ phase: 'starting', nextAttemptAt: null });
    let handle: HelperHandle;
    try {
      handle = await this.deps.start();
    } catch (e) {
      if (gen === this.generation) this.fail(`could not start: ${(e as Error).message}`);
      return;
    }
    if (gen !== this.generation) {
      await handle.stop();
      return;
    }
    this.handle = handle;
    handle.exited.then(({ code, signal }) => {
      if (gen !== this.generation || this.stopped) return;
      this.handle = null;
      this.fail(`exited ${signal ? `on ${signal}` : `with code ${code}`}`);
    });
    const deadline = this.clock.now() + this.o.startupTimeoutMs;
    const probe = async () => {
      if (gen !== this.generation) return;
      const ok = await this.deps.healthCheck().catch(() => false);
      if (gen !== this.generation) return;
      if (ok) return this.becameHealthy(gen);
      if (this.clock.now() >= deadline) {
        await this.kill();
        return this.fail('did not answer within the start-up time');
      }
      this.schedule(this.o.startupProbeMs, () => void probe());
    };
    await probe();
  }

  private async becameHealthy(gen: number): Promise<void> {
    this.healthFailures = 0;
    this.runningSince = this.clock.now();
    this.set({ phase: 'running', message: null, nextAttemptAt: null });
    try {
      await this.deps.reapply();
    } catch (e) {
      if (gen === this.generation)
        this.set({ message: `could not re-apply the network settings: ${(e as Error).message}` });
    }
    if (gen === this.generation) this.schedule(this.o.healthIntervalMs, () => void this.healthTick(gen));
  }

  private async healthTick(gen: number): Promise<void> {
    const ok = await this.deps.healthCheck().catch(() => false);
    if (gen !== this.generation || this.stopped) return;
    if (ok) {
      this.healthFailures = 0;
      if (this.runningSince !== null && this.clock.now() - this.runningSince >= this.o.stableAfterMs)
        this.failures = 0;
    } else if (++this.healthFailures >= this.o.healthFailuresToRestart) {
      await this.kill();
      return this.fail('stopped answering health checks');
    }
    this.schedule(this.o.healthIntervalMs, () => void this.healthTick(gen));
  }

  private async kill(): Promise<void> {
    this.generation++;
    const h = this.handle;
    this.handle = null;
    await h?.stop().catch(() => {});
  }

  private fail(message: string): void {
    if (this.stopped) return;
    this.generation++;
    this.runningSince = null;
    this.failures++;
    const delay = backoffDelay(this.failures, this.o);
    const at = new Date(this.clock.now() + delay).toISOString();
    this.set({
      phase: this.failures >= this.o.failuresBeforeError ? 'failed' : 'restarting',
      restarts: this.state.restarts + 1,
      message: `The network helper ${message}`,
      nextAttemptAt: at,
    });
    this.schedule(delay, () => void this.launch());
  }
}
