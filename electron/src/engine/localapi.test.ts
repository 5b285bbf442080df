import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type Server, type ServerResponse } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { LOCALAPI_PREFIX } from '@weft/protocol';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { runningEngine } from '../testing/fixtures.js';
import { EngineLocalApi, LocalApiError, type WatchLine } from './localapi.js';

// Against a real HTTP server on a unix socket, speaking the LocalAPI as core serves it.

let dir: string;
let server: Server;
let sock: string;
const received: { method: string; path: string; body: string }[] = [];
let watchRes: ServerResponse | null = null;

beforeEach(async () => {
  dir = mkdtempSync(join(tmpdir(), 'weft-localapi-'));
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
      if (path === '/status' || path === '/down' || path === '/up') return json(200, runningEngine());
      if (path === '/bad') return json(200, { backendState: 'Flying' });
      if (path === '/watch') {
        res.writeHead(200, { 'content-type': 'application/x-ndjson' });
        watchRes = res;
        res.write(`${JSON.stringify({ initial: true, status: runningEngine() })}\n`);
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

describe('EngineLocalApi (unix socket)', () => {
  it('status and commands are validated answers; bodies are JSON', async () => {
    const api = new EngineLocalApi(sock);
    expect((await api.status()).self?.name).toBe('laptop');
    await api.up({ controlUrl: 'https://weft.example.com' });
    await api.down();
    expect(received.map((r) => `${r.method} ${r.path} ${r.body}`)).toEqual([
      'GET /status ',
      'POST /up {"controlUrl":"https://weft.example.com"}',
      'POST /down {}',
    ]);
  });

  it('the engine error body becomes the message; 404 is visible as httpStatus', async () => {
    const api = new EngineLocalApi(sock);
    const err = await api.setPrefs({ exitNodeId: 'x' }).catch((e) => e);
    expect(err).toBeInstanceOf(LocalApiError);
    expect(err).toMatchObject({ code: 'not-found', httpStatus: 404 });
    await expect(api.reapply()).resolves.toBeUndefined(); // tolerated: engine re-applies by itself
  });

  it('an answer that does not match the schema is refused', async () => {
    const api = new EngineLocalApi(sock);
    await expect(
      (api as unknown as { call(m: string, p: string): Promise<unknown> }).call('GET', '/bad'),
    ).rejects.toMatchObject({
      code: 'protocol',
    });
  });

  it('watch streams lines until aborted', async () => {
    const api = new EngineLocalApi(sock);
    const lines: WatchLine[] = [];
    const abort = new AbortController();
    const done = api.watch((l) => {
      lines.push(l);
      if (lines.length === 1)
        watchRes?.write(
          `${JSON.stringify({ initial: false, status: runningEngine({ backendState: 'Stopped' }) })}\n`,
        );
      if (lines.length === 2) abort.abort();
    }, abort.signal);
    await done;
    expect(lines.map((l) => [l.initial, l.status.backendState])).toEqual([
      [true, 'Running'],
      [false, 'Stopped'],
    ]);
  });

  it('no engine: a plain message', async () => {
    const api = new EngineLocalApi(join(dir, 'missing.sock'));
    await expect(api.status()).rejects.toMatchObject({
      code: 'unavailable',
      message: 'the Weft engine is not running',
    });
  });
});
