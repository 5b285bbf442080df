import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  AppState,
  BridgeResult,
  bridgeCalls,
  CALL_NAMES,
  type CallName,
  type EngineStatus,
  type UpRequest,
  WEB_BRIDGE,
} from '@weft/protocol';
import fc from 'fast-check';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { AppController, DEFAULT_PREFERENCES } from '../core/src/bridge/controller.js';
import { FakeEngine, runningEngine } from '../core/src/bridge/testing/index.js';
import { startWebShell, type WebShell } from '../core/src/web/server.js';
import { cidr, NET_WORDS } from './arbitraries.js';
import { jsonOf, rawRequest, Unsendable } from './http.js';
import { accepted, crash, fuzzEntry, mutatedJson, refused } from './run.js';

// The web shell: the real server and the bridge's real controller over a stand-in engine (the one
// core's tests use). Inputs are bridge calls with mutated bodies and every mix of right and wrong
// token, Host and Origin, plus static-file paths that try to leave the renderer's folder.
// Oracle: no 5xx; a call answers a BridgeResult; a call without the token, or from a foreign Host
// or Origin, is a 403 that reaches nothing; an `ok` call had an input its schema accepts; the app
// state stays valid; no file outside the renderer's folder is ever served.

const SECRET = 'weft-fuzz-secret-outside-the-ui';

/** The stand-in engine, except that sign-in completes at once (no person to wait for here). */
class PromptEngine extends FakeEngine {
  override async up(req: UpRequest): Promise<EngineStatus> {
    this.calls.push(`up ${req.controlUrl}`);
    this.set({ ...runningEngine(), controlUrl: req.controlUrl });
    return this.status_;
  }
}

let dir: string;
let shell: WebShell;
let port: number;
const engine = new PromptEngine();
engine.status_ = runningEngine();
const controller = new AppController({
  engine,
  prefs: { load: () => ({ ...DEFAULT_PREFERENCES }), save: () => {} },
  openExternal: async () => {},
  copyText: () => {},
  setLaunchAtLogin: () => {},
  shell: 'web',
  version: 'fuzz',
  autoOpenAuthUrl: false,
});

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'weft-fuzz-web-'));
  mkdirSync(join(dir, 'ui', 'assets'), { recursive: true });
  writeFileSync(join(dir, 'ui', 'index.html'), '<!doctype html><title>Weft</title>');
  writeFileSync(join(dir, 'ui', 'assets', 'app.js'), 'console.log(1)');
  writeFileSync(join(dir, 'secret.txt'), SECRET);
  controller.start();
  shell = await startWebShell({
    backend: {
      handlers: controller.handlers,
      get state() {
        return controller.state;
      },
      subscribe: (l) => controller.subscribe((s) => l({ event: 'state', payload: s })),
    },
    staticDir: join(dir, 'ui'),
    host: '127.0.0.1',
    port: 0,
  });
  port = Number(new URL(shell.origin).port);
});
afterAll(async () => {
  await shell.close();
  controller.stop();
  rmSync(dir, { recursive: true, force: true });
});

const VALID_INPUT: Record<CallName, fc.Arbitrary<unknown>> = {
  getState: fc.constant({}),
  connect: fc.constant({}),
  disconnect: fc.constant({}),
  login: fc.record({
    controlUrl: fc.constantFrom('http://127.0.0.1:8080', 'https://c.example.com', 'javascript:x'),
  }),
  cancelLogin: fc.constant({}),
  openAuthUrl: fc.constant({}),
  logout: fc.constant({}),
  setExitNode: fc.record({
    id: fc.option(fc.string({ minLength: 1, maxLength: 10 })),
    allowLan: fc.boolean(),
  }),
  copyText: fc.record({ text: fc.string({ minLength: 1, maxLength: 50 }) }),
  setPreferences: fc.record(
    {
      controlUrl: fc.constantFrom('http://127.0.0.1:8080', 'file:///etc/passwd'),
      launchAtLogin: fc.boolean(),
      notifications: fc.boolean(),
      theme: fc.constantFrom('system', 'light', 'dark', 'neon'),
      advertiseExitNode: fc.boolean(),
      advertiseRoutes: fc.array(cidr, { maxLength: 3 }),
    },
    { requiredKeys: [] },
  ),
};

/** Which guard a request passes: each header right, wrong, or missing. */
const guards = fc.record({
  token: fc.constantFrom('right', 'right', 'right', 'wrong', 'none', 'query'),
  host: fc.constantFrom('right', 'right', 'localhost', 'evil', 'none'),
  origin: fc.constantFrom('none', 'none', 'right', 'evil', 'null'),
});

const call = fc.constantFrom(...CALL_NAMES).chain((name) =>
  fc.record({
    kind: fc.constant('call' as const),
    method: fc.oneof(
      { weight: 8, arbitrary: fc.constant(name) },
      {
        weight: 1,
        arbitrary: fc.constantFrom(
          `${name}%00`,
          encodeURIComponent(`../${name}`),
          '__proto__',
          'constructor',
          '%E0%A4%A',
        ),
      },
    ),
    httpMethod: fc.constantFrom('POST', 'POST', 'POST', 'GET'),
    body: fc.oneof(
      { weight: 9, arbitrary: mutatedJson(VALID_INPUT[name], NET_WORDS) },
      { weight: 1, arbitrary: fc.constant('') },
    ),
    guards,
  }),
);
const file = fc.record({
  kind: fc.constant('file' as const),
  path: fc.oneof(
    fc.constantFrom(
      '/',
      '/index.html',
      '/assets/app.js',
      '/../secret.txt',
      '/%2e%2e/secret.txt',
      '/assets/..%2f..%2fsecret.txt',
      '/assets/%2e%2e%2f%2e%2e%2fsecret.txt',
      '/%2fsecret.txt',
      '/..%5csecret.txt',
      '/assets/app.js%00.html',
      '//secret.txt',
    ),
    fc.webPath(),
  ),
  guards,
});

function headersFor(g: { token: string; host: string; origin: string }) {
  const h: Record<string, string> = { 'content-type': 'application/json' };
  if (g.token === 'right') h.authorization = `Bearer ${shell.token}`;
  if (g.token === 'wrong') h.authorization = `Bearer ${'A'.repeat(shell.token.length)}`;
  if (g.host !== 'none')
    h.host = { right: `127.0.0.1:${port}`, localhost: `localhost:${port}`, evil: `evil.example:${port}` }[
      g.host
    ] as string;
  if (g.origin === 'right') h.origin = shell.origin;
  if (g.origin === 'evil') h.origin = 'http://evil.example';
  if (g.origin === 'null') h.origin = 'null';
  return h;
}

it('web shell bodies: guarded, no 5xx, ok only for valid input, state stays valid, no file outside the UI', async () => {
  const stats = await fuzzEntry(
    'web shell',
    fc.oneof({ weight: 4, arbitrary: call }, { weight: 1, arbitrary: file }),
    async (input) => {
      const headers = headersFor(input.guards);
      const allowed =
        input.guards.token === 'right' &&
        ['right', 'localhost'].includes(input.guards.host) &&
        ['none', 'right'].includes(input.guards.origin);
      const callsBefore = engine.calls.length;
      const seqBefore = controller.state.seq;
      let answer: Awaited<ReturnType<typeof rawRequest>>;
      const path = input.kind === 'call' ? `${WEB_BRIDGE.call}/${input.method}` : input.path;
      try {
        answer = await rawRequest({
          port,
          method: input.kind === 'call' ? input.httpMethod : 'GET',
          path:
            input.kind === 'call' && input.guards.token === 'query' ? `${path}?token=${shell.token}` : path,
          headers,
          body: input.kind === 'call' ? input.body : undefined,
          noHost: input.guards.host === 'none',
        });
      } catch (e) {
        return e instanceof Unsendable ? refused : crash(`no answer to ${path}: ${e}`);
      }
      if (answer.status >= 500) return crash(`${answer.status} ${answer.body}`);
      // node's HTTP server itself refuses an HTTP/1.1 request without Host, before the shell sees it
      if (input.guards.host === 'none' && answer.status === 400 && answer.body === '') return refused;
      if (!AppState.safeParse(controller.state).success) return accepted('the app state no longer validates');
      if (input.kind === 'file') {
        if (answer.body.includes(SECRET)) return accepted(`${path} served a file outside the UI`);
        return answer.status === 200 ? accepted() : refused;
      }
      const result = BridgeResult.safeParse(jsonOf(answer.body));
      if (!result.success)
        return crash(`a call answered with no BridgeResult: ${answer.status} ${answer.body}`);
      if (!allowed || input.httpMethod !== 'POST') {
        if (result.data.ok) return accepted(`a call that should be refused answered ok (${answer.status})`);
        if (engine.calls.length !== callsBefore || controller.state.seq !== seqBefore)
          return accepted('a refused call reached the controller');
        return refused;
      }
      if (!result.data.ok) return refused;
      const name = input.method as CallName;
      // An empty body, like `null` (dispatchBridgeCall's "no input"), stands for {}.
      const body = input.body.trim() === '' ? {} : (jsonOf(input.body) ?? {});
      if (!(CALL_NAMES as string[]).includes(name) || !bridgeCalls[name].input.safeParse(body).success)
        return accepted(`${input.method} answered ok to input its schema refuses`);
      return accepted();
    },
  );
  expect(stats.acceptedInvalid + stats.crashes).toBe(0);
});
