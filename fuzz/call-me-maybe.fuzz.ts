import { type CallMeMaybe, generateKeyPair, openCallMeMaybe, sealCallMeMaybe } from '@weft/protocol';
import fc from 'fast-check';
import { expect, it } from 'vitest';
import { accepted, applyEdits, byteEdits, fuzzEntry, refused, type Verdict } from './run.js';

// Call-me-maybe asks as the relay delivers them (protocol/src/call-me-maybe.ts): genuine ones from
// A to B, edited ones, ones sealed by a stranger, and raw bytes. Oracle: B accepts exactly the
// unedited genuine asks sealed by A for B with a counter newer than the last accepted; what it
// accepts is the message A sealed.

const A = generateKeyPair();
const B = generateKeyPair();
const M = generateKeyPair(); // a stranger (or a relay) trying to forge
const NOW = 1_800_000_000_000;

const candidate = fc
  .tuple(fc.integer({ min: 0, max: 255 }), fc.integer({ min: 1, max: 65535 }))
  .map(([b, port]) => `198.18.0.${b}:${port}`);

const input = fc.record({
  sealer: fc.constantFrom('A', 'M'),
  counter: fc.integer({ min: NOW - 120_000, max: NOW + 120_000 }),
  candidates: fc.array(candidate, { maxLength: 16 }),
  edits: fc.option(byteEdits, { nil: undefined }),
  raw: fc.option(fc.uint8Array({ maxLength: 300 }), { nil: undefined, freq: 4 }),
});

it('call-me-maybe asks: only genuine, fresh asks from the peer are accepted', async () => {
  let last = 0;
  const stats = await fuzzEntry('call-me-maybe', input, async (i): Promise<Verdict> => {
    const msg: CallMeMaybe = {
      type: 'callMeMaybe',
      from: A.publicKey,
      to: B.publicKey,
      counter: i.counter,
      candidates: i.candidates,
    };
    const sealed = sealCallMeMaybe(msg, (i.sealer === 'A' ? A : M).privateKey);
    const packet = i.raw ?? (i.edits ? applyEdits(sealed, i.edits) : sealed);
    const opened = openCallMeMaybe({
      packet,
      source: A.publicKey,
      nodeKey: B.publicKey,
      nodePrivateKey: B.privateKey,
      lastCounter: last,
      now: NOW,
    });
    if (!opened.ok) return refused;
    const genuine = i.sealer === 'A' && Buffer.from(packet).equals(Buffer.from(sealed)) && i.counter > last;
    const fresh = Math.abs(i.counter - NOW) <= 60_000;
    last = opened.msg.counter;
    if (!genuine || !fresh) return accepted('accepted an ask that is not a genuine fresh one from A');
    if (JSON.stringify(opened.msg) !== JSON.stringify(msg))
      return accepted('accepted another message than A sealed');
    return accepted();
  });
  expect(stats.acceptedInvalid + stats.crashes).toBe(0);
});
