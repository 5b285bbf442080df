import { chmod, mkdir, rm, stat } from 'node:fs/promises';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { connect } from 'node:net';
import { dirname } from 'node:path';
import {
  DnsQueryRequest,
  type DnsQueryResult,
  type DnsStatus,
  type ErrorBody,
  type ExitNodeList,
  LOCALAPI_PREFIX,
  type NetcheckReport,
  PrefsPatch,
  type Status,
  UpRequest,
  type WatchEvent,
} from '@weft/protocol';
import { z } from 'zod';
import { WeftError, type WeftErrorCode } from '../errors.js';
import { describeError, type Logger } from '../log/logger.js';

// The LocalAPI: HTTP over a unix socket, for the `weft` CLI and the desktop app.
//
// Who may call: the socket is created mode 0600, so only the daemon's own user (and root) can
// connect, and every caller may read and write. Tailscale additionally lets other local users
// read status while reserving up/down/logout for the operator; that split belongs in
// `handle()` below, fed by the peer's uid (SO_PEERCRED), which needs a native addon we do not
// have yet. Until then owner-only is the rule.

/** What the LocalAPI drives; the engine implements it, tests stand in for it. */
export interface LocalBackend {
  status(): Promise<Status>;
  up(req: UpRequest): Promise<void>;
  down(): Promise<void>;
  logout(): Promise<void>;
  /** Gives up a pending interactive login (its link stops working); a backend without it answers 404. */
  cancelLogin?(): Promise<void>;
  watch(listener: (event: WatchEvent) => void): () => void;
  /** `weft netcheck`; a backend without it answers 404. */
  netcheck?(): Promise<NetcheckReport>;
  /** Exit node, allow-LAN, advertised routes, accept-routes; a backend without it answers 404. */
  setPrefs?(patch: PrefsPatch): Promise<void>;
  /** The exit nodes on offer with latencies measured now; a backend without it answers 404. */
  exitNodes?(): Promise<ExitNodeList>;
  /** The tailnet resolver (`weft dns status|query`); a backend without it answers 404. */
  dns?: {
    status(): DnsStatus;
    query(req: z.output<typeof DnsQueryRequest>): Promise<DnsQueryResult>;
  };
  /** Sends the helper the whole desired state again (after it restarted); a backend without it answers 404. */
  reapply?(): Promise<void>;
}

const MAX_BODY_BYTES = 64 * 1024;
const EmptyBody = z.strictObject({});

const STATUS_OF: Record<
  WeftErrorCode | 'not-found' | 'method-not-allowed' | 'too-large' | 'internal',
  number
> = {
  'invalid-request': 400,
  'not-found': 404,
  'method-not-allowed': 405,
  conflict: 409,
  'too-large': 413,
  'control-rejected': 403,
  'control-error': 502,
  'helper-error': 502,
  'control-unreachable': 503,
  'helper-unavailable': 503,
  'state-error': 500,
  internal: 500,
  timeout: 504,
};

class HttpError extends Error {
  constructor(
    readonly code: keyof typeof STATUS_OF,
    message: string,
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
  }
}

type Handler = (req: IncomingMessage, res: ServerResponse) => Promise<void>;

export class LocalApiServer {
  private readonly server: Server;
  private readonly routes: Record<string, Partial<Record<'GET' | 'POST', Handler>>>;

  constructor(
    private readonly backend: LocalBackend,
    private readonly log: Logger,
  ) {
    this.routes = {
      '/status': { GET: async (_req, res) => sendJson(res, 200, await backend.status()) },
      '/up': {
        POST: async (req, res) => {
          await backend.up(await readBody(req, UpRequest));
          sendJson(res, 200, await backend.status());
        },
      },
      '/down': {
        POST: async (req, res) => {
          await readBody(req, EmptyBody);
          await backend.down();
          sendJson(res, 200, await backend.status());
        },
      },
      '/logout': {
        POST: async (req, res) => {
          await readBody(req, EmptyBody);
          await backend.logout();
          sendJson(res, 200, await backend.status());
        },
      },
      '/login/cancel': {
        POST: async (req, res) => {
          await readBody(req, EmptyBody);
          if (!backend.cancelLogin)
            throw new HttpError('not-found', 'cancelling a sign-in is not supported here');
          await backend.cancelLogin();
          sendJson(res, 200, await backend.status());
        },
      },
      '/reapply': {
        POST: async (req, res) => {
          await readBody(req, EmptyBody);
          if (!backend.reapply) throw new HttpError('not-found', 're-applying is not supported here');
          await backend.reapply();
          sendJson(res, 200, await backend.status());
        },
      },
      '/watch': { GET: async (req, res) => this.watch(req, res) },
      '/netcheck': {
        GET: async (_req, res) => {
          if (!backend.netcheck) throw new HttpError('not-found', 'netcheck is not supported here');
          sendJson(res, 200, await backend.netcheck());
        },
      },
      '/prefs': {
        POST: async (req, res) => {
          const patch = await readBody(req, PrefsPatch);
          if (!backend.setPrefs) throw new HttpError('not-found', 'changing prefs is not supported here');
          await backend.setPrefs(patch);
          sendJson(res, 200, await backend.status());
        },
      },
      '/dns': {
        GET: async (_req, res) => {
          if (!backend.dns) throw new HttpError('not-found', 'tailnet DNS is not supported here');
          sendJson(res, 200, backend.dns.status());
        },
      },
      '/dns/query': {
        POST: async (req, res) => {
          const query = await readBody(req, DnsQueryRequest);
          if (!backend.dns) throw new HttpError('not-found', 'tailnet DNS is not supported here');
          sendJson(res, 200, await backend.dns.query(query));
        },
      },
      '/exit-nodes': {
        GET: async (_req, res) => {
          if (!backend.exitNodes) throw new HttpError('not-found', 'exit nodes are not supported here');
          sendJson(res, 200, await backend.exitNodes());
        },
      },
    };
    this.server = createServer((req, res) => void this.handle(req, res));
  }

  /**
   * Listens on `path`, owner-only. A socket file left by a crashed daemon is replaced; one that
   * still answers means another weftd is running, which is refused.
   */
  async listen(path: string): Promise<void> {
    await mkdir(dirname(path), { recursive: true, mode: 0o755 });
    if (await socketAnswers(path)) throw new Error(`another weftd is already listening on ${path}`);
    await rm(path, { force: true });
    // The umask makes the socket owner-only from the moment it exists; chmod confirms it.
    const oldMask = process.umask(0o177);
    try {
      await new Promise<void>((resolve, reject) => {
        this.server.once('error', reject);
        this.server.listen(path, () => {
          this.server.off('error', reject);
          resolve();
        });
      });
    } finally {
      process.umask(oldMask);
    }
    await chmod(path, 0o600);
    const st = await stat(path);
    if ((st.mode & 0o077) !== 0) throw new Error(`could not make ${path} owner-only`);
  }

  async close(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    try {
      const path = requestPath(req.url);
      if (!path.startsWith(`${LOCALAPI_PREFIX}/`))
        throw new HttpError('not-found', `no such endpoint: ${path}`);
      const route = this.routes[path.slice(LOCALAPI_PREFIX.length)];
      if (!route) throw new HttpError('not-found', `no such endpoint: ${path}`);
      const handler = route[req.method as 'GET' | 'POST'];
      if (!handler) {
        const allow = Object.keys(route).join(', ');
        throw new HttpError('method-not-allowed', `${path} accepts ${allow}`, { allow });
      }
      // Read-only vs write callers would be told apart here (GET reads; POST changes state).
      await handler(req, res);
    } catch (err) {
      this.sendError(req, res, err);
    }
  }

  private sendError(req: IncomingMessage, res: ServerResponse, err: unknown): void {
    let code: keyof typeof STATUS_OF;
    let message: string;
    let headers: Record<string, string> = {};
    if (err instanceof HttpError) {
      ({ code, message, headers } = err);
    } else if (err instanceof WeftError) {
      code = err.code;
      message = err.message;
    } else {
      code = 'internal';
      message = `internal error: ${describeError(err)}`;
      this.log.error(`${req.method} ${req.url}: ${err instanceof Error ? err.stack : String(err)}`);
    }
    if (res.headersSent) {
      res.destroy();
      return;
    }
    const body: ErrorBody = { error: { code, message } };
    sendJson(res, STATUS_OF[code], body, headers);
  }

  /** Newline-delimited WatchEvents until the client goes away. */
  private async watch(req: IncomingMessage, res: ServerResponse): Promise<void> {
    res.writeHead(200, { 'content-type': 'application/x-ndjson', 'cache-control': 'no-store' });
    res.flushHeaders();
    const unsubscribe = this.backend.watch((event) => res.write(`${JSON.stringify(event)}\n`));
    await new Promise<void>((resolve) => req.socket.once('close', resolve));
    unsubscribe();
  }
}

/** The request's path; a target that is no path (`//`, which URL reads as a host) is a bad request. */
function requestPath(target = '/'): string {
  try {
    return new URL(target, 'http://local').pathname;
  } catch {
    throw new HttpError('invalid-request', `not a request path: ${target.slice(0, 64)}`);
  }
}

function sendJson(
  res: ServerResponse,
  status: number,
  value: unknown,
  headers: Record<string, string> = {},
): void {
  const text = `${JSON.stringify(value)}\n`;
  res.writeHead(status, {
    'content-type': 'application/json',
    'content-length': Buffer.byteLength(text),
    ...headers,
  });
  res.end(text);
}

async function readBody<T>(req: IncomingMessage, schema: z.ZodType<T>): Promise<T> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req) {
    size += (chunk as Buffer).length;
    if (size > MAX_BODY_BYTES) throw new HttpError('too-large', `request body over ${MAX_BODY_BYTES} bytes`);
    chunks.push(chunk as Buffer);
  }
  const text = Buffer.concat(chunks).toString('utf8');
  let value: unknown = {};
  if (text.trim() !== '') {
    const type = req.headers['content-type'] ?? '';
    if (!type.startsWith('application/json')) {
      throw new HttpError('invalid-request', 'request body must be application/json');
    }
    try {
      value = JSON.parse(text);
    } catch {
      throw new HttpError('invalid-request', 'request body is not valid JSON');
    }
  }
  const parsed = schema.safeParse(value);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    const where = issue?.path.length ? `${issue.path.join('.')}: ` : '';
    throw new HttpError('invalid-request', `invalid request: ${where}${issue?.message ?? 'malformed'}`);
  }
  return parsed.data;
}

function socketAnswers(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect(path);
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}
