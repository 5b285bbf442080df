import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  ErrorBody,
  ExitNodeList,
  LOCALAPI_PREFIX,
  PrefsPatch,
  Status,
  UpRequest,
  type WatchEvent,
} from '@weft/protocol';
import fc from 'fast-check';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { LocalApiServer, type LocalBackend } from '../core/src/localapi/server.js';
import { silentLogger } from '../core/src/log/logger.js';
import { cidr, NET_WORDS } from './arbitraries.js';
import { jsonOf, rawRequest, Unsendable } from './http.js';
import { accepted, crash, fuzzEntry, mutatedJson, refused } from './run.js';

// The LocalAPI: the real server on a unix socket, over a backend that records what reaches it.
// Oracle: no 5xx and every answer is JSON of its schema (Status or ErrorBody); a 2xx POST /up or
// /prefs hands the backend exactly the body sent, which re-validates; a refusal reaches nothing.
// GET /watch is left out: it streams until the client goes away, by design. The backend has no
// netcheck, so that path answers 404.

const status: Status = {
  backendState: 'Running',
  controlUrl: 'http://127.0.0.1:1',
  authUrl: null,
  self: null,
  peers: [],
  health: [],
};

class RecordingBackend implements LocalBackend {
  readonly calls: { op: string; arg?: unknown }[] = [];
  async status() {
    return status;
  }
  async up(req: UpRequest) {
    this.calls.push({ op: 'up', arg: req });
  }
  async down() {
    this.calls.push({ op: 'down' });
  }
  async logout() {
    this.calls.push({ op: 'logout' });
  }
  async cancelLogin() {
    this.calls.push({ op: 'cancelLogin' });
  }
  async reapply() {
    this.calls.push({ op: 'reapply' });
  }
  async setPrefs(patch: PrefsPatch) {
    this.calls.push({ op: 'setPrefs', arg: patch });
  }
  async exitNodes(): Promise<ExitNodeList> {
    return { exitNodes: [], recommended: null };
  }
  watch(_listener: (event: WatchEvent) => void) {
    return () => {};
  }
}

const BODY_OF: Record<string, { schema: typeof UpRequest | typeof PrefsPatch; op: string }> = {
  '/up': { schema: UpRequest, op: 'up' },
  '/prefs': { schema: PrefsPatch, op: 'setPrefs' },
};

const upRequest = fc.record(
  {
    controlUrl: fc.constantFrom('http://127.0.0.1:8080', 'https://control.example.com', 'ftp://x', 'http://'),
    authKey: fc.string({ minLength: 1, maxLength: 40 }),
    hostname: fc.stringMatching(/^[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?$/),
  },
  { requiredKeys: ['controlUrl'] },
);
const prefsPatch = fc.record(
  {
    exitNodeId: fc.option(fc.string({ minLength: 1, maxLength: 20 })),
    exitNodeAllowLan: fc.boolean(),
    advertiseExitNode: fc.boolean(),
    advertiseRoutes: fc.array(cidr, { maxLength: 4 }),
    acceptRoutes: fc.boolean(),
  },
  { requiredKeys: [] },
);
const ROUTES = [
  '/status',
  '/up',
  '/down',
  '/logout',
  '/login/cancel',
  '/reapply',
  '/netcheck',
  '/prefs',
  '/exit-nodes',
];
const input = fc.record({
  method: fc.constantFrom('GET', 'POST', 'POST', 'POST', 'PUT', 'DELETE', 'HEAD'),
  path: fc.oneof(
    { weight: 8, arbitrary: fc.constantFrom(...ROUTES).map((r) => `${LOCALAPI_PREFIX}${r}`) },
    { weight: 1, arbitrary: fc.constantFrom(...ROUTES).map((r) => `${LOCALAPI_PREFIX}${r}?x=1#y`) },
    { weight: 1, arbitrary: fc.webPath() },
  ),
  contentType: fc.constantFrom('application/json', 'application/json; charset=utf-8', 'text/plain', ''),
  body: fc.oneof(
    mutatedJson(upRequest, NET_WORDS),
    mutatedJson(prefsPatch, NET_WORDS),
    fc.constantFrom('', '{}', ' ', 'null'),
    fc.string({ maxLength: 200 }),
  ),
});

let dir: string;
let socketPath: string;
const backend = new RecordingBackend();
const server = new LocalApiServer(backend, silentLogger);

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'weft-fuzz-localapi-'));
  socketPath = join(dir, 'weftd.sock');
  await server.listen(socketPath);
});
afterAll(async () => {
  await server.close();
  await rm(dir, { recursive: true, force: true });
});

it('LocalAPI bodies: no 5xx; 2xx hands the backend exactly a valid body; refusals reach nothing', async () => {
  const stats = await fuzzEntry('LocalAPI', input, async ({ method, path, contentType, body }) => {
    const before = backend.calls.length;
    let answer: Awaited<ReturnType<typeof rawRequest>>;
    try {
      answer = await rawRequest({
        socketPath,
        method,
        path,
        headers: contentType === '' ? {} : { 'content-type': contentType },
        body,
      });
    } catch (e) {
      return e instanceof Unsendable ? refused : crash(`no answer to ${method} ${path}: ${e}`);
    }
    if (answer.status >= 500) return crash(`${answer.status} ${answer.body}`);
    const json = jsonOf(answer.body);
    const calls = backend.calls.slice(before);
    if (answer.status >= 300) {
      if (method !== 'HEAD' && !ErrorBody.safeParse(json).success)
        return crash(`a refusal that is no ErrorBody: ${answer.body}`);
      return calls.length === 0
        ? refused
        : accepted(`a ${answer.status} refusal still called ${calls[0]?.op}`);
    }
    const schema = path.startsWith(`${LOCALAPI_PREFIX}/exit-nodes`) ? ExitNodeList : Status;
    if (method !== 'HEAD' && !schema.safeParse(json).success) {
      return accepted(`a 2xx answer that is no Status: ${answer.body}`);
    }
    const route = BODY_OF[new URL(path, 'http://x').pathname.slice(LOCALAPI_PREFIX.length)];
    if (route !== undefined) {
      const call = calls.find((c) => c.op === route.op);
      if (call === undefined) return accepted(`a 2xx ${path} that never reached the backend`);
      if (!route.schema.safeParse(call.arg).success)
        return accepted(`the backend got an invalid ${route.op}`);
      const sent = body.trim() === '' ? {} : jsonOf(body);
      if (JSON.stringify(call.arg) !== JSON.stringify(sent))
        return accepted(`the backend got ${JSON.stringify(call.arg)}, not the body sent`);
    }
    return accepted();
  });
  expect(stats.acceptedInvalid + stats.crashes).toBe(0);
});
