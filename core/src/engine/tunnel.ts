import { EventEmitter } from 'node:events';
import type { InterfaceStatus } from '@weft/protocol';
import { WeftError } from '../errors.js';
import type { HelperClient } from '../helper/client.js';
import { type ReconcileResult, Reconciler, type Target } from '../helper/reconciler.js';
import { describeError, type Logger } from '../log/logger.js';

// The tunnel as the helper has it: the reconciler that keeps the OS at the engine's target,
// whether an "up" state has been applied since the tunnel was last wanted up, what went wrong
// last, and the interface's figures as last read.

export interface TunnelOptions {
  helper: HelperClient;
  interfaceName: string;
  log: Logger;
  debounceMs?: number;
  reapplyMs?: number;
}

export class Tunnel extends EventEmitter<{ change: [] }> {
  /** Whether the helper has applied an "up" state since the tunnel was last wanted up. */
  applied = false;
  problem: WeftError | null = null;
  iface: InterfaceStatus | null = null;
  private readonly reconciler: Reconciler;

  constructor(private readonly opts: TunnelOptions) {
    super();
    this.reconciler = new Reconciler(opts.helper, {
      log: opts.log,
      debounceMs: opts.debounceMs,
      reapplyMs: opts.reapplyMs,
    });
    this.reconciler.on('result', (r) => this.onResult(r));
    opts.helper.on('connected', () => this.emit('change'));
    opts.helper.on('disconnected', () => this.emit('change'));
  }

  /** Why the helper cannot do what it should, for health; null when all is well. */
  health(wanted: boolean): string | null {
    if (this.problem) return this.problem.message;
    const { helper } = this.opts;
    return wanted && !helper.connected ? `weft-helper is not reachable at ${helper.socketPath}` : null;
  }

  start(): void {
    this.opts.helper.start();
  }

  set(target: Target): void {
    this.reconciler.set(target);
  }

  /** Whether a target has been set (wanted up without a netmap yet: none). */
  get targeted(): boolean {
    return this.reconciler.current !== null;
  }

  /** Sends the current target again now; resolves once the helper has it. */
  async sync(): Promise<void> {
    const r = await this.reconciler.sync();
    if (!r.ok) throw r.error;
  }

  /** Waits for the helper to have the current target; false if applying it failed. */
  synced(): Promise<boolean> {
    return this.sync().then(
      () => true,
      () => false,
    );
  }

  /** Sets the "down" target and waits for the helper; the reconciler retries if this fails. */
  async down(): Promise<void> {
    this.applied = false;
    this.set({ op: 'down', interface: this.opts.interfaceName });
    this.emit('change');
    const r = await this.reconciler.sync();
    if (!r.ok) {
      throw new WeftError(
        r.error.code,
        `${r.error.message} (the interface is removed once weft-helper answers)`,
      );
    }
  }

  /**
   * Reads the interface's live figures through the helper; null when it is not up. `flush` first
   * sends a change still held back by the debounce, so the figures are of the latest state.
   */
  async readInterface(flush = false): Promise<InterfaceStatus | null> {
    if (this.reconciler.current?.op !== 'apply' || !this.opts.helper.connected) return null;
    if (flush) this.reconciler.flushPending();
    this.iface = await this.opts.helper.status(this.opts.interfaceName);
    return this.iface;
  }

  /** The interface's live figures for a status; a helper that cannot answer leaves the last ones. */
  async readLive(): Promise<void> {
    try {
      await this.readInterface(true);
    } catch (err) {
      this.opts.log.debug(`helper status: ${describeError(err)}`);
    }
  }

  /** Stops reconciling and takes the interface down if the helper is there. */
  async close(): Promise<void> {
    const { helper, interfaceName, log } = this.opts;
    this.reconciler.stop();
    if (helper.connected) {
      try {
        await helper.down(interfaceName);
      } catch (err) {
        log.warn(`helper down on shutdown: ${describeError(err)}`);
      }
    }
    await helper.close();
  }

  private onResult(r: ReconcileResult): void {
    if (r.ok) {
      this.problem = null;
      if (r.status) this.iface = r.status;
      if (r.target.op === 'apply' && !this.applied) {
        this.applied = true;
        this.opts.log.info(`tunnel ${r.target.state.interface.name} is up`);
      }
    } else {
      this.problem = r.error;
    }
    this.emit('change');
  }
}
