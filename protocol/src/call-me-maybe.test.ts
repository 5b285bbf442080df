import { describe, expect, it } from 'vitest';
import {
  CALL_ME_MAYBE_MAX_AGE_MS,
  type CallMeMaybe,
  isCallMeMaybe,
  openCallMeMaybe,
  sealCallMeMaybe,
} from './call-me-maybe.js';
import { generateKeyPair } from './machine-auth.js';

const a = generateKeyPair();
const b = generateKeyPair();
const mallory = generateKeyPair();
const now = 1_800_000_000_000;
const msg: CallMeMaybe = {
  type: 'callMeMaybe',
  from: a.publicKey,
  to: b.publicKey,
  counter: now,
  candidates: ['198.18.0.101:41641', '[fd00::5]:41641'],
};
const open = (packet: Uint8Array, over: Partial<Parameters<typeof openCallMeMaybe>[0]> = {}) =>
  openCallMeMaybe({
    packet,
    source: a.publicKey,
    nodeKey: b.publicKey,
    nodePrivateKey: b.privateKey,
    lastCounter: 0,
    now,
    ...over,
  });

describe('call me maybe', () => {
  it('opens what the peer sealed, and tells it from a WireGuard packet', () => {
    const packet = sealCallMeMaybe(msg, a.privateKey);
    expect(isCallMeMaybe(packet)).toBe(true);
    expect(isCallMeMaybe(new Uint8Array([1, 0, 0, 0, ...new Array(144).fill(7)]))).toBe(false);
    expect(open(packet)).toEqual({ ok: true, msg });
  });

  it('refuses a forgery: sealed by another key, or any byte changed', () => {
    const forged = sealCallMeMaybe(msg, mallory.privateKey);
    expect(open(forged)).toMatchObject({ ok: false, error: expect.stringContaining('bad tag') });
    const packet = sealCallMeMaybe(msg, a.privateKey);
    for (const i of [0, 12, packet.length - 3]) {
      const bad = packet.slice();
      bad[i] = (bad[i] as number) ^ 1;
      expect(open(bad).ok).toBe(false);
    }
  });

  it('refuses a message redirected to another node or from another source', () => {
    const packet = sealCallMeMaybe(msg, a.privateKey);
    expect(open(packet, { nodeKey: mallory.publicKey, nodePrivateKey: mallory.privateKey }).ok).toBe(false);
    expect(open(packet, { source: mallory.publicKey }).ok).toBe(false);
    // Sealed with the right pair key but naming someone else inside: still refused.
    const lying = sealCallMeMaybe({ ...msg, from: mallory.publicKey }, a.privateKey);
    expect(open(lying)).toMatchObject({ ok: false, error: 'keys do not match the frame' });
  });

  it('refuses a replay and a stale message', () => {
    const packet = sealCallMeMaybe(msg, a.privateKey);
    expect(open(packet, { lastCounter: now })).toMatchObject({
      ok: false,
      error: expect.stringContaining('replayed'),
    });
    expect(open(packet, { now: now + CALL_ME_MAYBE_MAX_AGE_MS + 1 })).toMatchObject({
      ok: false,
      error: expect.stringContaining('stale'),
    });
  });

  it('refuses a sealed body that is not a valid message', () => {
    const bad = sealCallMeMaybe(msg, a.privateKey);
    const truncated = bad.subarray(0, bad.length - 5);
    expect(open(truncated).ok).toBe(false);
    expect(() => sealCallMeMaybe({ ...msg, candidates: ['not an endpoint'] }, a.privateKey)).toThrow();
  });
});
