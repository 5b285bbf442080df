import { EventEmitter } from 'node:events';
import type { NodeView, RegisterRequest } from '@weft/protocol';
import { WeftError } from '../errors.js';
import { describeError, type Logger } from '../log/logger.js';
import { Backoff, type BackoffOptions, sleep } from '../retry/backoff.js';
import { type ControlClient, ControlHttpError, isLoginEnded } from './client.js';

// Waiting for a person to finish an interactive login in their browser. After control answered the
// first registration with `needs-auth`, the node sends the same signed registration with
// `wait: true`; control holds it until the sign-in completes (`authorized`), the link ends (410
// login-expired / login-cancelled), or about a minute passes (`needs-auth` again: ask again).
// Network trouble is retried with back-off; any other refusal ends the wait.

export interface PendingLogin {
  authUrl: string;
  /** When the link stops working, if control said. */
  expiresAt: string | null;
}

export interface LoginWaitEvents {
  /** Control answered with a (possibly new) link. */
  url: [PendingLogin];
  /** Control could not be asked (it is retried); null once it answers again. */
  problem: [WeftError | null];
}

export interface LoginWaitOptions {
  log: Logger;
  backoff?: BackoffOptions;
}

/** Statuses of a refusal worth asking again: a stale control key, a timeout, a rate limit. */
const RETRYABLE_REFUSALS = new Set([401, 408, 429]);

export class LoginWait extends EventEmitter<LoginWaitEvents> {
  private readonly abort = new AbortController();
  private readonly backoff: Backoff;

  constructor(
    readonly client: ControlClient,
    readonly request: RegisterRequest,
    private readonly opts: LoginWaitOptions,
  ) {
    super();
    this.backoff = new Backoff({ baseMs: 500, capMs: 15_000, ...opts.backoff });
  }

  get stopped(): boolean {
    return this.abort.signal.aborted;
  }

  /**
   * Resolves with this node's view once a person has signed in, or null once stopped; rejects with
   * the WeftError that ended the login (the link expired or was cancelled, control refused).
   */
  async run(): Promise<NodeView | null> {
    const signal = this.abort.signal;
    let problem = false;
    while (!signal.aborted) {
      try {
        const res = await this.client.register({ ...this.request, wait: true }, { signal });
        if (signal.aborted) break;
        this.backoff.reset();
        if (problem) this.emit('problem', null);
        problem = false;
        if (res.status === 'authorized') return res.node;
        this.emit('url', { authUrl: res.authUrl, expiresAt: res.expiresAt ?? null });
      } catch (err) {
        if (signal.aborted) break;
        if (isLoginEnded(err)) throw err;
        if (
          err instanceof ControlHttpError &&
          err.httpStatus < 500 &&
          !RETRYABLE_REFUSALS.has(err.httpStatus)
        )
          throw err;
        const e =
          err instanceof WeftError
            ? err
            : new WeftError('control-unreachable', `waiting for the sign-in: ${describeError(err)}`);
        this.opts.log.warn(`waiting for the sign-in: ${e.message}`);
        problem = true;
        this.emit('problem', e);
        await sleep(this.backoff.next(), signal);
      }
    }
    return null;
  }

  /** Stops waiting here; the link stays valid at control until it is cancelled there. */
  stop(): void {
    this.abort.abort();
  }
}
