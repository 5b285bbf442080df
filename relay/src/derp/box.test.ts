import { x25519 } from '@noble/curves/ed25519.js';
import { describe, expect, it } from 'vitest';
import { openBox, sealBox } from './box.js';

const bytes = (n: number, from: number) => Uint8Array.from({ length: n }, (_, i) => from + i);
const a = bytes(32, 1);
const b = bytes(32, 0x80);
const aPub = x25519.getPublicKey(a);
const bPub = x25519.getPublicKey(b);
const message = new TextEncoder().encode('{"version":2}');

describe('NaCl box (DERP ClientInfo/ServerInfo)', () => {
  it("opens what Go's nacl/box sealed (golang.org/x/crypto v0.54.0, box.Seal from a to b)", () => {
    const fromGo = Buffer.from(
      '404142434445464748494a4b4c4d4e4f5051525354555657d79c604271dd712754f175c4f3d90e10aabff780ce9e4399be2b0042fb',
      'hex',
    );
    expect(openBox(b, aPub, fromGo)).toEqual(message);
  });

  it('round-trips with a fresh nonce each time', () => {
    const one = sealBox(a, bPub, message);
    const two = sealBox(a, bPub, message);
    expect(Buffer.from(one.subarray(0, 24)).equals(Buffer.from(two.subarray(0, 24)))).toBe(false);
    expect(openBox(b, aPub, one)).toEqual(message);
    expect(openBox(b, aPub, two)).toEqual(message);
  });

  it('refuses a changed byte, a wrong sender key, a short box and a low-order key', () => {
    const sealed = sealBox(a, bPub, message);
    for (const at of [0, 24, 40, sealed.length - 1]) {
      const bad = Uint8Array.from(sealed);
      bad[at] = (bad[at] as number) ^ 1;
      expect(openBox(b, aPub, bad)).toBeNull();
    }
    expect(openBox(b, x25519.getPublicKey(bytes(32, 7)), sealed)).toBeNull();
    expect(openBox(b, aPub, sealed.subarray(0, 39))).toBeNull();
    expect(openBox(b, new Uint8Array(32), sealed)).toBeNull();
  });
});
