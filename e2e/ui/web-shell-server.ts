import { randomBytes, timingSafeEqual } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { extname, join, normalize, sep } from 'node:path';
import {
  type AppState,
  type BridgeEventMessage,
  type BridgeHandlers,
  dispatchBridgeCall,
  makeEventMessage,
  WEB_BRIDGE,
} from '@weft/protocol';
import { WebSocketServer } from 'ws';

// A web shell: the renderer's static files plus the bridge over HTTP + WebSocket, on loopback,
// guarded by a random token in the URL and an Origin check. The tests run it with the mock
// backend; the engine's LocalAPI is to serve the same envelope (see protocol/src/bridge.ts).

export interface BridgeBackend {
  handlers: BridgeHandlers;
  subscribe(listener: (m: BridgeEventMessage) => void): () => void;
  readonly state: AppState;
}

export interface WebShell {
  url: string;
  origin: string;
  token: string;
  /** Cuts every event stream and refuses new ones for `refuseForMs` (as a restarting engine would). */
  dropEventStreams(refuseForMs?: number): void;
  close(): Promise<void>;
}

const TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.png': 'image/png',
  '.svg': 'image/svg+xml',
  '.json': 'application/json',
};

const MAX_BODY = 64 * 1024;

function sameToken(given: string | null | undefined, token: string): boolean {
  if (!given) return false;
  const a = Buffer.from(given);
  const b = Buffer.from(token);
  return a.length === b.length && timingSafeEqual(a, b);
}

export async function startWebShell(opts: {
  staticDir: string;
  backend: BridgeBackend;
  /** Extra routes (the mock identity provider). */
  extra?: (req: IncomingMessage, res: ServerResponse, origin: string) => boolean;
}): Promise<WebShell> {
  const token = randomBytes(24).toString('base64url');
  let origin = '';
  const root = normalize(opts.staticDir);

  const send = (res: ServerResponse, code: number, body: string | Buffer, type = 'application/json') => {
    res.writeHead(code, {
      'content-type': type,
      'cache-control': 'no-store',
      'x-content-type-options': 'nosniff',
      'referrer-policy': 'no-referrer',
      'x-frame-options': 'DENY',
    });
    res.end(body);
  };
  const originOk = (req: IncomingMessage) =>
    req.headers.origin === undefined || req.headers.origin === origin;

  const server: Server = createServer(async (req, res) => {
    const url = new URL(req.url ?? '/', origin);
    try {
      if (opts.extra?.(req, res, origin)) return;
      if (url.pathname.startsWith(`${WEB_BRIDGE.call}/`)) {
        if (req.method !== 'POST') return send(res, 405, '{}');
        const auth = req.headers.authorization?.replace(/^Bearer /, '');
        if (!sameToken(auth, token) || !originOk(req))
          return send(
            res,
            403,
            JSON.stringify({ ok: false, error: { code: 'bad-method', message: 'forbidden' } }),
          );
        const chunks: Buffer[] = [];
        let size = 0;
        for await (const c of req) {
          size += (c as Buffer).length;
          if (size > MAX_BODY) return send(res, 413, '{}');
          chunks.push(c as Buffer);
        }
        let input: unknown;
        try {
          input = JSON.parse(Buffer.concat(chunks).toString('utf8') || '{}');
        } catch {
          return send(
            res,
            400,
            JSON.stringify({ ok: false, error: { code: 'bad-input', message: 'not JSON' } }),
          );
        }
        const method = decodeURIComponent(url.pathname.slice(WEB_BRIDGE.call.length + 1));
        const result = await dispatchBridgeCall(opts.backend.handlers, method, input);
        return send(res, 200, JSON.stringify(result));
      }
      if (req.method !== 'GET') return send(res, 405, '{}');
      const rel = url.pathname === '/' ? 'index.html' : decodeURIComponent(url.pathname.slice(1));
      const path = normalize(join(root, rel));
      if (!path.startsWith(root + sep)) return send(res, 404, 'not found', 'text/plain');
      const body = await readFile(path).catch(() => null);
      if (!body) return send(res, 404, 'not found', 'text/plain');
      return send(res, 200, body, TYPES[extname(path)] ?? 'application/octet-stream');
    } catch (e) {
      send(res, 500, JSON.stringify({ error: (e as Error).message }));
    }
  });

  const wss = new WebSocketServer({ noServer: true, maxPayload: 1024 });
  let refuseUntil = 0;
  server.on('upgrade', (req, socket, head) => {
    const url = new URL(req.url ?? '/', origin);
    if (Date.now() < refuseUntil) {
      socket.end('HTTP/1.1 503 Service Unavailable\r\n\r\n');
      return;
    }
    if (
      url.pathname !== WEB_BRIDGE.events ||
      !sameToken(url.searchParams.get(WEB_BRIDGE.tokenParam), token) ||
      !originOk(req)
    ) {
      socket.end('HTTP/1.1 403 Forbidden\r\n\r\n');
      return;
    }
    wss.handleUpgrade(req, socket, head, (ws) => {
      // The first frame is always the full state, so a (re)connecting page catches up.
      ws.send(JSON.stringify(makeEventMessage('state', opts.backend.state)));
      const unsubscribe = opts.backend.subscribe((m) => ws.send(JSON.stringify(m)));
      ws.on('close', unsubscribe);
      ws.on('message', () => ws.close(1008, 'events only'));
    });
  });

  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as AddressInfo).port;
  origin = `http://127.0.0.1:${port}`;
  return {
    origin,
    token,
    url: `${origin}/?${WEB_BRIDGE.tokenParam}=${token}`,
    dropEventStreams(refuseForMs = 0) {
      refuseUntil = Date.now() + refuseForMs;
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
