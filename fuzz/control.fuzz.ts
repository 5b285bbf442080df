import net from 'node:net';
import { x25519 } from '@noble/curves/ed25519.js';
import {
  type Addr,
  Endpoint,
  ErrorBody,
  formatEndpoint,
  generateKeyPair,
  Hostname,
  Key,
  type KeyPair,
  keyFromTailscale,
  MACHINE_AUTH_HEADER,
  MACHINE_AUTH_MAX_SKEW_SECONDS,
  nodeKeyPossessionProof,
  nodeKeyRotationProof,
  parseEndpoint,
  parsePrefix,
  prefixContains,
  REGISTER_PATH,
  RegisterRequest,
  RegisterResponse,
  StreamClientMessage,
  signMachineRequest,
  TsMapRequest,
  TsRegisterRequest,
} from '@weft/protocol';
import fc from 'fast-check';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { openSqliteDatabase } from '../control/src/db/sqlite.js';
import { Store } from '../control/src/db/store.js';
import { offerableRoutes } from '../control/src/server/stream-route.js';
import { TAILNET_IPV4_RANGE } from '../control/src/tailnet/addresses.js';
import { isExitRoute, routesOverlap } from '../control/src/tailnet/routes.js';
import { Tag } from '../control/src/tailnet/tags.js';
import { INITIATION_LEN } from '../control/src/tailscale/noise.js';
import {
  cleanupAll,
  type StreamClient,
  startTestControl,
  type TestControl,
  TestMachine,
} from '../control/src/testing/harness.js';
import { initiate, TsTestClient } from '../control/src/testing/tailscale-client.js';
import { cidr, endpoint, NET_WORDS } from './arbitraries.js';
import { jsonOf, rawRequest } from './http.js';
import { accepted, crash, fuzzEntry, mutatedJson, refused, type Verdict } from './run.js';

// Control's machine API (signed registrations, netmap stream messages), admin API and Tailscale
// protocol (/ts2021 handshakes, then /machine/register and /machine/map inside one), against a
// real control in-process (control's own test harness: a temp SQLite file, real HTTP), read back
// through a second database connection as the admin CLI would. Oracle: no 5xx; refusals are an
// ErrorBody (Tailscale's: a 4xx or a register answer with Error) and change no node; a 2xx
// registration was signed once, proves its node key, is valid, and authorized by the pre-auth key
// or the machine's own standing; a stream message the schema refuses closes the stream (1008), one
// it accepts is applied; only a genuine Noise initiation completes; and after every input the
// stored tailnet is valid: names, keys, addresses in the tailnet ranges and unique, endpoints
// well-formed and none a peer must not be sent to, routes offerable, tags well-formed.

let t: TestControl;
let store: Store;
let db: Awaited<ReturnType<typeof openSqliteDatabase>>;
let ula: string;
let authKey: string;
let apiKey: string;

beforeAll(async () => {
  // Limits high enough that every input reaches the logic: registrations are otherwise rate-limited
  // per address (all inputs come from 127.0.0.1), and stream reports coalesced for 250 ms each.
  t = await startTestControl({
    loginWaitMs: 50,
    limits: { registerPerWindow: 1_000_000, streamCoalesceMs: 1, streamMaxMessages: 1_000_000 },
  });
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
    for (const e of n.endpoints) {
      const why = forbiddenEndpoint(e);
      if (why !== undefined) return `${n.name} stores endpoint ${e}: ${why}`;
    }
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

/**
 * Why a node must never hand its peers this endpoint (issue 10), stated apart from control's own
 * filter: an address on the peer's own machine or network, or inside the tailnet.
 */
function forbiddenEndpoint(text: string): string | undefined {
  const ep = parseEndpoint(text);
  if (ep === null) return 'malformed';
  const { family, value } = ep.addr;
  const inTailnet = [TAILNET_IPV4_RANGE, ula].some((range) => {
    const p = parsePrefix(range);
    return p !== null && prefixContains(p, ep.addr);
  });
  if (inTailnet) return 'inside the tailnet';
  if (family === 4) {
    if (value >> 24n === 0n) return 'unspecified ("this network")';
    if (value >> 24n === 127n) return 'loopback';
    if (value >> 16n === 0xa9fen) return 'link-local';
    if (value >> 28n === 0xen || value === 0xffffffffn) return 'multicast or broadcast';
    return undefined;
  }
  if (value === 0n) return 'unspecified';
  if (value === 1n) return 'loopback';
  if (value >> 118n === 0x3fan) return 'link-local';
  if (value >> 120n === 0xffn) return 'multicast';
  if (value >> 32n === 0xffffn) return 'IPv4-mapped';
  return undefined;
}

/** Endpoints the generic generator rarely hits: this tailnet's own, IPv4-mapped, link-local, usable ones. */
function internalEndpoint(): fc.Arbitrary<string> {
  const ulaAddr = parsePrefix(ula)?.addr as Addr;
  return fc.constantFrom(
    formatEndpoint({ family: 6, value: ulaAddr.value | 5n }, 41641),
    formatEndpoint({ family: 4, value: 0x64400005n }, 41641),
    '[::ffff:198.51.100.1]:41641',
    '169.254.10.1:41641',
    '198.51.100.1:41641',
    '[2001:db8::1]:41641',
  );
}

const snapshot = async () => JSON.stringify(await store.listNodes());

// ── POST /machine/register ──

it('machine API, register: signed once, valid, proven and authorized or refused with nothing changed; the tailnet stays valid', async () => {
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
      // CURRENT is replaced by the machine's node key as control has it (or, with none, another key).
      oldNodeKey: fc.oneof(fc.constant('CURRENT'), fc.constantFrom(...nodeKeys.map((k) => k.publicKey))),
      // PROOF is replaced by the genuine rotation proof for this machine and these keys.
      oldNodeKeyProof: fc.constantFrom(`${'A'.repeat(43)}=`, 'PROOF', 'PROOF'),
      // NODEPROOF: the genuine possession proof of nodeKey for this machine; OTHERMACHINE: the
      // genuine proof for another machine, which must not carry over.
      nodeKeyProof: fc.oneof(
        { weight: 6, arbitrary: fc.constant('NODEPROOF') },
        fc.constantFrom('OTHERMACHINE', `${'A'.repeat(43)}=`),
      ),
    },
    { requiredKeys: ['nodeKey', 'hostname', 'os', 'nodeKeyProof'] },
  );
  const privateKeyOf = new Map(nodeKeys.map((k) => [k.publicKey, k.privateKey]));
  const possessionProof = (machineKey: string, nodeKey: unknown) => {
    const nodePrivateKey = privateKeyOf.get(typeof nodeKey === 'string' ? nodeKey : '');
    if (nodePrivateKey === undefined) return undefined;
    return nodeKeyPossessionProof({ nodePrivateKey, controlPublicKey: t.controlPublicKey, machineKey });
  };
  const rotationProof = (m: TestMachine, req: { nodeKey?: unknown; oldNodeKey?: unknown }) => {
    const oldNodePrivateKey = privateKeyOf.get(typeof req.oldNodeKey === 'string' ? req.oldNodeKey : '');
    if (oldNodePrivateKey === undefined || typeof req.nodeKey !== 'string') return undefined;
    return nodeKeyRotationProof({
      oldNodePrivateKey,
      controlPublicKey: t.controlPublicKey,
      machineKey: m.machine.publicKey,
      newNodeKey: req.nodeKey,
    });
  };
  /** The body with its placeholders filled in for machine `m` (whose node key control has as `current`). */
  const withProofs = (template: string, m: TestMachine, other: TestMachine, current: string | undefined) => {
    let text = template.replace('"CURRENT"', JSON.stringify(current ?? nodeKeys[0]?.publicKey));
    const value = jsonOf(text) as { nodeKey?: unknown; oldNodeKey?: unknown } | undefined;
    // Where no genuine proof exists (a key not ours), a well-formed wrong one: the logic must refuse it.
    const fill = (placeholder: string, proof: string | undefined) => {
      text = text.replace(`"${placeholder}"`, JSON.stringify(proof ?? `${'B'.repeat(43)}=`));
    };
    fill('PROOF', rotationProof(m, value ?? {}));
    fill('NODEPROOF', possessionProof(m.machine.publicKey, value?.nodeKey));
    fill('OTHERMACHINE', possessionProof(other.machine.publicKey, value?.nodeKey));
    return text;
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
      { weight: 12, arbitrary: fc.constant('valid') },
      fc.constantFrom('none', 'garbled', 'other-body', 'other-path', 'stale', 'replayed'),
    ),
  });
  const port = Number(new URL(t.control.url).port);
  const post = (headers: Record<string, string>, body: string) =>
    rawRequest({ port, method: 'POST', path: REGISTER_PATH, headers, body });
  const stats = await fuzzEntry(
    'control register',
    input,
    async ({ machine: i, body: template, signature }): Promise<Verdict> => {
      const m = machines[i] as TestMachine;
      const other = machines[(i + 1) % machines.length] as TestMachine;
      const headers: Record<string, string> = { 'content-type': 'application/json' };
      let answer: Awaited<ReturnType<typeof rawRequest>>;
      let before: Awaited<ReturnType<Store['nodeByMachineKey']>>;
      let body = '';
      let nodesBefore: string;
      try {
        if (signature === 'replayed') {
          // The same request, signed once and sent twice: the second must be refused whatever the first did.
          body = withProofs(template, m, other, (await store.nodeByMachineKey(m.machine.publicKey))?.nodeKey);
          headers[MACHINE_AUTH_HEADER] = m.sign('POST', REGISTER_PATH, body);
          const first = await post(headers, body);
          if (first.status >= 500) return crash(`${first.status} ${first.body}`);
        }
        before = await store.nodeByMachineKey(m.machine.publicKey);
        if (signature !== 'replayed') body = withProofs(template, m, other, before?.nodeKey);
        nodesBefore = await snapshot();
        const sign = (path: string, text: string, now?: number) =>
          signMachineRequest({
            machinePrivateKey: m.machine.privateKey,
            controlPublicKey: t.controlPublicKey,
            method: 'POST',
            path,
            body: text,
            now,
          });
        if (signature === 'valid') headers[MACHINE_AUTH_HEADER] = sign(REGISTER_PATH, body);
        if (signature === 'garbled') headers[MACHINE_AUTH_HEADER] = `${sign(REGISTER_PATH, body)}x`;
        if (signature === 'other-body') headers[MACHINE_AUTH_HEADER] = sign(REGISTER_PATH, `${body} `);
        if (signature === 'other-path') headers[MACHINE_AUTH_HEADER] = sign('/machine/logout', body);
        if (signature === 'stale')
          headers[MACHINE_AUTH_HEADER] = sign(
            REGISTER_PATH,
            body,
            Date.now() - (MACHINE_AUTH_MAX_SKEW_SECONDS + 60) * 1000,
          );
        answer = await post(headers, body);
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
      const req = parsed.data;
      if (req.nodeKeyProof !== possessionProof(m.machine.publicKey, req.nodeKey))
        return accepted('a 200 without proof of the node key for this machine');
      if (response.data.status === 'authorized') {
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
      } else if ((await snapshot()) !== nodesBefore) {
        return accepted('a needs-auth answer changed the nodes');
      }
      return accepted(problem);
    },
  );
  expect(stats.accepted).toBeGreaterThan(stats.tried / 20);
  expect(stats.acceptedInvalid + stats.crashes).toBe(0);
});

// ── the netmap stream's client messages ──

it('machine API, stream: refused messages close the stream, accepted ones are applied; the tailnet stays valid', async () => {
  const m = new TestMachine(t);
  const node = await m.join('streamer', authKey);
  let stream: StreamClient = await m.stream();
  const message = fc.oneof(
    fc.record({
      type: fc.constant('endpoints'),
      endpoints: fc.array(fc.oneof({ weight: 4, arbitrary: endpoint }, internalEndpoint()), { maxLength: 6 }),
    }),
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
          ? JSON.stringify([...new Set(msg.endpoints)].filter((e) => forbiddenEndpoint(e) === undefined))
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
  expect(stats.accepted).toBeGreaterThan(stats.tried / 20);
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
  expect(stats.accepted).toBeGreaterThan(stats.tried / 20);
  expect(stats.acceptedInvalid + stats.crashes).toBe(0);
});

// ── /ts2021: the Noise handshake a Tailscale client opens with ──

/** Control's Noise key as a Tailscale client reads it (GET /key). */
async function tailscaleKey(): Promise<Uint8Array> {
  const { publicKey } = (await (await fetch(`${t.control.url}/key?v=130`)).json()) as { publicKey: string };
  return new Uint8Array(Buffer.from(publicKey.replace(/^mkey:/, ''), 'hex'));
}

/** Sends `request` (and `body`) on a fresh connection; what came back before the answer was whole. */
function rawExchange(
  port: number,
  request: string,
  body: Uint8Array,
): Promise<{ head: string; rest: Buffer }> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1');
    let data = Buffer.alloc(0);
    const split = () => {
      const end = data.indexOf('\r\n\r\n');
      return end < 0
        ? null
        : { head: data.subarray(0, end).toString('latin1'), rest: data.subarray(end + 4) };
    };
    const done = (error?: Error) => {
      clearTimeout(timer);
      socket.destroy();
      const answer = split();
      if (error !== undefined || answer === null)
        reject(error ?? new Error('connection closed without an answer'));
      else resolve(answer);
    };
    // Whole: a refusal's head, or a switch plus the 51-byte handshake response (or an error frame
    // and the close that follows it).
    const whole = () => {
      const answer = split();
      if (answer === null) return false;
      return !answer.head.startsWith('HTTP/1.1 101') ? answer.head.length > 0 : answer.rest.length >= 51;
    };
    const timer = setTimeout(() => done(new Error('no answer within 5 s')), 5_000);
    socket.on('data', (chunk: Buffer) => {
      data = Buffer.concat([data, chunk]);
      if (whole()) done();
    });
    socket.on('close', () => done());
    socket.on('error', (e) => done(e));
    socket.write(request);
    if (body.length > 0) socket.write(body);
  });
}

it('ts2021 handshake: only a genuine initiation for control’s key completes; the rest is refused; control stays up', async () => {
  const port = Number(new URL(t.control.url).port);
  const controlPublic = await tailscaleKey();
  const otherPublic = x25519.getPublicKey(x25519.utils.randomSecretKey());
  const machine = x25519.utils.randomSecretKey();
  const input = fc.record({
    inHeader: fc.boolean(),
    kind: fc.constantFrom('valid', 'valid', 'truncated', 'flipped', 'wrong-key', 'garbage', 'bad-base64'),
    at: fc.nat(),
    bit: fc.integer({ min: 0, max: 7 }),
    garbage: fc.uint8Array({ minLength: 1, maxLength: 200 }),
    upgrade: fc.oneof(
      { weight: 8, arbitrary: fc.constant('tailscale-control-protocol') },
      fc.constantFrom('websocket', 'tailscale-control-protocol-2', ''),
    ),
  });
  const stats = await fuzzEntry(
    'control ts2021 handshake',
    input,
    async ({ inHeader, kind, at, bit, garbage, upgrade }): Promise<Verdict> => {
      const init = initiate(machine, kind === 'wrong-key' ? otherPublic : controlPublic, 1);
      let message: Uint8Array = init.message;
      // Truncated and bad base64 only in the header: without it, control waits for the rest.
      const header = inHeader || kind === 'truncated' || kind === 'bad-base64';
      if (kind === 'truncated') message = message.slice(0, 1 + (at % (message.length - 1)));
      if (kind === 'flipped') {
        message = message.slice();
        message[at % message.length] = (message[at % message.length] as number) ^ (1 << bit);
      }
      if (kind === 'garbage') {
        message = garbage;
        if (!header && message.length < INITIATION_LEN)
          message = Buffer.concat([message, Buffer.alloc(INITIATION_LEN)]);
      }
      const handshake = kind === 'bad-base64' ? 'not base64!' : Buffer.from(message).toString('base64');
      const request =
        `POST /ts2021 HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: ${upgrade}\r\nConnection: upgrade\r\n` +
        `${header ? `X-Tailscale-Handshake: ${handshake}\r\n` : ''}\r\n`;
      let answer: { head: string; rest: Buffer };
      try {
        answer = await rawExchange(port, request, header ? new Uint8Array(0) : message);
      } catch (e) {
        return crash(`no answer: ${e}`);
      }
      const status = Number(answer.head.split(' ')[1]);
      if (!(status > 0) || status >= 500) return crash(`answered ${answer.head.split('\r\n')[0]}`);
      const up = await fetch(`${t.control.url}/key?v=130`).catch(() => null);
      if (up?.status !== 200) return crash('control stopped answering after the handshake');
      const completed = status === 101 && answer.rest.length >= 51 && answer.rest[0] === 2;
      if (kind !== 'valid' || upgrade !== 'tailscale-control-protocol')
        return completed ? accepted(`a ${kind} handshake (upgrade ${upgrade}) completed`) : refused;
      if (!completed) return crash(`a genuine handshake was refused: ${answer.head.split('\r\n')[0]}`);
      try {
        init.finish(new Uint8Array(answer.rest.subarray(0, 51)));
      } catch (e) {
        return accepted(`control's handshake response does not finish the handshake: ${e}`);
      }
      return accepted();
    },
  );
  expect(stats.accepted).toBeGreaterThan(stats.tried / 20);
  expect(stats.acceptedInvalid + stats.crashes).toBe(0);
});

// ── /machine/register and /machine/map inside ts2021 ──

it('ts2021 machine API: no 5xx, refusals store nothing, authorized registrations had the key or standing, the tailnet stays valid', async () => {
  const clients = Array.from({ length: 4 }, () => new TsTestClient(t.control.url));
  const machineKeyOf = (c: TsTestClient) => Buffer.from(x25519.getPublicKey(c.machine)).toString('base64');
  const nodeKeys = [
    ...clients.map((c) => c.nodeKey),
    `nodekey:${Buffer.from(x25519.getPublicKey(x25519.utils.randomSecretKey())).toString('hex')}`,
  ];
  const discoKey = `discokey:${Buffer.from(x25519.getPublicKey(x25519.utils.randomSecretKey())).toString('hex')}`;
  // OWN is replaced by the client's own node key.
  const ownNodeKey = fc.oneof({ weight: 4, arbitrary: fc.constant('OWN') }, fc.constantFrom(...nodeKeys));
  const hostinfo = fc.record(
    {
      Hostname: fc.constantFrom('ts-a', 'ts-b', 'Alice’s MacBook', '', 'x'.repeat(256), 'x'.repeat(257)),
      OS: fc.constantFrom('linux', 'windows', ''),
      IPNVersion: fc.constantFrom('1.102.5-test', ''),
      RoutableIPs: fc.array(fc.oneof(cidr, fc.constantFrom('0.0.0.0/0', '::/0', '100.64.0.0/10')), {
        maxLength: 4,
      }),
      NetInfo: fc.record({ PreferredDERP: fc.integer({ min: 0, max: 3 }) }),
    },
    { requiredKeys: ['Hostname', 'OS'] },
  );
  const register = fc.record(
    {
      Version: fc.constantFrom(130, 130, 130, 130, 130, 1),
      NodeKey: ownNodeKey,
      OldNodeKey: fc.constant(`nodekey:${'0'.repeat(64)}`),
      Auth: fc.record({ AuthKey: fc.constantFrom(authKey, authKey, authKey, 'tskey-nope', '') }),
      Hostinfo: hostinfo,
    },
    { requiredKeys: ['Version', 'NodeKey', 'Hostinfo'] },
  );
  const map = fc.record(
    {
      Version: fc.constantFrom(130, 130, 130, 130, 130, 1),
      NodeKey: ownNodeKey,
      DiscoKey: fc.constant(discoKey),
      Endpoints: fc.array(fc.oneof({ weight: 2, arbitrary: endpoint }, internalEndpoint()), { maxLength: 5 }),
      Hostinfo: hostinfo,
      Stream: fc.constant(false),
      OmitPeers: fc.boolean(),
      ReadOnly: fc.boolean(),
      Compress: fc.constantFrom('', 'zstd'),
    },
    { requiredKeys: ['Version', 'NodeKey', 'Endpoints'] },
  );
  const words = [...NET_WORDS, authKey, 'nodekey:00', 'zstd'];
  const input = fc.record({
    client: fc.nat({ max: clients.length - 1 }),
    call: fc.oneof(
      fc.record({ path: fc.constant('/machine/register'), body: mutatedJson(register, words) }),
      fc.record({ path: fc.constant('/machine/map'), body: mutatedJson(map, words) }),
    ),
  });
  const stats = await fuzzEntry(
    'control ts2021 machine API',
    input,
    async ({ client: i, call }): Promise<Verdict> => {
      const c = clients[i] as TsTestClient;
      const { path } = call;
      const body = call.body.replace('"OWN"', JSON.stringify(c.nodeKey));
      let status: number;
      let reply: string;
      const before = await store.nodeByMachineKey(machineKeyOf(c));
      const nodesBefore = await snapshot();
      try {
        let conn = await c.connection();
        if (conn.closed) {
          c.close();
          conn = await c.connection();
        }
        ({ status, reply } = await new Promise<{ status: number; reply: string }>((resolve, reject) => {
          const req = conn.postText(path, body);
          const timer = setTimeout(() => reject(new Error('no answer within 5 s')), 5_000);
          let code = 0;
          const chunks: Buffer[] = [];
          req.on('response', (h) => {
            code = Number(h[':status']);
            // A map stream (a mutation may ask for one) stays open: its head is the answer.
            if (path === '/machine/map' && code === 200) req.close();
          });
          req.on('data', (chunk: Buffer) => chunks.push(chunk));
          req.on('close', () => {
            clearTimeout(timer);
            resolve({ status: code, reply: Buffer.concat(chunks).toString() });
          });
          req.on('error', (e) => {
            clearTimeout(timer);
            reject(e);
          });
        }));
      } catch (e) {
        return crash(`no answer to ${path}: ${e}`);
      }
      if (status === 0 || status >= 500) return crash(`${path} answered ${status} ${reply}`);
      const problem = await storedProblem();
      const unchanged = async () => (await snapshot()) === nodesBefore;
      const value = jsonOf(body);
      if (path === '/machine/register') {
        const parsed = TsRegisterRequest.safeParse(value);
        const answer = jsonOf(reply) as { MachineAuthorized?: boolean } | undefined;
        if (status !== 200 || answer?.MachineAuthorized !== true) {
          if (!(await unchanged())) return accepted(`a refused registration (${status}) changed the nodes`);
          return problem === undefined ? refused : accepted(problem);
        }
        if (!parsed.success) return accepted('authorized a registration its schema refuses');
        const nodeKey = keyFromTailscale(parsed.data.NodeKey, 'nodekey');
        const standing =
          before !== undefined &&
          before.nodeKey === nodeKey &&
          (before.keyExpiry === null || Date.parse(before.keyExpiry) > Date.now());
        if (parsed.data.Auth?.AuthKey !== authKey && !standing)
          return accepted('authorized without the pre-auth key or standing');
        if ((await store.nodeByMachineKey(machineKeyOf(c)))?.nodeKey !== nodeKey)
          return accepted('the stored node key is not the one registered');
        return accepted(problem);
      }
      const parsed = TsMapRequest.safeParse(value);
      if (status !== 200) {
        if (!(await unchanged())) return accepted(`a refused map request (${status}) changed the nodes`);
        return problem === undefined ? refused : accepted(problem);
      }
      if (!parsed.success) return accepted('a 200 to a map request its schema refuses');
      const req = parsed.data;
      if (before === undefined || before.nodeKey !== keyFromTailscale(req.NodeKey, 'nodekey'))
        return accepted('a map for a node key this machine has not registered');
      if (!req.ReadOnly && req.Endpoints) {
        const want = [...new Set(req.Endpoints)].filter((e) => forbiddenEndpoint(e) === undefined);
        const have = (await store.nodeByMachineKey(machineKeyOf(c)))?.endpoints;
        if (JSON.stringify(have) !== JSON.stringify(want))
          return accepted(`reported endpoints ${req.Endpoints} stored as ${have}`);
      }
      return accepted(problem);
    },
  );
  for (const c of clients) c.close();
  expect(stats.accepted).toBeGreaterThan(stats.tried / 20);
  expect(stats.acceptedInvalid + stats.crashes).toBe(0);
});
