import { createSocket } from 'node:dgram';
import { once } from 'node:events';
import {
  decodeRelayData,
  generateKeyPair,
  parseRelayControl,
  RELAY_SUBPROTOCOL,
  RelayClientMessage,
  RelayCloseCode,
  RelayFrameType,
  relayAuthProof,
} from '@weft/protocol';
import fc from 'fast-check';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { WebSocket } from 'ws';
import { RelayConnection } from '../core/src/paths/relay-client.js';
import { Membership } from '../relay/src/membership.js';
import { type RunningRelay, startRelay } from '../relay/src/relay.js';
import { Initiator } from '../relay/src/testing/wireguard-initiator.js';
import { key as anyKey } from './arbitraries.js';
import { accepted, applyEdits, byteEdits, crash, fuzzEntry, refused, type Verdict } from './run.js';

// The relay's WebSocket frames and the reflector's UDP input, against a real relay on loopback
// serving a two-key tailnet. Relay oracle: every packet the honest receiver B gets was sent in a
// well-formed send frame to B, on a connection that proved the key it came from (only A's proof
// can be made here, so it comes from A), before anything malformed ended that connection; every
// allowed packet arrives; every close code is one the protocol names. Reflector oracle: a datagram
// counts as a handshake only if it is a member's genuine initiation (mac2, unchecked when not under
// load, may differ) and as a keepalive only if it is a genuine one, byte for byte; a stranger is
// never observed; every datagram is accounted for, and genuine ones are answered.

const A = generateKeyPair(); // a member, speaking over a raw WebSocket
const B = generateKeyPair(); // a member, an honest RelayConnection that records what it gets
const C = generateKeyPair(); // not a member
const R = generateKeyPair(); // a member, handshaking with the reflector
const K = generateKeyPair(); // a member, holding one session with the reflector for keepalives
const S = generateKeyPair(); // not a member, talking to the reflector

let relay: RunningRelay;
let receiver: RelayConnection;
const received: { from: string; packet: Buffer }[] = [];

beforeAll(async () => {
  const membership = Membership.tailnet();
  membership.replace([A.publicKey, B.publicKey, R.publicKey, K.publicKey]);
  relay = await startRelay({
    keyPair: generateKeyPair(),
    host: '127.0.0.1',
    port: 0,
    reflectorPort: 0,
    membership,
    reflector: { handshakesPerSecond: 1e9, handshakesPerSecondPerSource: 1e9 },
  });
  receiver = new RelayConnection({
    url: relay.url,
    nodePrivateKey: B.privateKey,
    nodeKey: B.publicKey,
    relayKey: relay.publicKey,
  });
  receiver.on('packet', (from, packet) => received.push({ from, packet: Buffer.from(packet) }));
  const connected = once(receiver, 'up');
  receiver.start();
  await connected;
});
afterAll(async () => {
  receiver.close();
  await relay.close();
});

type Frame =
  | {
      kind: 'auth';
      as: 'A' | 'C';
      claim: 'self' | 'B' | 'random';
      edit: null | { field: string; value: unknown };
    }
  | { kind: 'control'; text: string }
  | {
      kind: 'send';
      type: number;
      to: 'B' | 'A' | 'C' | 'random';
      size: number;
      edits: Parameters<typeof applyEdits>[1] | null;
    };

const frame: fc.Arbitrary<Frame> = fc.oneof(
  {
    weight: 3,
    arbitrary: fc.record({
      kind: fc.constant('auth' as const),
      as: fc.constantFrom('A' as const, 'A' as const, 'C' as const),
      claim: fc.constantFrom('self' as const, 'self' as const, 'B' as const, 'random' as const),
      edit: fc.option(
        fc.record({
          field: fc.constantFrom('type', 'nodeKey', 'proof', 'extra'),
          value: fc.oneof(anyKey, fc.jsonValue({ maxDepth: 1 }), fc.constantFrom('auth', 'endpointRequest')),
        }),
        { freq: 3 },
      ),
    }),
  },
  {
    weight: 1,
    arbitrary: fc.record({
      kind: fc.constant('control' as const),
      text: fc.oneof(
        fc.constantFrom(
          '{"type":"endpointRequest"}',
          '{"type":"endpointRequest","x":1}',
          '{"type":"challenge"}',
          '',
        ),
        fc.json({ maxDepth: 2 }),
        fc.string({ maxLength: 40 }),
      ),
    }),
  },
  {
    weight: 5,
    arbitrary: fc.record({
      kind: fc.constant('send' as const),
      type: fc.oneof(
        { weight: 6, arbitrary: fc.constant(RelayFrameType.send) },
        fc.integer({ min: 0, max: 255 }),
      ),
      to: fc.constantFrom('B' as const, 'B' as const, 'A' as const, 'C' as const, 'random' as const),
      size: fc.oneof(
        { weight: 8, arbitrary: fc.integer({ min: 8, max: 1500 }) },
        fc.constantFrom(8, 65_503, 65_504, 70_000),
      ),
      edits: fc.option(byteEdits, { freq: 4 }),
    }),
  },
);

const keyOf = { A, B, C };
let sequence = 0;
/** Packets B may receive (sent well-formed to B after A's proof) and not yet received, by content. */
const allowed = new Map<string, number>();
let allowedTotal = 0;
let checked = 0;
const CLOSE_CODES = new Set<number>([...Object.values(RelayCloseCode), 1009, 1002, 1007]);

/**
 * Runs one connection's frames, then an endpointRequest that only an open, proven connection
 * answers. Returns whether the relay should have kept the connection open, and what it did: the
 * close code, or null when it answered the probe.
 */
async function converse(frames: Frame[]): Promise<{ open: boolean; code: number | null } | string> {
  const ws = new WebSocket(relay.url, RELAY_SUBPROTOCOL);
  const closed = new Promise<number>((resolve) => ws.on('close', (code) => resolve(code)));
  ws.on('error', () => {});
  const [first] = (await Promise.race([once(ws, 'message'), closed.then(() => [null])])) as [Buffer | null];
  if (first === null) return 'the relay closed a new connection before its challenge';
  const challenge = JSON.parse(first.toString()) as { challenge: string; relayKey: string };
  // The connection as the relay should see it: open until something is malformed or unproven.
  let open = true;
  let authed = false;
  for (const [i, f] of frames.entries()) {
    if (f.kind === 'auth') {
      const signer = keyOf[f.as];
      const nodeKey =
        f.claim === 'self' ? signer.publicKey : f.claim === 'B' ? B.publicKey : generateKeyPair().publicKey;
      const msg: Record<string, unknown> = {
        type: 'auth',
        nodeKey,
        proof: relayAuthProof({
          nodePrivateKey: signer.privateKey,
          nodeKey,
          relayKey: challenge.relayKey,
          challenge: challenge.challenge,
        }),
      };
      const unedited = JSON.stringify(msg);
      if (f.edit) msg[f.edit.field] = f.edit.value;
      ws.send(JSON.stringify(msg));
      const genuine = f.as === 'A' && f.claim === 'self' && JSON.stringify(msg) === unedited;
      if (genuine && !authed) authed = true;
      else open = false;
    } else if (f.kind === 'control') {
      ws.send(f.text);
      const msg = parseRelayControl(RelayClientMessage, f.text);
      if (msg === null || msg.type === 'auth' || !authed) open = false;
    } else {
      const packet = Buffer.alloc(f.size, 0x5a);
      packet.write(`${sequence}/${i};`);
      const to = f.to === 'random' ? generateKeyPair().publicKey : keyOf[f.to].publicKey;
      let bytes: Uint8Array = Buffer.concat([Buffer.of(f.type), Buffer.from(to, 'base64'), packet]);
      if (f.edits) bytes = applyEdits(bytes, f.edits);
      ws.send(bytes);
      const decoded = decodeRelayData(bytes);
      if (!authed || decoded === null || decoded.type !== RelayFrameType.send) open = false;
      else if (open && Buffer.from(decoded.key).toString('base64') === B.publicKey) {
        const content = Buffer.from(decoded.packet).toString('latin1');
        allowed.set(content, (allowed.get(content) ?? 0) + 1);
        allowedTotal++;
      }
    }
    if (!open) break;
  }
  ws.send(JSON.stringify({ type: 'endpointRequest' }));
  const answered = new Promise<null>((resolve) =>
    ws.on('message', (data, isBinary) => {
      if (!isBinary && String(data).includes('"endpoint"')) resolve(null);
    }),
  );
  const timeout = new Promise<string>((resolve) => setTimeout(() => resolve('timeout'), 10_000));
  const code = await Promise.race([closed, answered, timeout]);
  ws.terminate();
  if (typeof code === 'string') return 'the relay answered neither the probe nor with a close';
  return { open, code };
}

/** Waits (bounded) for B to have received `want` packets. */
async function receivedAtLeast(want: number): Promise<boolean> {
  for (let i = 0; i < 500 && received.length < want; i++) await new Promise((r) => setTimeout(r, 10));
  return received.length >= want;
}

it('relay frames: only proven, well-formed sends to B reach B, from the proven key; all of them arrive', async () => {
  // Most conversations start with A's genuine proof, so the frames after it are judged as a node's.
  const proof: Frame = { kind: 'auth', as: 'A', claim: 'self', edit: null };
  const conversation = fc
    .tuple(fc.boolean(), fc.array(frame, { minLength: 1, maxLength: 4 }))
    .map(([lead, frames]) => (lead ? [proof, ...frames] : frames));
  const stats = await fuzzEntry('relay frames', conversation, async (frames): Promise<Verdict> => {
    sequence++;
    const result = await converse(frames);
    if (typeof result === 'string') return crash(result);
    if (result.code !== null && !CLOSE_CODES.has(result.code))
      return crash(`closed with code ${result.code}`);
    if (!(await receivedAtLeast(allowedTotal)))
      return crash(`B got ${received.length} of ${allowedTotal} allowed packets`);
    let verdict: Verdict = result.open ? accepted() : refused;
    for (const r of received.slice(checked)) {
      const content = r.packet.toString('latin1');
      const left = allowed.get(content) ?? 0;
      if (left === 1) allowed.delete(content);
      else allowed.set(content, left - 1);
      if (r.from !== A.publicKey)
        verdict = accepted(`B got a packet from ${r.from}, which no connection here proved`);
      else if (left === 0)
        verdict = accepted(
          `B got ${JSON.stringify(content.slice(0, 40))}, which was not sent well-formed after a proof`,
        );
    }
    checked = received.length;
    return verdict;
  });
  expect(stats.acceptedInvalid + stats.crashes).toBe(0);
});

// ── the reflector ──

const udp = createSocket('udp4');
beforeAll(async () => {
  await new Promise<void>((resolve) => udp.bind(0, '127.0.0.1', resolve));
});
afterAll(() => udp.close());

const replies: Buffer[] = [];
udp.on('message', (m) => replies.push(m));

const total = () => {
  const s = relay.reflector.stats();
  return s.handshakes + s.keepalives + s.dropped;
};

let session: { initiator: Initiator; receiver: number } | null = null;

/** A member's session with the reflector, for genuine keepalives. */
async function memberSession() {
  if (session) return session;
  const initiator = new Initiator(K, relay.publicKey);
  const before = replies.length;
  udp.send(initiator.initiation(), relay.reflectorPort, '127.0.0.1');
  for (let i = 0; i < 500 && replies.length === before; i++) await new Promise((r) => setTimeout(r, 10));
  session = { initiator, receiver: initiator.response(replies[before] as Buffer) };
  return session;
}

const datagram = fc.record({
  kind: fc.constantFrom('initiation', 'initiation', 'keepalive', 'random'),
  who: fc.constantFrom('member', 'stranger'),
  edits: fc.option(byteEdits, { freq: 3 }),
  random: fc.uint8Array({ maxLength: 200 }),
});

it('reflector UDP: only genuine member initiations and keepalives count; strangers are never observed', async () => {
  const stats = await fuzzEntry('reflector UDP', datagram, async (d): Promise<Verdict> => {
    let genuine: Uint8Array;
    if (d.kind === 'initiation')
      genuine = new Initiator(d.who === 'member' ? R : S, relay.publicKey).initiation();
    else if (d.kind === 'keepalive') {
      const s = await memberSession();
      genuine = s.initiator.transport(s.receiver);
    } else genuine = d.random;
    const bytes = d.edits ? applyEdits(genuine, d.edits) : genuine;
    const before = relay.reflector.stats();
    const counted = total();
    udp.send(bytes, relay.reflectorPort, '127.0.0.1');
    for (let i = 0; i < 500 && total() === counted; i++) await new Promise((r) => setTimeout(r, 2));
    if (total() !== counted + 1)
      return crash(`the reflector accounted for ${total() - counted} of 1 datagram`);
    const after = relay.reflector.stats();
    if (relay.observations.get(S.publicKey) !== undefined) return accepted('a stranger was observed');
    const same = (n: number) =>
      bytes.length === genuine.length &&
      Buffer.from(bytes.subarray(0, n)).equals(Buffer.from(genuine.subarray(0, n)));
    if (after.handshakes > before.handshakes) {
      if (d.kind !== 'initiation' || d.who !== 'member' || !same(116))
        return accepted('a handshake from a datagram that is no genuine member initiation');
      return accepted();
    }
    if (after.keepalives > before.keepalives) {
      if (d.kind !== 'keepalive' || !same(genuine.length))
        return accepted('a keepalive from a datagram that is no genuine one');
      return accepted();
    }
    if (d.edits === null && d.kind !== 'random' && d.who === 'member')
      return crash(`a genuine ${d.kind} was dropped`);
    return refused;
  });
  expect(stats.acceptedInvalid + stats.crashes).toBe(0);
});
