import {
  CONTROL_KEY_PATH,
  ControlKeyResponse,
  ErrorBody,
  LOGIN_CANCEL_PATH,
  LOGIN_ERROR_CODES,
  LOGIN_WAIT_SECONDS,
  LOGOUT_PATH,
  LoginCancelResponse,
  LogoutResponse,
  MACHINE_AUTH_HEADER,
  REGISTER_PATH,
  RegisterRequest,
  RegisterResponse,
  signMachineRequest,
} from '@weft/protocol';
import type { z } from 'zod';
import { WeftError } from '../errors.js';
import { describeError } from '../log/logger.js';

// The node's side of control's HTTP API (protocol/src/control-api.ts). Every /machine/ request is
// signed with the machine key over control's own public key, which is fetched first.

const REQUEST_TIMEOUT_MS = 15_000;
/** A waiting registration is held by control up to LOGIN_WAIT_SECONDS; allow for a slow answer. */
export const WAIT_TIMEOUT_MS = LOGIN_WAIT_SECONDS * 1000 + 15_000;

/** A control URL as kept and compared: parsed, without trailing slashes. */
export function normalizeControlUrl(url: string): string {
  return new URL(url).toString().replace(/\/+$/, '');
}

export interface RequestOptions {
  /** Aborts the request (the caller stopped waiting); it then rejects with a 'timeout' WeftError. */
  signal?: AbortSignal;
  timeoutMs?: number;
}

/** Checks control's key before it is used (see key-pin.ts); absent in tests of other parts. */
export interface ControlKeyCheck {
  check(controlUrl: string, publicKey: string, acceptNew: boolean): Promise<void>;
}

export interface ControlClientOptions {
  keyCheck?: ControlKeyCheck;
  /** Accept (and pin) a key other than the pinned one: `weft up --accept-new-control-key`. */
  acceptNewControlKey?: boolean;
}

export class ControlClient {
  private serverKey: string | null = null;

  constructor(
    readonly baseUrl: string,
    private readonly machinePrivateKey: string,
    private readonly opts: ControlClientOptions = {},
  ) {}

  /** The URL of a control path (with its query, if any), keeping any path prefix of the base URL. */
  url(path: string): URL {
    const base = new URL(this.baseUrl);
    const [pathname, query] = path.split('?', 2);
    base.pathname = `${base.pathname.replace(/\/+$/, '')}${pathname}`;
    if (query !== undefined) base.search = `?${query}`;
    return base;
  }

  /** Control's public key; fetched again after `forgetServerKey` (control may have been reinstalled). */
  async controlKey(): Promise<string> {
    if (this.serverKey) return this.serverKey;
    const res = await this.fetch(this.url(CONTROL_KEY_PATH), { method: 'GET' });
    const body = await this.readJson(res, ControlKeyResponse, 'GET /machine/key');
    await this.opts.keyCheck?.check(this.baseUrl, body.publicKey, this.opts.acceptNewControlKey === true);
    this.serverKey = body.publicKey;
    return body.publicKey;
  }

  forgetServerKey(): void {
    this.serverKey = null;
  }

  /** Headers proving the machine key for one request. */
  async signedHeaders(method: string, path: string, body: string): Promise<Record<string, string>> {
    const controlPublicKey = await this.controlKey();
    const url = this.url(path);
    const header = signMachineRequest({
      machinePrivateKey: this.machinePrivateKey,
      controlPublicKey,
      method,
      // With its query: the stream's (the map token) is read by control, so signed.
      path: `${url.pathname}${url.search}`,
      body,
    });
    return { [MACHINE_AUTH_HEADER]: header };
  }

  /** A registration; with `wait: true` control holds it, so the timeout defaults to WAIT_TIMEOUT_MS. */
  async register(req: RegisterRequest, opts: RequestOptions = {}): Promise<RegisterResponse> {
    const body = JSON.stringify(RegisterRequest.parse(req));
    const timeoutMs = opts.timeoutMs ?? (req.wait ? WAIT_TIMEOUT_MS : REQUEST_TIMEOUT_MS);
    return this.post(REGISTER_PATH, body, RegisterResponse, 'registration', { ...opts, timeoutMs });
  }

  /** Gives up a pending interactive login: its link stops working. True when one was pending. */
  async cancelLogin(): Promise<boolean> {
    return (await this.post(LOGIN_CANCEL_PATH, '', LoginCancelResponse, 'cancelling the sign-in')).cancelled;
  }

  /** Asks control to expire this node's key now (`weft logout`). True when it was valid until now. */
  async logout(): Promise<boolean> {
    return (await this.post(LOGOUT_PATH, '', LogoutResponse, 'the logout')).loggedOut;
  }

  private async post<T>(
    path: string,
    body: string,
    schema: z.ZodType<T>,
    what: string,
    opts: RequestOptions = {},
  ): Promise<T> {
    const headers = await this.signedHeaders('POST', path, body);
    const res = await this.fetch(
      this.url(path),
      {
        method: 'POST',
        headers: body ? { ...headers, 'content-type': 'application/json' } : headers,
        body,
      },
      opts,
    );
    if (res.status === 401) this.forgetServerKey();
    return this.readJson(res, schema, what);
  }

  /** The WebSocket URL of the netmap stream at `path` (its query naming the map held, if any). */
  streamUrl(path: string): string {
    const url = this.url(path);
    url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
    return url.toString();
  }

  private async fetch(url: URL, init: RequestInit, opts: RequestOptions = {}): Promise<Response> {
    const timeoutMs = opts.timeoutMs ?? REQUEST_TIMEOUT_MS;
    const timeout = AbortSignal.timeout(timeoutMs);
    try {
      return await fetch(url, {
        ...init,
        redirect: 'error',
        signal: opts.signal ? AbortSignal.any([opts.signal, timeout]) : timeout,
      });
    } catch (err) {
      if (opts.signal?.aborted)
        throw new WeftError('timeout', `${init.method ?? 'GET'} ${url.pathname}: aborted`);
      if (timeout.aborted) {
        throw new WeftError(
          'control-unreachable',
          `control at ${this.baseUrl} did not answer within ${Math.round(timeoutMs / 1000)} s`,
        );
      }
      throw new WeftError(
        'control-unreachable',
        `control unreachable at ${this.baseUrl}: ${describeError(err)}`,
      );
    }
  }

  private async readJson<T>(res: Response, schema: z.ZodType<T>, what: string): Promise<T> {
    let value: unknown;
    try {
      value = await res.json();
    } catch {
      value = undefined;
    }
    if (!res.ok) throw controlHttpError(res.status, value, what);
    const parsed = schema.safeParse(value);
    if (!parsed.success) {
      throw new WeftError(
        'control-error',
        `control sent an invalid ${what} answer: ${parsed.error.issues[0]?.message}`,
      );
    }
    return parsed.data;
  }
}

/**
 * A non-2xx answer of control, with its HTTP status and ErrorBody code (`reason`, null without
 * one) so callers can tell, say, an expired key from a stale control key.
 */
export class ControlHttpError extends WeftError {
  constructor(
    code: 'control-rejected' | 'control-error',
    message: string,
    readonly httpStatus: number,
    readonly reason: string | null,
    /** Control's own words (or the HTTP status), without what was being asked. */
    readonly detail: string,
  ) {
    super(code, message);
  }
}

/** Maps a non-2xx answer of control: 4xx is a refusal the user can act on, 5xx control's fault. */
export function controlHttpError(status: number, body: unknown, what: string): ControlHttpError {
  const parsed = ErrorBody.safeParse(body);
  const detail = parsed.success ? parsed.data.error.message : `HTTP ${status}`;
  const reason = parsed.success ? parsed.data.error.code : null;
  if (status >= 400 && status < 500)
    return new ControlHttpError(
      'control-rejected',
      `control refused ${what}: ${detail}`,
      status,
      reason,
      detail,
    );
  return new ControlHttpError('control-error', `control failed ${what}: ${detail}`, status, reason, detail);
}

/** The control error code of `err`, if it is an answer of control. */
export function controlReason(err: unknown): string | null {
  return err instanceof ControlHttpError ? err.reason : null;
}

/** Whether `err` says the pending interactive login is over (expired or cancelled): a new one is needed. */
export function isLoginEnded(err: unknown): boolean {
  return (LOGIN_ERROR_CODES as readonly (string | null)[]).includes(controlReason(err));
}
