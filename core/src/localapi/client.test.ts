import { chownSync, mkdtempSync, rmSync } from 'node:fs';
import { createServer, type Server, type ServerResponse } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { LOCALAPI_PREFIX, Status, type WatchEvent } from '@weft/protocol';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { LocalApiClient, LocalApiError } from './client.js';

// The client against a plain HTTP server on a unix socket speaking the LocalAPI as weftd does:
// what the desktop app and the web shell rely on (signals, time-outs, 404 visible, limits).

let dir: string;
let server: Server;
let sock: string;
const received: { method: string; path: string; body: string }[] = [];
let watchRes: ServerResponse | null = null;

const status = (extra: Partial<Status> = {}): Status => ({
  backendState: 'Running',
  controlUrl: 'https://weft.example.com',
  authUrl: null,
  self: { id: 'n1', name: 'laptop', addresses: ['100.64.0.1'] },
  peers: [],
  health: [],
  ...extra,
});

beforeEach(async () => {
  dir = mkdtempSync(join(tmpdir(), 'weft-localapi-client-'));
  sock = join(dir, 'weftd.sock');
  received.length = 0;
  server = createServer((req, res) => {
    let body = '';
    req.on('data', (c) => (body += c));
    req.on('end', () => {
      const path = (req.url ?? '').slice(LOCALAPI_PREFIX.length);
      received.push({ method: req.method ?? '', path, body });
      const json = (code: number, v: unknown) => {
        res.writeHead(code, { 'content-type': 'application/json' });
        res.end(JSON.stringify(v));
      };
      if (['/status', '/down', '/up', '/reapply'].includes(path)) return json(200, status());
      if (path === '/bad') return json(200, { backendState: 'Flying' });
      if (path === '/slow') return; // never answers
      if (path === '/huge') return json(200, { pad: 'x'.repeat(9 * 1024 * 1024) });
      if (path === '/watch') {
        res.writeHead(200, { 'content-type': 'application/x-ndjson' });
        watchRes = res;
        res.write(`${JSON.stringify({ initial: true, status: status() })}\n`);
        return;
      }
      json(404, { error: { code: 'not-found', message: `no such endpoint: ${req.url}` } });
    });
  });
  await new Promise<void>((r) => server.listen(sock, r));
});

afterEach(async () => {
  server.closeAllConnections();
  await new Promise((r) => server.close(r));
  rmSync(dir, { recursive: true, force: true });
});

type Internal = { call(m: string, p: string, b: unknown, s: unknown): Promise<unknown> };
const raw = (api: LocalApiClient, path: string) =>
  (api as unknown as Internal).call('GET', path, undefined, {
    safeParse: (v: unknown) => ({ success: true, data: v }),
  });

describe('LocalApiClient (unix socket)', () => {
  it('status and commands are validated answers; bodies are JSON', async () => {
    const api = new LocalApiClient(sock);
    expect((await api.status()).self?.name).toBe('laptop');
    await api.up({ controlUrl: 'https://weft.example.com' });
    await api.down();
    await api.reapply();
    expect(received.map((r) => `${r.method} ${r.path} ${r.body}`)).toEqual([
      'GET /status ',
      'POST /up {"controlUrl":"https://weft.example.com"}',
      'POST /down {}',
      'POST /reapply {}',
    ]);
  });

  it("the engine's error body becomes the message; 404 is visible as httpStatus", async () => {
    const api = new LocalApiClient(sock);
    const err = await api.setPrefs({ exitNodeId: 'x' }).catch((e) => e);
    expect(err).toBeInstanceOf(LocalApiError);
    expect(err).toMatchObject({ code: 'not-found', httpStatus: 404 });
    expect(received.at(-1)).toEqual({ method: 'POST', path: '/prefs', body: '{"exitNodeId":"x"}' });
  });

  it('an answer that does not match the schema is refused', async () => {
    const api = new LocalApiClient(sock);
    await expect((api as unknown as Internal).call('GET', '/bad', undefined, Status)).rejects.toMatchObject({
      code: 'protocol',
    });
  });

  it('times out when asked to, and refuses answers over the size limit', async () => {
    const api = new LocalApiClient(sock, { timeoutMs: 100 });
    await expect(raw(api, '/slow')).rejects.toMatchObject({ code: 'timeout' });
    await expect(raw(new LocalApiClient(sock), '/huge')).rejects.toMatchObject({ code: 'protocol' });
  });

  it('a request is cancelled by its signal', async () => {
    const api = new LocalApiClient(sock);
    server.removeAllListeners('request');
    server.on('request', () => {}); // holds /up open, as an interactive login does
    const abort = new AbortController();
    const up = api.up({ controlUrl: 'https://weft.example.com' }, abort.signal);
    setTimeout(() => abort.abort(), 50);
    await expect(up).rejects.toMatchObject({ code: 'aborted' });
  });

  it('watch streams lines until aborted', async () => {
    const api = new LocalApiClient(sock);
    const lines: WatchEvent[] = [];
    const abort = new AbortController();
    const done = api.watch((l) => {
      lines.push(l);
      if (lines.length === 1)
        watchRes?.write(
          `${JSON.stringify({ initial: false, status: status({ backendState: 'Stopped' }) })}\n`,
        );
      if (lines.length === 2) abort.abort();
    }, abort.signal);
    await done;
    expect(lines.map((l) => [l.initial, l.status.backendState])).toEqual([
      [true, 'Running'],
      [false, 'Stopped'],
    ]);
  });

  // Giving the socket away needs root; the machines that run the suite run it as root.
  it.runIf(process.getuid?.() === 0)('refuses a socket another user bound, sending it nothing', async () => {
    chownSync(sock, 65534, 65534);
    const c = new LocalApiClient(sock);
    await expect(c.status()).rejects.toMatchObject({
      code: 'untrusted-socket',
      message: `${sock} is owned by uid 65534, not by root or this user: refusing to talk to it`,
    });
    await expect(c.watch(() => {}, new AbortController().signal)).rejects.toMatchObject({
      code: 'untrusted-socket',
    });
    expect(received).toEqual([]);
    chownSync(sock, 0, 0);
    expect((await c.status()).backendState).toBe('Running');
  });

  it('no engine: a plain message', async () => {
    const api = new LocalApiClient(join(dir, 'missing.sock'));
    await expect(api.status()).rejects.toMatchObject({ code: 'not-running' });
  });
});
