import { EventEmitter } from 'node:events';
import type { DesiredState, InterfaceStatus } from '@weft/protocol';
import { WeftError } from '../errors.js';
import { describeError, type Logger } from '../log/logger.js';
import { type HelperClient, HelperRequestError } from './client.js';

// Keeps the OS converged to one target through the helper. The target is declarative (the whole
// state, or "down"), so every send is safe to repeat: changes are sent after a short debounce
// (a burst of deltas becomes one apply), an "up" target is re-applied periodically (repairing
// anything changed behind our back), and any target is sent again when the helper reconnects
// (a restarted helper starts from nothing).

export type Target = { op: 'apply'; state: DesiredState } | { op: 'down'; interface: string };

export type ReconcileResult =
  /** `status`: the interface as the helper reported it after an apply. */
  { target: Target; ok: true; status?: InterfaceStatus } | { target: Target; ok: false; error: WeftError };

export interface ReconcilerEvents {
  result: [ReconcileResult];
}

export interface ReconcilerOptions {
  debounceMs?: number;
  reapplyMs?: number;
  log: Logger;
}

export class Reconciler extends EventEmitter<ReconcilerEvents> {
  private target: Target | null = null;
  /** Bumped on every new target; a run settles the waiters of the version it sent. */
  private version = 0;
  private last: ReconcileResult | null = null;
  private timer: NodeJS.Timeout | null = null;
  private running = false;
  private again = false;
  private waiters: Array<{ version: number; resolve: (r: ReconcileResult) => void }> = [];
  private readonly periodic: NodeJS.Timeout;
  private readonly onConnected = () => this.schedule(0);

  constructor(
    private readonly helper: HelperClient,
    private readonly opts: ReconcilerOptions,
  ) {
    super();
    helper.on('connected', this.onConnected);
    this.periodic = setInterval(() => {
      if (this.target?.op === 'apply' || this.last?.ok === false) this.schedule(0);
    }, opts.reapplyMs ?? 30_000);
    this.periodic.unref();
  }

  get current(): Target | null {
    return this.target;
  }

  /** Sets the target; sent after the debounce unless it equals what the helper already has. */
  set(target: Target): void {
    const same = this.target !== null && JSON.stringify(this.target) === JSON.stringify(target);
    if (same) return;
    this.target = target;
    this.version++;
    this.schedule(this.opts.debounceMs ?? 50);
  }

  /** Sends the current target now and resolves with the result of that send. */
  sync(): Promise<ReconcileResult> {
    const version = this.version;
    const done = new Promise<ReconcileResult>((resolve) => this.waiters.push({ version, resolve }));
    this.schedule(0);
    return done;
  }

  /**
   * Sends a change still waiting out its debounce now. A helper request made right after queues
   * behind it, so a status read then describes the OS with the change applied.
   */
  flushPending(): void {
    if (!this.timer) return;
    clearTimeout(this.timer);
    this.timer = null;
    void this.run();
  }

  stop(): void {
    clearInterval(this.periodic);
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    this.helper.off('connected', this.onConnected);
  }

  private schedule(delayMs: number): void {
    if (!this.target) return;
    if (this.timer) {
      if (delayMs > 0) return;
      clearTimeout(this.timer);
    }
    this.timer = setTimeout(() => {
      this.timer = null;
      void this.run();
    }, delayMs);
  }

  private async run(): Promise<void> {
    if (this.running) {
      this.again = true;
      return;
    }
    const target = this.target;
    if (!target) return;
    this.running = true;
    const version = this.version;
    let result: ReconcileResult;
    try {
      if (target.op === 'apply') result = { target, ok: true, status: await this.helper.apply(target.state) };
      else {
        await this.downTolerant(target.interface);
        result = { target, ok: true };
      }
    } catch (err) {
      const error = err instanceof WeftError ? err : new WeftError('helper-error', describeError(err));
      result = { target, ok: false, error };
      // A helper that stays away fails every periodic retry; say so once per distinct failure.
      if (this.last?.ok !== false || this.last.error.message !== error.message) {
        this.opts.log.warn(`helper ${target.op} failed: ${error.message}`);
      }
    }
    this.last = result;
    this.running = false;
    const settled = this.waiters.filter((w) => w.version <= version);
    this.waiters = this.waiters.filter((w) => w.version > version);
    // Only results for the newest target matter to listeners; older ones are superseded.
    if (version === this.version) this.emit('result', result);
    for (const w of settled) w.resolve(result);
    if (this.again || version !== this.version) {
      this.again = false;
      this.schedule(0);
    }
  }

  /** "Down" is reached when the interface is gone, whether we removed it or it never existed. */
  private async downTolerant(iface: string): Promise<void> {
    try {
      await this.helper.down(iface);
    } catch (err) {
      if (err instanceof HelperRequestError && err.helperCode === 'not-found') return;
      throw err;
    }
  }
}
