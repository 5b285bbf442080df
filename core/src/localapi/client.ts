import { request } from 'node:http';
import {
  type DnsQueryRequest,
  DnsQueryResult,
  DnsStatus,
  ErrorBody,
  ExitNodeList,
  LOCALAPI_PREFIX,
  NetcheckReport,
  type PrefsPatch,
  parseJsonAs,
  Status,
  type UpRequest,
  WatchEvent,
} from '@weft/protocol';
import type { z } from 'zod';
import { checkSocketOwner } from '../socket-owner.js';

// Client of the LocalAPI for the CLI, the desktop app and the web shell (core/src/bridge): talks
// HTTP over the daemon's unix socket and validates every answer with the protocol's schemas.

export interface LocalApiClientOptions {
  /** Gives up on an answer after this long (0: never). `up` and `watch` never time out. */
  timeoutMs?: number;
}

/** Answers and watch lines larger than this are refused (a status with thousands of peers fits). */
const MAX_ANSWER_BYTES = 8 * 1024 * 1024;

export class LocalApiError extends Error {
  constructor(
    readonly code: string,
    message: string,
    readonly httpStatus: number | null = null,
  ) {
    super(message);
    this.name = 'LocalApiError';
  }
}

export class LocalApiClient {
  private readonly timeoutMs: number;

  constructor(
    readonly socketPath: string,
    opts: LocalApiClientOptions = {},
  ) {
    this.timeoutMs = opts.timeoutMs ?? 0;
  }

  status(): Promise<Status> {
    return this.call('GET', '/status', undefined, Status);
  }

  /** Answers once Running or once an interactive login is pending (status.authUrl); never times out. */
  up(req: UpRequest, signal?: AbortSignal): Promise<Status> {
    return this.call('POST', '/up', req, Status, signal, 0);
  }

  down(): Promise<Status> {
    return this.call('POST', '/down', {}, Status);
  }

  logout(): Promise<Status> {
    return this.call('POST', '/logout', {}, Status);
  }

  netcheck(): Promise<NetcheckReport> {
    return this.call('GET', '/netcheck', undefined, NetcheckReport);
  }

  /** Gives up a pending interactive login; its link stops working. */
  cancelLogin(): Promise<Status> {
    return this.call('POST', '/login/cancel', {}, Status);
  }

  /** The exit nodes on offer, latencies measured now; an engine without /exit-nodes answers 404. */
  exitNodes(): Promise<ExitNodeList> {
    return this.call('GET', '/exit-nodes', undefined, ExitNodeList);
  }

  /** `weft dns status`: the tailnet's DNS as this node uses it. */
  dnsStatus(): Promise<DnsStatus> {
    return this.call('GET', '/dns', undefined, DnsStatus);
  }

  /** `weft dns query`: one question answered by the engine's resolver. */
  dnsQuery(req: DnsQueryRequest): Promise<DnsQueryResult> {
    return this.call('POST', '/dns/query', req, DnsQueryResult);
  }

  /** Changes engine settings (exit node, advertised routes); an engine without /prefs answers 404. */
  setPrefs(patch: PrefsPatch): Promise<Status> {
    return this.call('POST', '/prefs', patch, Status);
  }

  /** Sends the helper the complete desired state again (after the helper restarted). */
  reapply(): Promise<Status> {
    return this.call('POST', '/reapply', {}, Status);
  }

  /** Calls `onEvent` for each status event until `signal` aborts or the daemon closes the stream. */
  async watch(onEvent: (event: WatchEvent) => void, signal: AbortSignal): Promise<void> {
    await this.checkOwner();
    return new Promise((resolve, reject) => {
      const req = request({
        socketPath: this.socketPath,
        path: `${LOCALAPI_PREFIX}/watch`,
        method: 'GET',
        signal,
      });
      req.on('error', (err) => (signal.aborted ? resolve() : reject(this.transportError(err))));
      req.on('response', (res) => {
        if (res.statusCode !== 200) {
          res.resume();
          return reject(
            new LocalApiError('http', `watch failed: HTTP ${res.statusCode}`, res.statusCode ?? null),
          );
        }
        res.setEncoding('utf8');
        let buf = '';
        res.on('data', (chunk: string) => {
          buf += chunk;
          if (buf.length > MAX_ANSWER_BYTES) {
            req.destroy();
            return reject(new LocalApiError('protocol', 'weftd sent a watch event that is too large'));
          }
          for (let nl = buf.indexOf('\n'); nl >= 0; nl = buf.indexOf('\n')) {
            const line = buf.slice(0, nl);
            buf = buf.slice(nl + 1);
            const event = parseJsonAs(WatchEvent, line);
            if (!event) {
              req.destroy();
              return reject(new LocalApiError('protocol', 'weftd sent an invalid watch event'));
            }
            onEvent(event);
          }
        });
        res.on('end', resolve);
        res.on('error', () => resolve());
      });
      req.end();
    });
  }

  /** Refuses a socket another user bound (say, first, in the shared /run/weft): it would get our commands. */
  private async checkOwner(): Promise<void> {
    try {
      await checkSocketOwner(this.socketPath);
    } catch (e) {
      throw new LocalApiError('untrusted-socket', (e as Error).message);
    }
  }

  private async call<T>(
    method: string,
    path: string,
    body: unknown,
    schema: z.ZodType<T>,
    signal?: AbortSignal,
    timeoutMs = this.timeoutMs,
  ): Promise<T> {
    await this.checkOwner();
    const text = body === undefined ? '' : JSON.stringify(body);
    return new Promise((resolve, reject) => {
      const req = request({
        socketPath: this.socketPath,
        path: `${LOCALAPI_PREFIX}${path}`,
        method,
        signal,
        headers: text
          ? { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) }
          : {},
      });
      if (timeoutMs > 0) {
        req.setTimeout(timeoutMs, () =>
          req.destroy(new LocalApiError('timeout', `weftd did not answer ${path} in time`)),
        );
      }
      req.on('error', (err) => reject(err instanceof LocalApiError ? err : this.transportError(err)));
      req.on('response', (res) => {
        const chunks: Buffer[] = [];
        let size = 0;
        res.on('data', (c: Buffer) => {
          size += c.length;
          if (size > MAX_ANSWER_BYTES)
            req.destroy(new LocalApiError('protocol', 'weftd sent too large an answer'));
          else chunks.push(c);
        });
        res.on('error', (err) => reject(this.transportError(err)));
        res.on('end', () => {
          let value: unknown;
          try {
            value = JSON.parse(Buffer.concat(chunks).toString('utf8'));
          } catch {
            return reject(
              new LocalApiError('protocol', `weftd sent a non-JSON answer (HTTP ${res.statusCode})`),
            );
          }
          if (res.statusCode !== 200) {
            const err = ErrorBody.safeParse(value);
            return reject(
              err.success
                ? new LocalApiError(err.data.error.code, err.data.error.message, res.statusCode ?? null)
                : new LocalApiError('http', `weftd answered HTTP ${res.statusCode}`, res.statusCode ?? null),
            );
          }
          const parsed = schema.safeParse(value);
          if (!parsed.success) return reject(new LocalApiError('protocol', 'weftd sent an invalid answer'));
          resolve(parsed.data);
        });
      });
      req.end(text);
    });
  }

  private transportError(err: NodeJS.ErrnoException): LocalApiError {
    if (err.name === 'AbortError') return new LocalApiError('aborted', 'cancelled');
    switch (err.code) {
      case 'ENOENT':
        return new LocalApiError('not-running', `weftd is not running (no socket at ${this.socketPath})`);
      case 'ECONNREFUSED':
        return new LocalApiError(
          'not-running',
          `weftd is not running (nothing listening at ${this.socketPath})`,
        );
      case 'EACCES':
        return new LocalApiError(
          'permission-denied',
          `permission denied on ${this.socketPath}: run as the user weftd runs as (or root)`,
        );
      default:
        return new LocalApiError('transport', `cannot reach weftd at ${this.socketPath}: ${err.message}`);
    }
  }
}
