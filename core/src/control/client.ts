import {
  CONTROL_KEY_PATH,
  ControlKeyResponse,
  ErrorBody,
  MACHINE_AUTH_HEADER,
  REGISTER_PATH,
  RegisterRequest,
  RegisterResponse,
  STREAM_PATH,
  signMachineRequest,
} from '@weft/protocol';
import type { z } from 'zod';
import { WeftError } from '../errors.js';
import { describeError } from '../log/logger.js';

// The node's side of control's HTTP API (protocol/src/control-api.ts). Every /machine/ request is
// signed with the machine key over control's own public key, which is fetched first.

const REQUEST_TIMEOUT_MS = 15_000;

export class ControlClient {
  private serverKey: string | null = null;

  constructor(
    readonly baseUrl: string,
    private readonly machinePrivateKey: string,
  ) {}

  /** The URL of a control path, keeping any path prefix of the base URL. */
  url(path: string): URL {
    const base = new URL(this.baseUrl);
    base.pathname = `${base.pathname.replace(/\/+$/, '')}${path}`;
    return base;
  }

  /** Control's public key; fetched again after `forgetServerKey` (control may have been reinstalled). */
  async controlKey(): Promise<string> {
    if (this.serverKey) return this.serverKey;
    const res = await this.fetch(this.url(CONTROL_KEY_PATH), { method: 'GET' });
    const body = await this.readJson(res, ControlKeyResponse, 'GET /machine/key');
    this.serverKey = body.publicKey;
    return body.publicKey;
  }

  forgetServerKey(): void {
    this.serverKey = null;
  }

  /** Headers proving the machine key for one request. */
  async signedHeaders(method: string, path: string, body: string): Promise<Record<string, string>> {
    const controlPublicKey = await this.controlKey();
    const header = signMachineRequest({
      machinePrivateKey: this.machinePrivateKey,
      controlPublicKey,
      method,
      path: this.url(path).pathname,
      body,
    });
    return { [MACHINE_AUTH_HEADER]: header };
  }

  async register(req: RegisterRequest): Promise<RegisterResponse> {
    const body = JSON.stringify(RegisterRequest.parse(req));
    const headers = await this.signedHeaders('POST', REGISTER_PATH, body);
    const res = await this.fetch(this.url(REGISTER_PATH), {
      method: 'POST',
      headers: { ...headers, 'content-type': 'application/json' },
      body,
    });
    if (res.status === 401) this.forgetServerKey();
    return this.readJson(res, RegisterResponse, 'registration');
  }

  /** The WebSocket URL of the netmap stream. */
  streamUrl(): string {
    const url = this.url(STREAM_PATH);
    url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
    return url.toString();
  }

  private async fetch(url: URL, init: RequestInit): Promise<Response> {
    try {
      return await fetch(url, {
        ...init,
        redirect: 'error',
        signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
      });
    } catch (err) {
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

/** Maps a non-2xx answer of control: 4xx is a refusal the user can act on, 5xx control's fault. */
export function controlHttpError(status: number, body: unknown, what: string): WeftError {
  const parsed = ErrorBody.safeParse(body);
  const detail = parsed.success ? parsed.data.error.message : `HTTP ${status}`;
  if (status >= 400 && status < 500)
    return new WeftError('control-rejected', `control refused ${what}: ${detail}`);
  return new WeftError('control-error', `control failed ${what}: ${detail}`);
}
