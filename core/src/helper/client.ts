import { EventEmitter } from 'node:events';
import { connect, type Socket } from 'node:net';
import {
  type DesiredState,
  HELPER_MAX_MESSAGE_BYTES,
  type HelperRequest,
  HelperResponse,
  type InterfaceStatus,
} from '@weft/protocol';
import { WeftError } from '../errors.js';
import { describeError, type Logger } from '../log/logger.js';
import { Backoff, type BackoffOptions, sleep } from '../retry/backoff.js';
import { checkSocketOwner } from '../socket-owner.js';

// Client of the privileged helper: newline-delimited JSON over its unix socket. One request is in
// flight at a time, so a reply is always unambiguous (even an error the helper could not tie to
// an id) and the helper never has to reconcile two states at once. The connection is kept open
// and re-established with back-off; listeners of 'connected' re-apply state, which is how a
// restarted helper gets repaired.

export interface HelperClientEvents {
  connected: [];
  disconnected: [];
}

export interface HelperClientOptions {
  log: Logger;
  backoff?: BackoffOptions;
  timeoutsMs?: Partial<Record<HelperRequest['op'], number>>;
}

/** A request without its id (the client numbers requests itself). */
type HelperOp = HelperRequest extends infer R ? (R extends unknown ? Omit<R, 'id'> : never) : never;

interface Pending {
  op: HelperOp;
  timeoutMs: number;
  resolve: (status: InterfaceStatus) => void;
  reject: (err: WeftError) => void;
}

/** The helper answered with an error (as opposed to not answering at all). */
export class HelperRequestError extends WeftError {
  constructor(
    readonly helperCode: string,
    message: string,
  ) {
    super('helper-error', `weft-helper: ${message}`);
  }
}

/** An apply may start wireguard-go and run many `ip` commands; a status is a quick read. */
const DEFAULT_TIMEOUTS_MS: Record<HelperRequest['op'], number> = {
  apply: 60_000,
  down: 30_000,
  status: 5_000,
};

export class HelperClient extends EventEmitter<HelperClientEvents> {
  private socket: Socket | null = null;
  private connectedNow = false;
  private readonly backoff: Backoff;
  private readonly abort = new AbortController();
  private queue: Pending[] = [];
  private inFlight: { id: number; pending: Pending; timer: NodeJS.Timeout } | null = null;
  private nextId = 1;
  private buffer = '';
  private loop: Promise<void> | null = null;

  constructor(
    readonly socketPath: string,
    private readonly opts: HelperClientOptions,
  ) {
    super();
    this.backoff = new Backoff({ baseMs: 200, capMs: 5_000, ...opts.backoff });
  }

  get connected(): boolean {
    return this.connectedNow;
  }

  start(): void {
    this.loop ??= this.run();
  }

  async close(): Promise<void> {
    this.abort.abort();
    this.socket?.destroy();
    await this.loop;
    this.failAll(new WeftError('helper-unavailable', 'helper client closed'));
  }

  apply(state: DesiredState): Promise<InterfaceStatus> {
    return this.request({ op: 'apply', state });
  }

  status(iface: string): Promise<InterfaceStatus> {
    return this.request({ op: 'status', interface: iface });
  }

  down(iface: string): Promise<InterfaceStatus> {
    return this.request({ op: 'down', interface: iface });
  }

  /** Sends a request, failing at once when the helper is not connected (callers retry on 'connected'). */
  private request(op: HelperOp): Promise<InterfaceStatus> {
    const timeoutMs = this.opts.timeoutsMs?.[op.op] ?? DEFAULT_TIMEOUTS_MS[op.op];
    if (!this.connectedNow) {
      return Promise.reject(
        new WeftError('helper-unavailable', `weft-helper is not reachable at ${this.socketPath}`),
      );
    }
    return new Promise((resolve, reject) => {
      this.queue.push({ op, timeoutMs, resolve, reject });
      this.pump();
    });
  }

  private pump(): void {
    if (this.inFlight || !this.socket || !this.connectedNow) return;
    const pending = this.queue.shift();
    if (!pending) return;
    const id = this.nextId++;
    const timer = setTimeout(() => {
      // The helper may still finish the work; a late reply is dropped because its id is stale.
      this.finish(id, (p) =>
        p.reject(
          new WeftError('helper-error', `weft-helper did not answer '${p.op.op}' within ${p.timeoutMs} ms`),
        ),
      );
    }, pending.timeoutMs);
    this.inFlight = { id, pending, timer };
    this.socket.write(`${JSON.stringify({ id, ...pending.op })}\n`);
  }

  private finish(id: number | null, settle: (p: Pending) => void): void {
    const current = this.inFlight;
    if (!current || (id !== null && id !== current.id)) return;
    clearTimeout(current.timer);
    this.inFlight = null;
    settle(current.pending);
    this.pump();
  }

  private onLine(line: string): void {
    let parsed: ReturnType<typeof HelperResponse.safeParse>;
    try {
      parsed = HelperResponse.safeParse(JSON.parse(line));
    } catch {
      this.opts.log.warn('weft-helper sent a line that is not JSON; dropping the connection');
      this.socket?.destroy();
      return;
    }
    if (!parsed.success) {
      this.opts.log.warn(`weft-helper sent an invalid response: ${parsed.error.issues[0]?.message}`);
      this.socket?.destroy();
      return;
    }
    const res = parsed.data;
    if (res.ok) {
      this.finish(res.id, (p) => p.resolve(res.status));
    } else {
      const err = new HelperRequestError(res.error.code, `${res.error.code}: ${res.error.message}`);
      this.finish(res.id, (p) => p.reject(err));
    }
  }

  private failAll(err: WeftError): void {
    if (this.inFlight) {
      clearTimeout(this.inFlight.timer);
      this.inFlight.pending.reject(err);
      this.inFlight = null;
    }
    for (const p of this.queue.splice(0)) p.reject(err);
  }

  private async run(): Promise<void> {
    const signal = this.abort.signal;
    let lastError = '';
    while (!signal.aborted) {
      try {
        await this.connectOnce();
        lastError = '';
      } catch (err) {
        const msg = describeError(err);
        // Logged once per distinct failure, not on every retry of a helper that is not there.
        if (msg !== lastError) this.opts.log.warn(`weft-helper at ${this.socketPath}: ${msg}`);
        lastError = msg;
      }
      if (signal.aborted) break;
      await sleep(this.backoff.next(), signal);
    }
  }

  /** Connects and resolves when the connection ends; rejects if it could not connect. */
  private async connectOnce(): Promise<void> {
    // The helper gets private keys: only from a socket root (or, in development, we) bound.
    await checkSocketOwner(this.socketPath);
    return new Promise((resolve, reject) => {
      const socket = connect(this.socketPath);
      socket.setEncoding('utf8');
      this.buffer = '';
      socket.once('connect', () => {
        this.socket = socket;
        this.connectedNow = true;
        this.backoff.reset();
        this.opts.log.info(`connected to weft-helper at ${this.socketPath}`);
        this.emit('connected');
        this.pump();
      });
      socket.on('data', (chunk: string) => {
        this.buffer += chunk;
        let nl = this.buffer.indexOf('\n');
        while (nl >= 0) {
          const line = this.buffer.slice(0, nl);
          this.buffer = this.buffer.slice(nl + 1);
          if (line.trim() !== '') this.onLine(line);
          nl = this.buffer.indexOf('\n');
        }
        if (this.buffer.length > HELPER_MAX_MESSAGE_BYTES) {
          this.opts.log.warn('weft-helper sent an oversized line; dropping the connection');
          socket.destroy();
        }
      });
      socket.on('error', (err) => {
        if (!this.connectedNow) reject(err);
      });
      socket.on('close', () => {
        const wasConnected = this.socket === socket;
        this.socket = null;
        this.connectedNow = false;
        if (wasConnected) {
          this.failAll(new WeftError('helper-unavailable', 'connection to weft-helper lost'));
          if (!this.abort.signal.aborted)
            this.opts.log.warn(`lost connection to weft-helper at ${this.socketPath}`);
          this.emit('disconnected');
          resolve();
        } else {
          reject(new Error('connection closed'));
        }
      });
    });
  }
}
