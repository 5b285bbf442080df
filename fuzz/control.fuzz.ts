import {
  Endpoint,
  ErrorBody,
  generateKeyPair,
  Hostname,
  Key,
  type KeyPair,
  MACHINE_AUTH_HEADER,
  nodeKeyRotationProof,
  parsePrefix,
  prefixContains,
  REGISTER_PATH,
  RegisterRequest,
  RegisterResponse,
  StreamClientMessage,
} from '@weft/protocol';
import fc from 'fast-check';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { openSqliteDatabase } from '../control/src/db/sqlite.js';
import { Store } from '../control/src/db/store.js';
import { offerableRoutes } from '../control/src/server/stream-route.js';
import { TAILNET_IPV4_RANGE } from '../control/src/tailnet/addresses.js';
import { isExitRoute, routesOverlap } from '../control/src/tailnet/routes.js';
import { Tag } from '../control/src/tailnet/tags.js';
import {
  cleanupAll,
  type StreamClient,
  startTestControl,
  type TestControl,
  TestMachine,
} from '../control/src/testing/harness.js';
import { cidr, endpoint, NET_WORDS } from './arbitraries.js';
import { jsonOf, rawRequest } from './http.js';
import { accepted, crash, fuzzEntry, mutatedJson, refused, type Verdict } from './run.js';

// Control's machine API (signed registrations, netmap stream messages) and admin API, against a
// real control in-process (control's own test harness: a temp SQLite file, real HTTP), read back
// through a second database connection as the admin CLI would. Oracle: no 5xx; refusals are an
// ErrorBody and change no node; a 2xx registration was signed, valid, and authorized by the
// pre-auth key or the machine's own standing; a stream message the schema refuses closes the
// stream (1008), one it accepts is applied; and after every input the stored tailnet is valid:
// names, keys, addresses in the tailnet ranges and unique, endpoints and routes well-formed,
// routes offerable, tags well-formed.

let t: TestControl;
let store: Store;
let db: Awaited<ReturnType<typeof openSqliteDatabase>>;
let ula: string;
let authKey: string;
let apiKey: string;

beforeAll(async () => {
  t = await startTestControl({ loginWaitMs: 50 });
  authKey = await t.key('--reusable', '--tags', 'tag:ci');
  apiKey = (await t.cli('apikey', 'create')).out.trim();
  db = await openSqliteDatabase(t.db);
  store = new Store(db);
  ula = (await store.setting('tailnet_ula_prefix')) as string;
});
afterAll(async () => {
  await db.destroy();
  await cleanupAll();
});

/** The first thing wrong with the stored tailnet, if anything. */
async function storedProblem(): Promise<string | undefined> {
  const nodes = await store.listNodes();
  const seen = new Set<string>();
  const unique = (what: string, value: string) => {
    const k = `${what}=${value}`;
    if (seen.has(k)) return `two nodes with ${k}`;
    seen.add(k);
  };
  const v4 = parsePrefix(TAILNET_IPV4_RANGE);
  const v6 = parsePrefix(ula);
  for (const n of nodes) {
    const dup =
      unique('name', n.name) ??
      unique('ipv4', n.ipv4) ??
      unique('ipv6', n.ipv6) ??
      unique('nodeKey', n.nodeKey);
    if (dup) return dup;
    if (!Hostname.safeParse(n.name).success) return `node name ${JSON.stringify(n.name)}`;
    if (!Key.safeParse(n.nodeKey).success || !Key.safeParse(n.machineKey).success) return `${n.name}'s keys`;
    const a4 = parsePrefix(`${n.ipv4}/32`);
    const a6 = parsePrefix(`${n.ipv6}/128`);
    if (!v4 || !v6 || !a4 || !a6 || !prefixContains(v4, a4.addr) || !prefixContains(v6, a6.addr))
      return `${n.name}'s addresses ${n.ipv4} ${n.ipv6} are outside the tailnet`;
    if (n.endpoints.length > 64 || new Set(n.endpoints).size !== n.endpoints.length)
      return `${n.name}'s endpoints repeat`;
    const badEndpoint = n.endpoints.find((e) => !Endpoint.safeParse(e).success);
    if (badEndpoint !== undefined) return `${n.name} stores endpoint ${badEndpoint}`;
    for (const r of n.advertisedRoutes) {
      if (parsePrefix(r, { strict: true }) === null) return `${n.name} stores route ${r}`;
      if (!isExitRoute(r) && [TAILNET_IPV4_RANGE, ula].some((range) => routesOverlap(r, range)))
        return `${n.name} advertises ${r}, inside the tailnet's own range`;
    }
    const badTag = n.tags.find((tag) => !Tag.safeParse(tag).success);
    if (badTag !== undefined) return `${n.name} has tag ${JSON.stringify(badTag)}`;
    if (n.os.length > 64) return `${n.name}'s os is ${n.os.length} characters`;
  }
  return undefined;
}

const snapshot = async () => JSON.stringify(await store.listNodes());

// ── POST /machine/register ──

it('machine API, register: signed, valid and authorized or refused with nothing changed; the tailnet stays valid', async () => {
  const machines = Array.from({ length: 12 }, () => new TestMachine(t));
  const nodeKeys: KeyPair[] = Array.from({ length: 48 }, () => generateKeyPair());
  const request = fc.record(
    {
      nodeKey: fc.constantFrom(...nodeKeys.map((k) => k.publicKey)),
      hostname: fc.oneof(
        fc.constantFrom('laptop', 'a', 'web-1', 'x'.repeat(63)),
        fc.stringMatching(/^[a-z0-9]{1,8}$/),
      ),
      os: fc.constantFrom('linux', 'darwin', 'windows', ''),
      authKey: fc.constantFrom(authKey, authKey, authKey, authKey, 'weftkey-nope', `${authKey}x`),
      wait: fc.boolean(),
      // CURRENT is replaced by the machine's node key as control has it.
      oldNodeKey: fc.oneof(fc.constant('CURRENT'), fc.constantFrom(...nodeKeys.map((k) => k.publicKey))),
      // PROOF is replaced by the genuine rotation proof for this machine and these keys.
      oldNodeKeyProof: fc.constantFrom(`${'A'.repeat(43)}=`, 'PROOF', 'PROOF'),
    },
    { requiredKeys: ['nodeKey', 'hostname', 'os'] },
  );
  const privateKeyOf = new Map(nodeKeys.map((k) => [k.publicKey, k.privateKey]));
  const rotationProof = (m: TestMachine, req: { nodeKey: string; oldNodeKey?: string | undefined }) => {
    const oldNodePrivateKey = privateKeyOf.get(req.oldNodeKey ?? '');
    if (oldNodePrivateKey === undefined) return undefined;
    return nodeKeyRotationProof({
      oldNodePrivateKey,
      controlPublicKey: t.controlPublicKey,
      machineKey: m.machine.publicKey,
      newNodeKey: req.nodeKey,
    });
  };
  const withRotationProof = (template: string, m: TestMachine, current: string | undefined) => {
    const text = current === undefined ? template : template.replace('"CURRENT"', JSON.stringify(current));
    if (!text.includes('"PROOF"')) return text;
    const value = jsonOf(text) as { nodeKey?: unknown; oldNodeKey?: unknown };
    const proof =
      typeof value?.nodeKey === 'string' && typeof value.oldNodeKey === 'string'
        ? rotationProof(m, { nodeKey: value.nodeKey, oldNodeKey: value.oldNodeKey })
        : undefined;
    return proof === undefined ? text : text.replace('"PROOF"', JSON.stringify(proof));
  };
  const input = fc.record({
    machine: fc.nat({ max: machines.length - 1 }),
    body: mutatedJson(request, [
      ...NET_WORDS,
      authKey,
      'weftkey-',
      'Laptop',
      'a'.repeat(64),
      'x'.repeat(300),
    ]),
    signature: fc.oneof(
      { weight: 8, arbitrary: fc.constant('valid') },
      fc.constantFrom('none', 'garbled', 'other-body', 'other-path'),
    ),
  });
  const stats = await fuzzEntry(
    'control register',
    input,
    async ({ machine: i, body: template, signature }): Promise<Verdict> => {
      const m = machines[i] as TestMachine;
      const before = await store.nodeByMachineKey(m.machine.publicKey);
      const body = withRotationProof(template, m, before?.nodeKey);
      const nodesBefore = await snapshot();
      const headers: Record<string, string> = { 'content-type': 'application/json' };
      if (signature === 'valid') headers[MACHINE_AUTH_HEADER] = m.sign('POST', REGISTER_PATH, body);
      if (signature === 'garbled') headers[MACHINE_AUTH_HEADER] = `${m.sign('POST', REGISTER_PATH, body)}x`;
      if (signature === 'other-body')
        headers[MACHINE_AUTH_HEADER] = m.sign('POST', REGISTER_PATH, `${body} `);
      if (signature === 'other-path') headers[MACHINE_AUTH_HEADER] = m.sign('POST', '/machine/logout', body);
      let answer: Awaited<ReturnType<typeof rawRequest>>;
      try {
        answer = await rawRequest({
          port: Number(new URL(t.control.url).port),
          method: 'POST',
          path: REGISTER_PATH,
          headers,
          body,
        });
      } catch (e) {
        return crash(`no answer: ${e}`);
      }
      if (answer.status >= 500) return crash(`${answer.status} ${answer.body}`);
      const problem = await storedProblem();
      if (answer.status !== 200) {
        if (!ErrorBody.safeParse(jsonOf(answer.body)).success)
          return crash(`a refusal that is no ErrorBody: ${answer.body}`);
        if ((await snapshot()) !== nodesBefore)
          return accepted(`a ${answer.status} refusal changed the nodes`);
        return problem === undefined ? refused : accepted(problem);
      }
      const response = RegisterResponse.safeParse(jsonOf(answer.body));
      if (!response.success) return accepted(`a 200 that is no RegisterResponse: ${answer.body}`);
      if (signature !== 'valid') return accepted(`a 200 to a request signed ${signature}`);
      const parsed = RegisterRequest.safeParse(jsonOf(body));
      if (!parsed.success) return accepted('a 200 to a body the schema refuses');
      if (response.data.status === 'authorized') {
        const req = parsed.data;
        // Without the pre-auth key, only a known, unexpired machine: with its key, or rotating from it.
        const standing =
          before !== undefined &&
          (before.keyExpiry === null || Date.parse(before.keyExpiry) > Date.now()) &&
          req.authKey === undefined &&
          (before.nodeKey === req.nodeKey ||
            (before.nodeKey === req.oldNodeKey && req.oldNodeKeyProof === rotationProof(m, req)));
        if (req.authKey !== authKey && !standing)
          return accepted('authorized without the pre-auth key or standing');
        const after = await store.nodeByMachineKey(m.machine.publicKey);
        if (after?.nodeKey !== req.nodeKey) return accepted('the stored node key is not the one registered');
      }
      return accepted(problem);
    },
  );
  expect(stats.acceptedInvalid + stats.crashes).toBe(0);
});

// ── the netmap stream's client messages ──

it('machine API, stream: refused messages close the stream, accepted ones are applied; the tailnet stays valid', async () => {
  const m = new TestMachine(t);
  const node = await m.join('streamer', authKey);
  let stream: StreamClient = await m.stream();
  const message = fc.oneof(
    fc.record({ type: fc.constant('endpoints'), endpoints: fc.array(endpoint, { maxLength: 6 }) }),
    fc.record({
      type: fc.constant('routes'),
      advertisedRoutes: fc.array(
        fc.oneof(cidr, fc.constantFrom('100.64.0.0/10', '0.0.0.0/0', '::/0', '100.100.0.0/16')),
        {
          maxLength: 5,
        },
      ),
    }),
  );
  const stats = await fuzzEntry(
    'control stream',
    mutatedJson(message, NET_WORDS),
    async (text): Promise<Verdict> => {
      if (stream.closed) stream = await m.stream();
      const parsed = StreamClientMessage.safeParse(jsonOf(text));
      stream.ws.send(text);
      if (!parsed.success) {
        try {
          await stream.until('the stream to close', (c) => c.closed !== null, 5_000);
        } catch {
          return accepted('the stream kept a message its schema refuses');
        }
        if (stream.closed?.code !== 1008)
          return crash(`closed with ${stream.closed?.code} ${stream.closed?.reason}`);
        return refused;
      }
      const msg = parsed.data;
      const want =
        msg.type === 'endpoints'
          ? JSON.stringify([...new Set(msg.endpoints)])
          : JSON.stringify(offerableRoutes(msg.advertisedRoutes, ula));
      for (let i = 0; i < 500; i++) {
        const stored = await store.nodeById(node.id);
        if (stored === undefined) return crash('the node is gone');
        const have = JSON.stringify(msg.type === 'endpoints' ? stored.endpoints : stored.advertisedRoutes);
        if (have === want) return accepted(await storedProblem());
        if (stream.closed)
          return crash(`a valid message closed the stream: ${stream.closed.code} ${stream.closed.reason}`);
        await new Promise((r) => setTimeout(r, 10));
      }
      return crash('an accepted message was never applied');
    },
  );
  expect(stats.acceptedInvalid + stats.crashes).toBe(0);
});

// ── the admin API ──

it('admin API: only a valid API key changes anything; no 5xx; the tailnet and new pre-auth keys stay valid', async () => {
  const revoked = (await t.cli('apikey', 'create')).out.trim();
  const prefix = (JSON.parse((await t.cli('apikey', 'list', '--json')).out) as { prefix: string }[]).find(
    (k) => revoked.includes(k.prefix),
  )?.prefix as string;
  await t.cli('apikey', 'revoke', prefix);
  const names = ['adm-a', 'adm-b', 'adm-c'];
  const keyBody = fc.record(
    {
      user: fc.constantFrom('alice', 'nobody', ''),
      reusable: fc.boolean(),
      ephemeral: fc.boolean(),
      expiration: fc.constantFrom('1h', '30m', '7d', '1h30m', '0s', '-1h', '99999999999d', '1e3h', 'soon'),
      tags: fc.array(
        fc.constantFrom('tag:ci', 'tag:web', 'tag:a,tag:b', 'tag:a,bogus', 'ci', 'tag:', ' tag:x '),
        {
          maxLength: 3,
        },
      ),
    },
    { requiredKeys: ['user'] },
  );
  const input = fc.record({
    route: fc.constantFrom(
      'GET /nodes',
      'GET /users',
      'POST /preauthkeys',
      'POST /preauthkeys',
      'DELETE /nodes/',
      'POST /nodes/expire',
    ),
    name: fc.oneof(fc.constantFrom(...names, 'nope', '%2e%2e', 'adm-a%00', '..%2fusers'), fc.webSegment()),
    body: mutatedJson(keyBody, NET_WORDS),
    auth: fc.constantFrom('valid', 'valid', 'valid', 'valid', 'none', 'wrong', 'revoked', 'malformed'),
  });
  const port = Number(new URL(t.control.url).port);
  const stats = await fuzzEntry(
    'control admin API',
    input,
    async ({ route, name, body, auth }): Promise<Verdict> => {
      for (const n of names)
        if ((await store.nodeByName(n)) === undefined) await new TestMachine(t).join(n, authKey);
      const [method, path] = route.split(' ') as [string, string];
      const url = `/api/v1${path === '/nodes/' ? `/nodes/${name}` : path === '/nodes/expire' ? `/nodes/${name}/expire` : path}`;
      const headers: Record<string, string> = { 'content-type': 'application/json' };
      if (auth === 'valid') headers.authorization = `Bearer ${apiKey}`;
      if (auth === 'wrong') headers.authorization = `Bearer ${apiKey.slice(0, -2)}zz`;
      if (auth === 'revoked') headers.authorization = `Bearer ${revoked}`;
      if (auth === 'malformed') headers.authorization = apiKey;
      const nodesBefore = await snapshot();
      const keysBefore = await db.selectFrom('preauth_keys').select('id').execute();
      let answer: Awaited<ReturnType<typeof rawRequest>>;
      try {
        answer = await rawRequest({
          port,
          method,
          path: url,
          headers,
          body: method === 'POST' ? body : undefined,
        });
      } catch (e) {
        return crash(`no answer to ${method} ${url}: ${e}`);
      }
      if (answer.status >= 500) return crash(`${answer.status} ${answer.body}`);
      const problem = await storedProblem();
      const keysAfter = await db.selectFrom('preauth_keys').selectAll().execute();
      const changed = (await snapshot()) !== nodesBefore || keysAfter.length !== keysBefore.length;
      if (auth !== 'valid') {
        if (answer.status !== 401)
          return accepted(`a request with a ${auth} API key answered ${answer.status}`);
        return changed ? accepted(`a request with a ${auth} API key changed the tailnet`) : refused;
      }
      if (answer.status >= 300) {
        if (!ErrorBody.safeParse(jsonOf(answer.body)).success)
          return crash(`a refusal that is no ErrorBody: ${answer.body}`);
        return changed ? accepted(`a ${answer.status} refusal changed the tailnet`) : refused;
      }
      for (const k of keysAfter.slice(keysBefore.length)) {
        const tags = JSON.parse(k.tags) as string[];
        const bad = tags.find((tag) => !Tag.safeParse(tag).success);
        if (bad !== undefined) return accepted(`a pre-auth key with tag ${JSON.stringify(bad)}`);
        if (!(Date.parse(k.expires_at ?? '') > Date.parse(k.created_at)))
          return accepted(`a pre-auth key that expires at ${k.expires_at}`);
      }
      return accepted(problem);
    },
  );
  expect(stats.acceptedInvalid + stats.crashes).toBe(0);
});
