import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { readFile, stat } from 'node:fs/promises';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { extname, join, normalize, sep } from 'node:path';
import {
  type AppState,
  type BridgeEventMessage,
  type BridgeHandlers,
  type BridgeResult,
  dispatchBridgeCall,
  makeEventMessage,
  WEB_BRIDGE,
} from '@weft/protocol';
import { WebSocketServer } from 'ws';
import { describeError, type Logger, silentLogger } from '../log/logger.js';

// The web shell: the renderer's static files plus the bridge (protocol/src/bridge/) over HTTP +
// WebSocket, for a browser on this machine. What guards it (see docs/security.md):
//   - a random token, in the URL the shell prints: every call (Authorization: Bearer) and every
//     event stream (?token=) must carry it; compared in constant time;
//   - the Origin header, when present (browsers always send it on these requests), must be the
//     shell's own, so no other web page can drive it even if it learned the token;
//   - the Host header must name the shell itself, so a DNS-rebinding page gets nothing, not even
//     the static files;
//   - loopback only unless the command was told otherwise (see web/command.ts);
//   - bounded bodies, frames and number of event streams; the event socket only sends.

/** What serves the bridge behind the shell: the handlers, the state, and its changes. */
export interface BridgeBackend {
  readonly handlers: BridgeHandlers;
  readonly state: AppState;
  subscribe(listener: (message: BridgeEventMessage) => void): () => void;
}

export interface WebShellOptions {
  backend: BridgeBackend;
  /** The built renderer (index.html and assets/). */
  staticDir: string;
  /** An IP address literal (127.0.0.1, ::1, …); the caller decides whether non-loopback is allowed. */
  host: string;
  /** 0 picks a free port. */
  port: number;
  /** Defaults to 32 random bytes. */
  token?: string;
  log?: Logger;
  /** At most this many event streams at once (each browser tab holds one). */
  maxEventStreams?: number;
}

export interface WebShell {
  /** Open this in a browser: the shell's origin with the token. */
  readonly url: string;
  readonly origin: string;
  readonly token: string;
  /** Cuts every event stream (clients reconnect and get the full state first). */
  closeEventStreams(): void;
  close(): Promise<void>;
}

const TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.ico': 'image/x-icon',
  '.json': 'application/json',
  '.woff2': 'font/woff2',
};

const MAX_BODY_BYTES = 64 * 1024;
/** A client that falls this far behind on events is cut (it reconnects and catches up). */
const MAX_BUFFERED_BYTES = 4 * 1024 * 1024;

const CSP =
  "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; " +
  "object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

const BASE_HEADERS = {
  'cache-control': 'no-store',
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'no-referrer',
  'x-frame-options': 'DENY',
  'cross-origin-resource-policy': 'same-origin',
  'cross-origin-opener-policy': 'same-origin',
};

/** Constant-time token comparison (hashes first, so lengths never leak either). */
export function sameToken(given: string | null | undefined, token: string): boolean {
  if (!given || !token) return false;
  const digest = (s: string) => createHash('sha256').update(s).digest();
  return timingSafeEqual(digest(given), digest(token));
}

export function isLoopback(host: string): boolean {
  return /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(host) || host === '::1';
}

/** `host:port` as it appears in a URL (IPv6 in brackets). */
export function hostPort(host: string, port: number): string {
  return `${host.includes(':') ? `[${host}]` : host}:${port}`;
}

/**
 * The names a browser may use for the shell: the address it listens on, and `localhost` when that
 * is loopback. Each is accepted as the Host header and (with http://) as the Origin.
 */
export function shellAuthorities(host: string, port: number): Set<string> {
  const names = new Set([hostPort(host, port)]);
  if (isLoopback(host)) names.add(`localhost:${port}`);
  return names;
}

/** Whether a request may use the bridge: its Host names the shell, its Origin (if any) is the shell's. */
export function requestAllowed(
  headers: { host?: string | undefined; origin?: string | undefined },
  authorities: ReadonlySet<string>,
): boolean {
  if (!headers.host || !authorities.has(headers.host.toLowerCase())) return false;
  if (headers.origin === undefined) return true;
  return [...authorities].some((a) => headers.origin === `http://${a}`);
}

function bearer(header: string | undefined): string | null {
  const m = /^Bearer ([A-Za-z0-9_-]+)$/.exec(header ?? '');
  return m?.[1] ?? null;
}

export async function startWebShell(opts: WebShellOptions): Promise<WebShell> {
  const token = opts.token ?? randomBytes(32).toString('base64url');
  const log = opts.log ?? silentLogger;
  const root = normalize(opts.staticDir);
  const maxStreams = opts.maxEventStreams ?? 32;
  let authorities = new Set<string>();

  const send = (
    res: ServerResponse,
    code: number,
    body: string | Buffer,
    type = 'application/json',
    extra: Record<string, string> = {},
  ) => {
    res.writeHead(code, { ...BASE_HEADERS, 'content-type': type, ...extra });
    res.end(body);
  };
  const refuse = (res: ServerResponse, code: number, message: string) => {
    const result: BridgeResult = { ok: false, error: { code: 'failed', message } };
    send(res, code, JSON.stringify(result));
  };

  const call = async (req: IncomingMessage, res: ServerResponse, method: string) => {
    if (req.method !== 'POST') return refuse(res, 405, 'bridge calls are POST requests');
    if (!requestAllowed(req.headers, authorities) || !sameToken(bearer(req.headers.authorization), token))
      return refuse(res, 403, 'forbidden: open the address weft web printed');
    const chunks: Buffer[] = [];
    let size = 0;
    for await (const c of req) {
      size += (c as Buffer).length;
      if (size > MAX_BODY_BYTES) return refuse(res, 413, `request body over ${MAX_BODY_BYTES} bytes`);
      chunks.push(c as Buffer);
    }
    let input: unknown;
    try {
      const text = Buffer.concat(chunks).toString('utf8');
      input = text.trim() === '' ? {} : JSON.parse(text);
    } catch {
      const result: BridgeResult = { ok: false, error: { code: 'bad-input', message: 'not JSON' } };
      return send(res, 400, JSON.stringify(result));
    }
    const result = await dispatchBridgeCall(opts.backend.handlers, method, input);
    send(res, 200, JSON.stringify(result));
  };

  const file = async (req: IncomingMessage, res: ServerResponse, pathname: string) => {
    if (req.method !== 'GET' && req.method !== 'HEAD')
      return send(res, 405, 'method not allowed', 'text/plain');
    if (!req.headers.host || !authorities.has(req.headers.host.toLowerCase()))
      return send(res, 403, 'forbidden', 'text/plain');
    let rel: string;
    try {
      rel = pathname === '/' ? 'index.html' : decodeURIComponent(pathname.slice(1));
    } catch {
      return send(res, 400, 'bad path', 'text/plain');
    }
    const path = normalize(join(root, rel));
    if (!path.startsWith(root.endsWith(sep) ? root : root + sep) || rel.includes('\0'))
      return send(res, 404, 'not found', 'text/plain');
    const st = await stat(path).catch(() => null);
    if (!st?.isFile()) return send(res, 404, 'not found', 'text/plain');
    const body = await readFile(path);
    const type = TYPES[extname(path)] ?? 'application/octet-stream';
    const extra: Record<string, string> = type.startsWith('text/html')
      ? { 'content-security-policy': CSP }
      : {};
    if (req.method === 'HEAD') {
      res.writeHead(200, { ...BASE_HEADERS, 'content-type': type, 'content-length': body.length, ...extra });
      return res.end();
    }
    send(res, 200, body, type, extra);
  };

  const server: Server = createServer((req, res) => {
    void (async () => {
      let pathname: string;
      try {
        pathname = new URL(req.url ?? '/', 'http://shell').pathname;
      } catch {
        return send(res, 400, 'bad request', 'text/plain');
      }
      if (pathname.startsWith(`${WEB_BRIDGE.call}/`)) {
        let method: string;
        try {
          method = decodeURIComponent(pathname.slice(WEB_BRIDGE.call.length + 1));
        } catch {
          method = '';
        }
        return call(req, res, method);
      }
      if (pathname === WEB_BRIDGE.events)
        return send(res, 426, 'the event stream is a WebSocket', 'text/plain', { upgrade: 'websocket' });
      return file(req, res, pathname);
    })().catch((e) => {
      log.warn(`web shell: ${req.method} ${req.url?.split('?')[0]}: ${describeError(e)}`);
      if (!res.headersSent) refuse(res, 500, 'internal error');
      else res.destroy();
    });
  });

  const wss = new WebSocketServer({ noServer: true, maxPayload: 1024 });
  server.on('upgrade', (req, socket, head) => {
    const fail = (status: string) => {
      socket.end(`HTTP/1.1 ${status}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n`);
    };
    let url: URL;
    try {
      url = new URL(req.url ?? '/', 'http://shell');
    } catch {
      return fail('400 Bad Request');
    }
    if (url.pathname !== WEB_BRIDGE.events) return fail('404 Not Found');
    if (
      !requestAllowed(req.headers, authorities) ||
      !sameToken(url.searchParams.get(WEB_BRIDGE.tokenParam), token)
    )
      return fail('403 Forbidden');
    if (wss.clients.size >= maxStreams) return fail('503 Service Unavailable');
    wss.handleUpgrade(req, socket, head, (ws) => {
      const sendMessage = (m: BridgeEventMessage) => {
        if (ws.bufferedAmount > MAX_BUFFERED_BYTES) ws.terminate();
        else ws.send(JSON.stringify(m));
      };
      // The first frame is always the full state, so a (re)connecting page catches up.
      sendMessage(makeEventMessage('state', opts.backend.state));
      const unsubscribe = opts.backend.subscribe(sendMessage);
      ws.on('close', unsubscribe);
      ws.on('error', () => ws.terminate());
      ws.on('message', () => ws.close(1008, 'events only'));
    });
  });

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port, opts.host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const port = (server.address() as AddressInfo).port;
  authorities = shellAuthorities(opts.host, port);
  const origin = `http://${hostPort(opts.host, port)}`;
  return {
    origin,
    token,
    url: `${origin}/?${WEB_BRIDGE.tokenParam}=${token}`,
    closeEventStreams() {
      for (const c of wss.clients) c.terminate();
    },
    async close() {
      for (const c of wss.clients) c.terminate();
      wss.close();
      server.closeAllConnections();
      await new Promise((r) => server.close(r));
    },
  };
}
