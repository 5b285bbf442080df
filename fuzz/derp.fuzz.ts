import { createSocket } from 'node:dgram';
import { request } from 'node:http';
import type { Socket } from 'node:net';
import { crc32 } from 'node:zlib';
import { DerpFrameType, generateKeyPair } from '@weft/protocol';
import fc from 'fast-check';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { sealBox } from '../relay/src/derp/box.js';
import { DerpClient } from '../relay/src/derp/client.js';
import { DerpFrameReader, encodeDerpFrame } from '../relay/src/derp/frames.js';
import { Membership } from '../relay/src/membership.js';
import { type RunningRelay, startRelay } from '../relay/src/relay.js';
import { bindingResponse } from '../relay/src/stun.js';
import { accepted, applyEdits, byteEdits, crash, fuzzEntry, refused, type Verdict } from './run.js';

// The relay's DERP byte stream and its STUN responder, against a real relay on loopback serving a
// two-key tailnet. DERP oracle: every packet the honest DERP client B gets appears in some input
// stream as a whole SendPacket frame to B, and comes from A (the only other key that can log in);
// for streams without byte edits, a model of the protocol says whether the connection stays open
// (a final Ping is answered with its Pong) or is closed, and every packet it allows reaches B.
// STUN oracle: an answer comes only for a well-formed Binding request (checked here independently)
// and is exactly the requester's address and port.

const A = generateKeyPair(); // a member, speaking raw DERP
const B = generateKeyPair(); // a member, an honest DerpClient that records what it gets
const C = generateKeyPair(); // not a member
const raw = (k: { publicKey: string }) => Buffer.from(k.publicKey, 'base64');
const priv = (k: { privateKey: string }) => new Uint8Array(Buffer.from(k.privateKey, 'base64'));

let relay: RunningRelay;
let derpUrl: string;
let receiver: DerpClient;
const received: { from: string; packet: Buffer }[] = [];

beforeAll(async () => {
  const membership = Membership.tailnet();
  membership.replace([A.publicKey, B.publicKey]);
  relay = await startRelay({
    keyPair: generateKeyPair(),
    host: '127.0.0.1',
    port: 0,
    reflectorPort: 0,
    stunPort: 0,
    membership,
    // The budgets are tested elsewhere (stun.test.ts); here every datagram meets the parser.
    stun: { answersPerSecond: 1e9, answersPerSecondPerSource: 1e9 },
  });
  derpUrl = relay.url.replace(/^ws/, 'http').replace(/\/relay$/, '/derp');
  receiver = await DerpClient.connect(derpUrl, B);
  receiver.on('packet', (from, packet) =>
    received.push({ from: Buffer.from(from).toString('base64'), packet: Buffer.from(packet) }),
  );
  await receiver.loggedIn();
});
afterAll(async () => {
  receiver.close();
  await relay.close();
});

type Part =
  | { kind: 'login'; as: 'A' | 'C'; sealedBy: 'A' | 'C'; json: string }
  | { kind: 'send'; to: 'A' | 'B' | 'C' | 'random'; size: number }
  | { kind: 'frame'; type: number; payload: Uint8Array }
  | { kind: 'bytes'; bytes: Uint8Array };

const part: fc.Arbitrary<Part> = fc.oneof(
  {
    weight: 2,
    arbitrary: fc.record({
      kind: fc.constant('login' as const),
      as: fc.constantFrom('A' as const, 'A' as const, 'C' as const),
      sealedBy: fc.constantFrom('A' as const, 'A' as const, 'C' as const),
      json: fc.oneof(
        { weight: 4, arbitrary: fc.constant('{"version":2,"CanAckPings":true}') },
        fc.json({ maxDepth: 2 }),
        fc.string({ maxLength: 20 }),
      ),
    }),
  },
  {
    weight: 5,
    arbitrary: fc.record({
      kind: fc.constant('send' as const),
      to: fc.constantFrom('B' as const, 'B' as const, 'A' as const, 'C' as const, 'random' as const),
      size: fc.oneof(
        { weight: 8, arbitrary: fc.integer({ min: 8, max: 1500 }) },
        fc.constantFrom(8, 65_536, 65_537),
      ),
    }),
  },
  {
    weight: 2,
    arbitrary: fc.record({
      kind: fc.constant('frame' as const),
      type: fc.oneof(
        fc.constantFrom(
          DerpFrameType.ping,
          DerpFrameType.pong,
          DerpFrameType.notePreferred,
          DerpFrameType.keepAlive,
          DerpFrameType.watchConns,
          DerpFrameType.closePeer,
          DerpFrameType.forwardPacket,
          DerpFrameType.clientInfo,
        ),
        fc.integer({ min: 0, max: 255 }),
      ),
      payload: fc.uint8Array({ maxLength: 40 }),
    }),
  },
  {
    weight: 1,
    arbitrary: fc.record({ kind: fc.constant('bytes' as const), bytes: fc.uint8Array({ maxLength: 64 }) }),
  },
);

const keyOf = { A, B, C };
let sequence = 0;
/** Every SendPacket frame to B in any input stream, as sent: what B may receive. */
const sentToB = new Set<string>();
let expected = 0;
let checked = 0;

/**
 * The relay as a model: whether the connection should still be open after `parts` (each sent as a
 * well-formed frame), and the packets it must have forwarded to B. Mirrors derp/session.ts.
 */
function model(parts: Part[], frames: Buffer[]): { open: boolean; toB: number } {
  let authed = false;
  let toB = 0;
  for (const [i, p] of parts.entries()) {
    const f = frames[i] as Buffer;
    const length = f.length - 5;
    const limit = authed ? 32 + 65_536 : 256 * 1024;
    if (length > limit) return { open: false, toB };
    const type = f[0] as number;
    if (!authed) {
      if (p.kind !== 'login' || p.as !== 'A' || p.sealedBy !== 'A' || !validInfo(p.json))
        return { open: false, toB };
      authed = true;
      continue;
    }
    if (p.kind === 'send') {
      if (p.to === 'B') toB++;
    } else if (type === DerpFrameType.sendPacket) {
      if (length < 32) return { open: false, toB };
    } else if (type === DerpFrameType.notePreferred && length !== 1) return { open: false, toB };
    else if (type === DerpFrameType.ping && length !== 8) return { open: false, toB };
    else if (
      type === DerpFrameType.forwardPacket ||
      type === DerpFrameType.watchConns ||
      type === DerpFrameType.closePeer
    )
      return { open: false, toB };
  }
  return { open: authed, toB };
}

function validInfo(json: string): boolean {
  try {
    const v = JSON.parse(json) as unknown;
    if (typeof v !== 'object' || v === null || Array.isArray(v)) return false;
    const o = v as Record<string, unknown>;
    const optional = (k: string, ok: (x: unknown) => boolean) => !(k in o) || o[k] === undefined || ok(o[k]);
    return (
      optional('version', (x) => Number.isInteger(x) && (x as number) >= 0 && (x as number) <= 1000) &&
      optional('CanAckPings', (x) => typeof x === 'boolean') &&
      optional('IsProber', (x) => typeof x === 'boolean') &&
      optional('meshKey', (x) => typeof x === 'string' && x.length <= 128) &&
      optional('AppName', (x) => typeof x === 'string' && x.length <= 256)
    );
  } catch {
    return false;
  }
}

function encode(p: Part, serverKey: Uint8Array, i: number): Buffer {
  if (p.kind === 'login') {
    const sealed = sealBox(priv(keyOf[p.sealedBy]), serverKey, Buffer.from(p.json));
    return encodeDerpFrame(DerpFrameType.clientInfo, raw(keyOf[p.as]), sealed);
  }
  if (p.kind === 'send') {
    const packet = Buffer.alloc(p.size, 0x5a);
    packet.write(`${sequence}/${i};`);
    const to = p.to === 'random' ? raw(generateKeyPair()) : raw(keyOf[p.to]);
    return encodeDerpFrame(DerpFrameType.sendPacket, to, packet);
  }
  if (p.kind === 'frame') return encodeDerpFrame(p.type as DerpFrameType, p.payload);
  return Buffer.from(p.bytes);
}

function upgrade(): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const req = request(derpUrl, { headers: { connection: 'Upgrade', upgrade: 'DERP' } });
    req.once('error', reject);
    req.once('response', (res) => reject(new Error(`upgrade refused: ${res.statusCode}`)));
    req.once('upgrade', (_res, socket, head) => {
      if (head.length > 0) socket.unshift(head);
      resolve(socket);
    });
    req.end();
  });
}

/**
 * Sends the stream in the given cuts, then a Ping; resolves with 'pong', 'closed' or 'timeout'
 * (after `waitMs`: an edited stream may end inside a frame, which then swallows the Ping).
 */
async function converse(
  parts: Part[],
  edits: Parameters<typeof applyEdits>[1] | null,
  cuts: number[],
  waitMs: number,
) {
  const socket = await upgrade();
  const reader = new DerpFrameReader(() => 1 << 20);
  const frames: { type: number; payload: Buffer }[] = [];
  let closed = false;
  socket.on('data', (c: Buffer) => {
    reader.push(c);
    for (let f = reader.next(); f !== null; f = reader.next())
      frames.push({ type: f.type, payload: f.payload });
  });
  socket.on('error', () => {});
  socket.on('close', () => {
    closed = true;
  });
  for (let i = 0; i < 500 && frames.length === 0 && !closed; i++) await new Promise((r) => setTimeout(r, 2));
  const greeting = frames[0];
  if (greeting === undefined || greeting.type !== DerpFrameType.serverKey) {
    socket.destroy();
    return { outcome: 'no greeting' as const, encoded: [] as Buffer[], stream: Buffer.alloc(0) };
  }
  const serverKey = new Uint8Array(greeting.payload.subarray(8, 40));
  const encoded = parts.map((p, i) => encode(p, serverKey, i));
  let stream: Uint8Array = Buffer.concat(encoded);
  if (edits) stream = applyEdits(stream, edits);
  let at = 0;
  for (const cut of [...cuts.map((c) => c % (stream.length + 1)).sort((x, y) => x - y), stream.length]) {
    if (cut > at) socket.write(stream.subarray(at, cut));
    at = Math.max(at, cut);
  }
  const ping = Buffer.from(`p${String(sequence).padStart(7, '0')}`);
  socket.write(encodeDerpFrame(DerpFrameType.ping, ping));
  let outcome: 'pong' | 'closed' | 'timeout' = 'timeout';
  for (const end = Date.now() + waitMs; Date.now() < end; ) {
    if (frames.some((f) => f.type === DerpFrameType.pong && f.payload.equals(ping))) {
      outcome = 'pong';
      break;
    }
    if (closed) {
      outcome = 'closed';
      break;
    }
    await new Promise((r) => setTimeout(r, 2));
  }
  socket.destroy();
  // All the connection carried: an edited stream may end inside a frame that the Ping completes.
  return { outcome, encoded, stream: Buffer.concat([stream, encodeDerpFrame(DerpFrameType.ping, ping)]) };
}

it('DERP stream: only whole SendPacket frames to B reach B, from A; the model decides open or closed', async () => {
  const login: Part = { kind: 'login', as: 'A', sealedBy: 'A', json: '{"version":2}' };
  const input = fc.record({
    lead: fc.boolean(),
    parts: fc.array(part, { minLength: 1, maxLength: 4 }),
    edits: fc.option(byteEdits, { freq: 4 }),
    cuts: fc.array(fc.nat(), { maxLength: 3 }),
  });
  const stats = await fuzzEntry('relay DERP stream', input, async (x): Promise<Verdict> => {
    sequence++;
    const parts = x.lead ? [login, ...x.parts] : x.parts;
    // Streams with byte edits or raw bytes are judged by the B oracle alone.
    const modelled = x.edits === null && !parts.some((p) => p.kind === 'bytes');
    const { outcome, encoded, stream } = await converse(parts, x.edits, x.cuts, modelled ? 5_000 : 100);
    if (outcome === 'no greeting') return crash('the relay sent no ServerKey to a new connection');
    if (outcome === 'timeout' && modelled)
      return crash('the relay answered neither the Ping nor with a close');
    // Every whole SendPacket frame to B in the stream as sent (edits included) may reach B.
    for (
      let at = stream.indexOf(DerpFrameType.sendPacket);
      at >= 0;
      at = stream.indexOf(DerpFrameType.sendPacket, at + 1)
    ) {
      if (at + 37 > stream.length) break;
      const length = stream.readUInt32BE(at + 1);
      if (length >= 32 && at + 5 + length <= stream.length && stream.subarray(at + 5, at + 37).equals(raw(B)))
        sentToB.add(stream.subarray(at + 37, at + 5 + length).toString('latin1'));
    }
    let verdict: Verdict = outcome === 'pong' ? accepted() : refused;
    if (modelled) {
      const m = model(parts, encoded);
      if (m.open !== (outcome === 'pong'))
        return crash(
          `the model says ${m.open ? 'open' : 'closed'}, the relay ${outcome === 'pong' ? 'answered' : 'closed'}`,
        );
      expected += m.toB;
      for (let i = 0; i < 500 && received.length < expected; i++) await new Promise((r) => setTimeout(r, 5));
      if (received.length < expected) return crash(`B got ${received.length} of ${expected} packets`);
    }
    for (const r of received.slice(checked)) {
      if (r.from !== A.publicKey)
        verdict = accepted(`B got a packet from ${r.from}, which cannot log in here`);
      else if (!sentToB.has(r.packet.toString('latin1')))
        verdict = accepted('B got a packet that no input sent to it in a whole SendPacket frame');
    }
    checked = received.length;
    expected = Math.max(expected, received.length);
    return verdict;
  });
  expect(stats.acceptedInvalid + stats.crashes).toBe(0);
});

// ── STUN ──

const udp = createSocket('udp4');
beforeAll(async () => {
  await new Promise<void>((resolve) => udp.bind(0, '127.0.0.1', resolve));
});
afterAll(() => udp.close());
const answers: Buffer[] = [];
udp.on('message', (m) => answers.push(m));

/** An independent reading of RFC 5389 §6 and §15.5 for a Binding request. */
function isBindingRequest(b: Buffer): boolean {
  if (b.length < 20 || b.length > 1024 || b.readUInt16BE(0) !== 1 || b.readUInt32BE(4) !== 0x2112a442)
    return false;
  if (b.readUInt16BE(2) !== b.length - 20 || b.length % 4 !== 0) return false;
  for (let at = 20; at < b.length; ) {
    if (at + 4 > b.length) return false;
    const len = b.readUInt16BE(at + 2);
    const next = at + 4 + len + ((4 - (len % 4)) % 4);
    if (next > b.length) return false;
    if (b.readUInt16BE(at) === 0x8028) {
      if (len !== 4 || next !== b.length) return false;
      if ((crc32(b.subarray(0, at)) ^ 0x5354554e) >>> 0 !== b.readUInt32BE(at + 4)) return false;
    }
    at = next;
  }
  return true;
}

function tailscaleRequest(tx: Uint8Array): Buffer {
  const head = Buffer.alloc(32);
  head.writeUInt16BE(1, 0);
  head.writeUInt16BE(20, 2);
  head.writeUInt32BE(0x2112a442, 4);
  head.set(tx, 8);
  head.writeUInt16BE(0x8022, 20);
  head.writeUInt16BE(8, 22);
  head.write('tailnode', 24);
  const fp = Buffer.alloc(8);
  fp.writeUInt16BE(0x8028, 0);
  fp.writeUInt16BE(4, 2);
  fp.writeUInt32BE((crc32(head) ^ 0x5354554e) >>> 0, 4);
  return Buffer.concat([head, fp]);
}

it('STUN: answers exactly the well-formed Binding requests, with the sender address', async () => {
  const datagram = fc.record({
    tx: fc.uint8Array({ minLength: 12, maxLength: 12 }),
    random: fc.option(fc.uint8Array({ maxLength: 120 }), { freq: 4 }),
    edits: fc.option(byteEdits, { freq: 2 }),
  });
  const stats = await fuzzEntry('relay STUN', datagram, async (d): Promise<Verdict> => {
    const genuine = d.random ?? tailscaleRequest(d.tx);
    const bytes = Buffer.from(d.edits ? applyEdits(genuine, d.edits) : genuine);
    const s0 = relay.stun?.stats() ?? { answered: 0, ignored: 0, limited: 0 };
    const before = answers.length;
    udp.send(bytes, relay.stunPort as number, '127.0.0.1');
    const done = () => {
      const s = relay.stun?.stats() ?? s0;
      return s.answered + s.ignored + s.limited > s0.answered + s0.ignored + s0.limited;
    };
    for (let i = 0; i < 500 && !done(); i++) await new Promise((r) => setTimeout(r, 2));
    if (!done()) return crash('the STUN responder accounted for no datagram');
    const s1 = relay.stun?.stats() ?? s0;
    if (s1.limited > s0.limited) return refused; // the budget spoke, not the parser
    const wellFormed = isBindingRequest(bytes);
    if (s1.answered > s0.answered) {
      for (let i = 0; i < 500 && answers.length === before; i++) await new Promise((r) => setTimeout(r, 2));
      const answer = answers[before];
      if (!wellFormed) return accepted('answered a datagram that is no well-formed Binding request');
      const want = bindingResponse(bytes.subarray(8, 20), '127.0.0.1', udp.address().port);
      if (answer === undefined || !answer.equals(want))
        return accepted('the answer is not the sender address');
      return accepted();
    }
    if (wellFormed) return crash('a well-formed Binding request was ignored');
    return refused;
  });
  expect(stats.acceptedInvalid + stats.crashes).toBe(0);
});
