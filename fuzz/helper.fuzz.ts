import { mkdtemp, rm } from 'node:fs/promises';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { x25519 } from '@noble/curves/ed25519.js';
import {
  canonicalPrefix,
  type DesiredState,
  exitRouteFamilies,
  HelperRequest,
  HelperResponse,
  type InterfaceStatus,
  type Prefix,
  parsePrefix,
} from '@weft/protocol';
import fc from 'fast-check';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { absentStatus, BackendError, type PlatformBackend } from '../native-helpers/src/backend.js';
import { LineSplitter } from '../native-helpers/src/framing.js';
import { desiredRules } from '../native-helpers/src/linux/exit-routing.js';
import { renderTable } from '../native-helpers/src/linux/nft.js';
import { inAny, UNASSIGNABLE, UNROUTABLE } from '../native-helpers/src/reserved.js';
import { HelperServer } from '../native-helpers/src/server.js';
import { parseRequestLine } from '../native-helpers/src/validate.js';
import { cidr, endpoint, ifaceAddr, interfaceName, key, NET_WORDS, nearExitCidr } from './arbitraries.js';
import { accepted, crash, fuzzEntry, mutatedBytes, mutatedJson, RUNS, refused, type Verdict } from './run.js';

// The helper's request line: the framing, the real parser and validator in-process (and the Linux
// backend's pure rendering of what it accepts), and a share of the inputs through the real socket
// server (with a backend that records instead of touching the
// OS). Oracle: an accepted request is exactly the line sent, matches the schema, and breaks none of
// the helper's promises below; the server answers every line with a valid response and calls the
// backend only for accepted ones.

/**
 * Prefixes that, alone or together, take over the machine's routing (or, as kill-switch exceptions,
 * switch it off): the one definition of an exit route, which only the exit-node path may carry.
 */
const takesOverRouting = (prefixes: readonly string[]) => exitRouteFamilies(prefixes).length > 0;

const publicKey = (privateKey: string) =>
  Buffer.from(x25519.getPublicKey(Buffer.from(privateKey, 'base64'))).toString('base64');

/** What the helper promises about any state it accepts; returns the first broken promise. */
function brokenPromise(state: DesiredState): string | undefined {
  const prefix = (text: string) => parsePrefix(text) as Prefix;
  for (const a of state.interface.addresses.map(prefix)) {
    if (inAny(a, UNASSIGNABLE)) return `interface address ${JSON.stringify(a)} accepted`;
  }
  // An address brings its subnet's route with it.
  if (takesOverRouting(state.interface.addresses))
    return `interface addresses ${state.interface.addresses} take over routing`;
  for (const r of state.routes) {
    if (inAny(prefix(r), UNROUTABLE)) return `unroutable route ${r} accepted`;
  }
  if (takesOverRouting(state.routes))
    return `routes ${state.routes} take over routing outside the exit-node path`;
  if (state.exitNode) {
    const { allowedLan, bypass } = state.exitNode;
    if (takesOverRouting([...allowedLan, ...bypass]))
      return `exit-node LAN/bypass ${[...allowedLan, ...bypass]} switch the kill switch off`;
    if (state.router !== undefined && takesOverRouting(state.router.routes))
      return 'an exit node that uses an exit node';
  }
  const own = publicKey(state.interface.privateKey);
  const keys = new Set<string>();
  const owners = new Map<string, string>();
  for (const peer of state.peers) {
    if (peer.publicKey === own) return 'a peer with our own key';
    if (keys.has(peer.publicKey)) return `peer ${peer.publicKey} twice`;
    keys.add(peer.publicKey);
    for (const ip of peer.allowedIPs) {
      const c = canonicalPrefix(ip) as string;
      if ((owners.get(c) ?? peer.publicKey) !== peer.publicKey) return `${c} allowed for two peers`;
      owners.set(c, peer.publicKey);
    }
  }
  return undefined;
}

const peer = fc.record(
  {
    publicKey: key,
    allowedIPs: fc.array(cidr, { maxLength: 3 }),
    endpoint,
    persistentKeepalive: fc.integer({ min: 1, max: 65535 }),
  },
  { requiredKeys: ['publicKey', 'allowedIPs'] },
);
const ports = fc
  .tuple(fc.integer({ min: 0, max: 65535 }), fc.integer({ min: 0, max: 65535 }))
  .map(([a, b]) => ({ first: Math.min(a, b), last: Math.max(a, b) }));
/** Routes and kill-switch exceptions: any, or near the exit-route share so that pairs cross it. */
const route = fc.oneof({ weight: 3, arbitrary: cidr }, nearExitCidr);

const state = fc.record(
  {
    interface: fc.record({
      name: interfaceName,
      privateKey: key,
      listenPort: fc.integer({ min: 0, max: 65535 }),
      addresses: fc.array(ifaceAddr, { maxLength: 3 }),
      mtu: fc.integer({ min: 1280, max: 9000 }),
    }),
    peers: fc.array(peer, { maxLength: 4 }),
    routes: fc.array(route, { maxLength: 4 }),
    filter: fc.array(
      fc.record({
        src: fc.array(cidr, { minLength: 1, maxLength: 3 }),
        dst: fc.array(fc.record({ prefix: cidr, ports }), { minLength: 1, maxLength: 3 }),
        protos: fc.array(fc.integer({ min: 0, max: 255 }), { minLength: 1, maxLength: 3 }),
      }),
      { maxLength: 2 },
    ),
    router: fc.record({ routes: fc.array(route, { minLength: 1, maxLength: 3 }), masquerade: fc.boolean() }),
    exitNode: fc.record({
      allowedLan: fc.array(route, { maxLength: 2 }),
      bypass: fc.array(route, { maxLength: 2 }),
    }),
  },
  { requiredKeys: ['interface', 'peers', 'routes'] },
);
const id = fc.nat({ max: Number.MAX_SAFE_INTEGER });
const request = fc.oneof(
  { weight: 4, arbitrary: fc.record({ id, op: fc.constant('apply'), state }) },
  {
    weight: 1,
    arbitrary: fc.record({ id, op: fc.constantFrom('status', 'down'), interface: interfaceName }),
  },
);
const line = fc.oneof(
  { weight: 9, arbitrary: mutatedJson(request, NET_WORDS).map((t) => Buffer.from(t)) },
  {
    weight: 1,
    arbitrary: mutatedBytes(request.map((r) => new TextEncoder().encode(JSON.stringify(r)))).map(Buffer.from),
  },
);

function checkLine(bytes: Buffer): Verdict {
  let parsed: ReturnType<typeof parseRequestLine>;
  try {
    parsed = parseRequestLine(bytes);
  } catch (e) {
    return crash(`parseRequestLine threw: ${e instanceof Error ? e.stack : e}`);
  }
  if (!parsed.ok) {
    if (parsed.message === '') return crash('a refusal without a message');
    return refused;
  }
  const { request } = parsed;
  if (!HelperRequest.safeParse(request).success)
    return accepted('the accepted request does not match the schema');
  if (JSON.stringify(request) !== JSON.stringify(JSON.parse(bytes.toString('utf8'))))
    return accepted('the accepted request is not the line that was sent');
  if (request.op !== 'apply') return accepted();
  try {
    // What the Linux backend builds from an accepted state before it runs anything.
    renderTable(request.state);
    desiredRules(request.state);
  } catch (e) {
    // A filter over the table's element limit is refused there, before any command: a refusal.
    if (e instanceof BackendError && e.code === 'invalid-request') return refused;
    return crash(`an accepted state does not render: ${e instanceof Error ? e.stack : e}`);
  }
  return accepted(brokenPromise(request.state));
}

it('helper framing: lines come out exactly as sent, whatever the chunking; an over-long line ends the stream', async () => {
  const MAX = 64;
  const stream = fc.record({
    lines: fc.array(
      fc.uint8Array({ maxLength: 80, size: 'max' }).map((b) => Buffer.from(b.filter((x) => x !== 0x0a))),
      {
        maxLength: 6,
      },
    ),
    cuts: fc.array(fc.nat(), { maxLength: 8 }),
  });
  const stats = await fuzzEntry('helper framing', stream, async ({ lines, cuts }) => {
    const bytes = Buffer.concat(lines.map((l) => Buffer.concat([l, Buffer.from('\n')])));
    const at = [...new Set(cuts.map((c) => c % (bytes.length + 1)))].sort((a, b) => a - b);
    const splitter = new LineSplitter(MAX);
    const got: Buffer[] = [];
    let tooLarge = false;
    let start = 0;
    for (const end of [...at, bytes.length]) {
      const frames = splitter.push(bytes.subarray(start, end));
      got.push(...frames.lines);
      tooLarge ||= frames.tooLarge;
      start = end;
    }
    const firstLong = lines.findIndex((l) => l.length > MAX);
    const want = firstLong < 0 ? lines : lines.slice(0, firstLong);
    if (tooLarge !== firstLong >= 0)
      return accepted(`tooLarge ${tooLarge} for lines of ${lines.map((l) => l.length)}`);
    if (got.length !== want.length || got.some((g, i) => !g.equals(want[i] as Buffer)))
      return accepted('the lines out differ from the lines in');
    return tooLarge ? refused : accepted();
  });
  expect(stats.acceptedInvalid + stats.crashes).toBe(0);
});

it("helper request line: accepted ⇒ the schema and the helper's promises hold", async () => {
  const stats = await fuzzEntry('helper request line', line, async (bytes) => checkLine(bytes));
  expect(stats.acceptedInvalid + stats.crashes).toBe(0);
});

/** Records what reaches the OS side; never touches it. */
class RecordingBackend implements PlatformBackend {
  readonly applied: DesiredState[] = [];
  async apply(state: DesiredState): Promise<InterfaceStatus> {
    this.applied.push(state);
    return { ...absentStatus(state.interface.name), exists: true, backend: 'wireguard-go' };
  }
  async status(name: string) {
    return absentStatus(name);
  }
  async down(name: string) {
    return absentStatus(name);
  }
  async shutdown() {}
  async restore() {}
  async detach() {}
}

let dir: string;
let socketPath: string;
const backend = new RecordingBackend();
const server = new HelperServer({ backend, log: { info: () => {}, warn: () => {}, error: () => {} } });

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'weft-fuzz-helper-'));
  socketPath = join(dir, 'helper.sock');
  await server.listen(socketPath);
});
afterAll(async () => {
  await server.close();
  await rm(dir, { recursive: true, force: true });
});

/** Sends one line and half-closes; resolves with every line the server answered. */
function exchange(bytes: Buffer): Promise<string[]> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(socketPath);
    const chunks: Buffer[] = [];
    socket.on('data', (c) => chunks.push(c));
    socket.on('error', reject);
    socket.on('close', () => resolve(Buffer.concat(chunks).toString('utf8').split('\n').filter(Boolean)));
    socket.end(Buffer.concat([bytes, Buffer.from('\n')]));
  });
}

it('helper socket server: one valid answer per line; the backend sees only accepted requests', async () => {
  const oneLine = line.filter((b) => !b.includes(0x0a));
  const stats = await fuzzEntry(
    'helper socket server',
    oneLine,
    async (bytes) => {
      const want = checkLine(bytes);
      const before = backend.applied.length;
      let answers: string[];
      try {
        answers = await exchange(bytes);
      } catch (e) {
        return crash(`the server stopped answering: ${e}`);
      }
      if (answers.length !== 1) return crash(`${answers.length} answers to one line`);
      const response = HelperResponse.safeParse(JSON.parse(answers[0] as string));
      if (!response.success) return crash(`an invalid response: ${answers[0]}`);
      const isAccepted = 'accepted' in want && want.accepted;
      if (response.data.ok !== isAccepted)
        return accepted(`the server and the validator disagree on ${answers[0]}`);
      const applied = backend.applied.length - before;
      const isApply = isAccepted && JSON.parse(bytes.toString('utf8')).op === 'apply';
      if (applied !== (isApply ? 1 : 0)) return accepted(`the backend was called ${applied} times`);
      return want;
    },
    Math.max(50, Math.ceil(RUNS / 20)),
  );
  expect(stats.acceptedInvalid + stats.crashes).toBe(0);
});
