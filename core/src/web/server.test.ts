import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AppState, BridgeEventMessage, WEB_BRIDGE } from '@weft/protocol';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { AppController } from '../bridge/controller.js';
import { FakeEngine, flush, memoryPrefsStore, runningEngine } from '../bridge/testing/index.js';
import { controllerBackend } from './backend.js';
import {
  isLoopback,
  requestAllowed,
  sameToken,
  shellAuthorities,
  startWebShell,
  type WebShell,
} from './server.js';

// The web shell's guards and envelope, against a real HTTP server on loopback and the bridge's
// real controller over a stand-in engine.

let dir: string;
let engine: FakeEngine;
let controller: AppController;
let shell: WebShell;

beforeEach(async () => {
  dir = mkdtempSync(join(tmpdir(), 'weft-web-'));
  mkdirSync(join(dir, 'ui', 'assets'), { recursive: true });
  writeFileSync(join(dir, 'ui', 'index.html'), '<!doctype html><title>Weft</title>');
  writeFileSync(join(dir, 'ui', 'assets', 'app.js'), 'console.log(1)');
  writeFileSync(join(dir, 'secret.txt'), 'not for the browser');
  engine = new FakeEngine();
  engine.status_ = runningEngine();
  controller = new AppController({
    engine,
    prefs: memoryPrefsStore(),
    openExternal: async () => {},
    copyText: () => {},
    setLaunchAtLogin: () => {},
    shell: 'web',
    version: 'test',
    autoOpenAuthUrl: false,
  });
  controller.start();
  await flush();
  shell = await startWebShell({
    backend: controllerBackend(controller),
    staticDir: join(dir, 'ui'),
    host: '127.0.0.1',
    port: 0,
    maxEventStreams: 2,
  });
});

afterEach(async () => {
  await shell.close();
  controller.stop();
  rmSync(dir, { recursive: true, force: true });
});

interface Answer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
}

/** A raw HTTP request, so Host and Origin can be anything a hostile page could make them. */
function http(
  method: string,
  path: string,
  headers: Record<string, string> = {},
  body?: string,
): Promise<Answer> {
  const { port } = new URL(shell.origin);
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, method, path, headers, setHost: !('host' in headers) });
    req.on('error', reject);
    req.on('response', (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () =>
        resolve({
          status: res.statusCode ?? 0,
          headers: res.headers,
          body: Buffer.concat(chunks).toString(),
        }),
      );
    });
    req.end(body);
  });
}

const json = { 'content-type': 'application/json' };
const auth = () => ({ ...json, authorization: `Bearer ${shell.token}` });
const callPath = (m: string) => `${WEB_BRIDGE.call}/${m}`;

function openEvents(
  token: string | null,
  headers: Record<string, string> = { origin: shell.origin },
): Promise<{ ws: WebSocket; messages: unknown[]; status?: number }> {
  const url = new URL(WEB_BRIDGE.events, shell.origin.replace('http:', 'ws:'));
  if (token !== null) url.searchParams.set(WEB_BRIDGE.tokenParam, token);
  const ws = new WebSocket(url, { headers });
  const messages: unknown[] = [];
  ws.on('message', (d) => messages.push(JSON.parse(String(d))));
  return new Promise((resolve, reject) => {
    ws.once('open', () => resolve({ ws, messages }));
    ws.once('unexpected-response', (_req, res) => resolve({ ws, messages, status: res.statusCode }));
    ws.once('error', reject);
  });
}

describe('web shell: guards', () => {
  it('the printed URL is the origin with a long random token', () => {
    expect(shell.origin).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    expect(shell.url).toBe(`${shell.origin}/?token=${shell.token}`);
    expect(shell.token).toMatch(/^[A-Za-z0-9_-]{43}$/);
  });

  it('a call needs the token: none or a wrong one is 403 and reaches no handler', async () => {
    for (const headers of [
      json,
      { ...json, authorization: 'Bearer nope' },
      { ...json, authorization: shell.token },
    ]) {
      const r = await http('POST', callPath('disconnect'), headers, '{}');
      expect(r.status).toBe(403);
      expect(JSON.parse(r.body)).toMatchObject({ ok: false, error: { code: 'failed' } });
    }
    expect(engine.calls).not.toContain('down');
  });

  it("another page's Origin is refused with 403 even with the token; the shell's own is served", async () => {
    for (const origin of [
      'http://evil.example',
      'null',
      `${shell.origin}.evil.example`,
      'https://127.0.0.1',
    ]) {
      const r = await http('POST', callPath('disconnect'), { ...auth(), origin }, '{}');
      expect(r.status, origin).toBe(403);
    }
    expect(engine.calls).not.toContain('down');
    const ok = await http('POST', callPath('disconnect'), { ...auth(), origin: shell.origin }, '{}');
    expect(ok.status).toBe(200);
    expect(JSON.parse(ok.body)).toEqual({ ok: true, value: { ok: true } });
    expect(engine.calls).toContain('down');
  });

  it('a tool without an Origin (curl) gets in with the token; localhost names the shell too', async () => {
    expect((await http('POST', callPath('getState'), auth(), '{}')).status).toBe(200);
    const { port } = new URL(shell.origin);
    const r = await http(
      'POST',
      callPath('getState'),
      { ...auth(), host: `localhost:${port}`, origin: `http://localhost:${port}` },
      '{}',
    );
    expect(r.status).toBe(200);
  });

  it('a foreign Host (DNS rebinding) gets nothing, not even the page', async () => {
    const { port } = new URL(shell.origin);
    expect((await http('GET', '/', { host: `attacker.example:${port}` })).status).toBe(403);
    const r = await http('POST', callPath('getState'), { ...auth(), host: `attacker.example:${port}` }, '{}');
    expect(r.status).toBe(403);
  });

  it('the event stream needs the token and the Origin', async () => {
    expect((await openEvents(null)).status).toBe(403);
    expect((await openEvents('wrong')).status).toBe(403);
    expect((await openEvents(shell.token, { origin: 'http://evil.example' })).status).toBe(403);
    const good = await openEvents(shell.token);
    expect(good.status).toBeUndefined();
    good.ws.close();
  });

  it('token comparison and the allowed names', () => {
    expect(sameToken('abc', 'abc')).toBe(true);
    expect(sameToken('abd', 'abc')).toBe(false);
    expect(sameToken('', '')).toBe(false);
    expect(sameToken(null, 'abc')).toBe(false);
    expect([...shellAuthorities('127.0.0.1', 8099)]).toEqual(['127.0.0.1:8099', 'localhost:8099']);
    expect([...shellAuthorities('::1', 8099)]).toEqual(['[::1]:8099', 'localhost:8099']);
    expect([...shellAuthorities('198.51.100.7', 8099)]).toEqual(['198.51.100.7:8099']);
    const names = shellAuthorities('127.0.0.1', 8099);
    expect(requestAllowed({ host: '127.0.0.1:8099' }, names)).toBe(true);
    expect(requestAllowed({ host: '127.0.0.1:8099', origin: 'http://localhost:8099' }, names)).toBe(true);
    expect(requestAllowed({ host: '127.0.0.1:8099', origin: 'http://127.0.0.1:8098' }, names)).toBe(false);
    expect(requestAllowed({}, names)).toBe(false);
    expect(isLoopback('127.0.0.1') && isLoopback('127.1.2.3') && isLoopback('::1')).toBe(true);
    expect(isLoopback('198.51.100.7') || isLoopback('0.0.0.0') || isLoopback('::')).toBe(false);
  });
});

describe('web shell: envelope', () => {
  it('POST /bridge/v0/call/<method> runs the call through the schema', async () => {
    const state = await http('POST', callPath('getState'), auth(), '');
    expect(state.status).toBe(200);
    const value = (JSON.parse(state.body) as { value: unknown }).value;
    expect(AppState.parse(value)).toMatchObject({ shell: 'web', engine: { backendState: 'Running' } });

    const unknown = await http('POST', callPath('format'), auth(), '{}');
    expect(JSON.parse(unknown.body)).toMatchObject({ ok: false, error: { code: 'bad-method' } });
    const bad = await http('POST', callPath('login'), auth(), '{"controlUrl":"ftp://x"}');
    expect(JSON.parse(bad.body)).toMatchObject({ ok: false, error: { code: 'bad-input' } });
  });

  it('refuses the wrong method, malformed and oversized bodies', async () => {
    expect((await http('GET', callPath('getState'), auth())).status).toBe(405);
    expect((await http('POST', callPath('getState'), auth(), '{nope')).status).toBe(400);
    const big = JSON.stringify({ controlUrl: `https://x/${'a'.repeat(70_000)}` });
    expect((await http('POST', callPath('login'), auth(), big)).status).toBe(413);
  });

  it('the event stream starts with the full state, then follows every change; it only sends', async () => {
    const { ws, messages } = await openEvents(shell.token);
    await expect.poll(() => messages.length).toBe(1);
    const first = BridgeEventMessage.parse(messages[0]);
    expect(first.event).toBe('state');
    expect(first.event === 'state' && first.payload.seq).toBe(controller.state.seq);

    engine.set(runningEngine({ backendState: 'Stopped' }));
    await expect.poll(() => messages.length).toBe(2);
    expect(messages[1]).toMatchObject({ event: 'state', payload: { engine: { backendState: 'Stopped' } } });

    const closed = new Promise<number>((r) => ws.once('close', (code) => r(code)));
    ws.send('hello');
    expect(await closed).toBe(1008);
  });

  it('bounds the number of event streams', async () => {
    const a = await openEvents(shell.token);
    const b = await openEvents(shell.token);
    expect((await openEvents(shell.token)).status).toBe(503);
    a.ws.close();
    b.ws.close();
  });

  it('serves the renderer: index at /, assets, CSP on the page; nothing outside its folder', async () => {
    const page = await http('GET', '/?token=x');
    expect(page.status).toBe(200);
    expect(page.headers['content-type']).toBe('text/html; charset=utf-8');
    expect(page.headers['content-security-policy']).toContain("frame-ancestors 'none'");
    expect(page.headers['x-frame-options']).toBe('DENY');
    expect((await http('GET', '/assets/app.js')).headers['content-type']).toBe(
      'text/javascript; charset=utf-8',
    );
    for (const path of [
      '/../secret.txt',
      '/%2e%2e/secret.txt',
      '/assets/../../secret.txt',
      '/nope.js',
      '/assets',
    ])
      expect((await http('GET', path)).status, path).toBe(404);
    expect((await http('DELETE', '/')).status).toBe(405);
  });
});
