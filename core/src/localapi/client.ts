import { request } from 'node:http';
import { ErrorBody, LOCALAPI_PREFIX, Status, type UpRequest, WatchEvent } from '@weft/protocol';
import type { z } from 'zod';

// Client of the LocalAPI for the CLI (and any other local tool): talks HTTP over the daemon's
// unix socket and validates every answer with the protocol's schemas.

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
  constructor(readonly socketPath: string) {}

  status(): Promise<Status> {
    return this.call('GET', '/status', undefined, Status);
  }

  up(req: UpRequest): Promise<Status> {
    return this.call('POST', '/up', req, Status);
  }

  down(): Promise<Status> {
    return this.call('POST', '/down', {}, Status);
  }

  logout(): Promise<Status> {
    return this.call('POST', '/logout', {}, Status);
  }

  /** Gives up a pending interactive login; its link stops working. */
  cancelLogin(): Promise<Status> {
    return this.call('POST', '/login/cancel', {}, Status);
  }

  /** Calls `onEvent` for each status event until `signal` aborts or the daemon closes the stream. */
  watch(onEvent: (event: WatchEvent) => void, signal: AbortSignal): Promise<void> {
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
          for (let nl = buf.indexOf('\n'); nl >= 0; nl = buf.indexOf('\n')) {
            const line = buf.slice(0, nl);
            buf = buf.slice(nl + 1);
            const event = parseWatchEvent(line);
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

  private call<T>(method: string, path: string, body: unknown, schema: z.ZodType<T>): Promise<T> {
    const text = body === undefined ? '' : JSON.stringify(body);
    return new Promise((resolve, reject) => {
      const req = request({
        socketPath: this.socketPath,
        path: `${LOCALAPI_PREFIX}${path}`,
        method,
        headers: text
          ? { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) }
          : {},
      });
      req.on('error', (err) => reject(this.transportError(err)));
      req.on('response', (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
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

function parseWatchEvent(line: string): WatchEvent | null {
  try {
    const parsed = WatchEvent.safeParse(JSON.parse(line));
    return parsed.success ? parsed.data : null;
  } catch {
    return null;
  }
}
