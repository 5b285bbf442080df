import { request } from 'node:http';
import { EngineStatus, ErrorBody, LOCALAPI_PREFIX, type UpRequest } from '@weft/protocol';
import { z } from 'zod';

// The engine's LocalAPI over its unix socket, as the desktop app uses it. Every answer is checked
// against the protocol (EngineStatus = the LocalAPI Status plus the optional fields the UI uses).
//
// Endpoints used (core serves the first five today):
//   GET  /status          → Status
//   GET  /watch           → NDJSON lines { initial, status }
//   POST /up   UpRequest  → Status (no authKey: interactive login; status.authUrl appears)
//   POST /down {}         → Status
//   POST /logout {}       → Status
//   POST /login/cancel {} → Status        (proposed: abandon a waiting interactive login)
//   POST /prefs EnginePrefsPatch → Status (proposed: exit node, allow-LAN, advertise exit/routes)
//   POST /reapply {}      → Status        (proposed: re-send the desired state to a restarted helper)

export const EnginePrefsPatch = z.strictObject({
  exitNodeId: z.string().nullable().optional(),
  exitNodeAllowLan: z.boolean().optional(),
  advertiseExitNode: z.boolean().optional(),
  advertiseRoutes: z.array(z.string()).optional(),
});
export type EnginePrefsPatch = z.infer<typeof EnginePrefsPatch>;

export const WatchLine = z.strictObject({ initial: z.boolean(), status: EngineStatus });
export type WatchLine = z.infer<typeof WatchLine>;

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

const MAX_RESPONSE_BYTES = 8 * 1024 * 1024;

export class EngineLocalApi {
  constructor(
    readonly socketPath: string,
    private readonly timeoutMs = 15_000,
  ) {}

  status(): Promise<EngineStatus> {
    return this.call('GET', '/status', undefined);
  }

  up(req: UpRequest, signal?: AbortSignal): Promise<EngineStatus> {
    // Interactive login may hold the request open until the person signs in.
    return this.call('POST', '/up', req, signal, 0);
  }

  down(): Promise<EngineStatus> {
    return this.call('POST', '/down', {});
  }

  logout(): Promise<EngineStatus> {
    return this.call('POST', '/logout', {});
  }

  cancelLogin(): Promise<EngineStatus> {
    return this.call('POST', '/login/cancel', {});
  }

  /** Asks the engine to send the helper its complete desired state again (after a helper restart). */
  async reapply(): Promise<void> {
    try {
      await this.call('POST', '/reapply', {});
    } catch (e) {
      // An engine without /reapply re-applies by itself when it reconnects to the helper.
      if ((e as LocalApiError).httpStatus !== 404) throw e;
    }
  }

  setPrefs(patch: EnginePrefsPatch): Promise<EngineStatus> {
    return this.call('POST', '/prefs', EnginePrefsPatch.parse(patch));
  }

  /** Streams status lines until `signal` aborts or the engine closes the stream. */
  watch(onLine: (line: WatchLine) => void, signal: AbortSignal): Promise<void> {
    return new Promise((resolve, reject) => {
      const req = request({
        socketPath: this.socketPath,
        path: `${LOCALAPI_PREFIX}/watch`,
        method: 'GET',
        signal,
      });
      req.on('error', (err) => (signal.aborted ? resolve() : reject(transportError(err))));
      req.on('response', (res) => {
        if (res.statusCode !== 200) {
          res.resume();
          reject(new LocalApiError('http', `watch failed: HTTP ${res.statusCode}`, res.statusCode ?? null));
          return;
        }
        res.setEncoding('utf8');
        let buf = '';
        res.on('data', (chunk: string) => {
          buf += chunk;
          if (buf.length > MAX_RESPONSE_BYTES) {
            req.destroy();
            reject(new LocalApiError('protocol', 'watch line too long'));
            return;
          }
          for (let nl = buf.indexOf('\n'); nl >= 0; nl = buf.indexOf('\n')) {
            const text = buf.slice(0, nl).trim();
            buf = buf.slice(nl + 1);
            if (!text) continue;
            let parsed: z.ZodSafeParseResult<WatchLine>;
            try {
              parsed = WatchLine.safeParse(JSON.parse(text));
            } catch {
              parsed = { success: false } as z.ZodSafeParseResult<WatchLine>;
            }
            if (!parsed.success) {
              req.destroy();
              reject(new LocalApiError('protocol', 'the engine sent an invalid watch event'));
              return;
            }
            onLine(parsed.data);
          }
        });
        res.on('end', () => resolve());
        res.on('error', () => resolve());
      });
      req.end();
    });
  }

  private call(
    method: 'GET' | 'POST',
    path: string,
    body: unknown,
    signal?: AbortSignal,
    timeoutMs = this.timeoutMs,
  ): Promise<EngineStatus> {
    const text = body === undefined ? '' : JSON.stringify(body);
    return new Promise((resolve, reject) => {
      const req = request({
        socketPath: this.socketPath,
        path: `${LOCALAPI_PREFIX}${path}`,
        method,
        signal,
        headers:
          body === undefined
            ? {}
            : { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) },
      });
      if (timeoutMs > 0) {
        req.setTimeout(timeoutMs, () =>
          req.destroy(new LocalApiError('timeout', `the engine did not answer ${path} in time`)),
        );
      }
      req.on('error', (err) => reject(err instanceof LocalApiError ? err : transportError(err)));
      req.on('response', (res) => {
        const chunks: Buffer[] = [];
        let size = 0;
        res.on('data', (c: Buffer) => {
          size += c.length;
          if (size > MAX_RESPONSE_BYTES) req.destroy(new LocalApiError('protocol', 'answer too large'));
          else chunks.push(c);
        });
        res.on('end', () => {
          let json: unknown;
          try {
            json = JSON.parse(Buffer.concat(chunks).toString('utf8'));
          } catch {
            reject(
              new LocalApiError(
                'protocol',
                `${path}: not JSON (HTTP ${res.statusCode})`,
                res.statusCode ?? null,
              ),
            );
            return;
          }
          if (res.statusCode !== 200) {
            const err = ErrorBody.safeParse(json);
            reject(
              err.success
                ? new LocalApiError(err.data.error.code, err.data.error.message, res.statusCode ?? null)
                : new LocalApiError('http', `${path}: HTTP ${res.statusCode}`, res.statusCode ?? null),
            );
            return;
          }
          const parsed = EngineStatus.safeParse(json);
          if (parsed.success) resolve(parsed.data);
          else
            reject(
              new LocalApiError('protocol', `${path}: unexpected answer: ${parsed.error.issues[0]?.message}`),
            );
        });
      });
      req.end(text);
    });
  }
}

function transportError(err: Error): LocalApiError {
  const code = (err as NodeJS.ErrnoException).code;
  if (code === 'ENOENT' || code === 'ECONNREFUSED')
    return new LocalApiError('unavailable', 'the Weft engine is not running');
  if (code === 'EACCES') return new LocalApiError('forbidden', 'not allowed to talk to the Weft engine');
  if (err.name === 'AbortError') return new LocalApiError('aborted', 'cancelled');
  return new LocalApiError('transport', err.message);
}
