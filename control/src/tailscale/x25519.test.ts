import { x25519 } from '@noble/curves/ed25519.js';
import { describe, expect, it } from 'vitest';
import { privateKeyLoads, x25519Public, x25519RandomPrivate, x25519Shared } from './x25519.js';

// control's X25519 (node:crypto) against @noble's, the one the test client and Noise vectors use.

describe('x25519 on node:crypto', () => {
  it('agrees with @noble on public keys and shared secrets', () => {
    for (let i = 0; i < 8; i++) {
      const a = x25519RandomPrivate();
      const b = x25519.utils.randomSecretKey();
      expect(Buffer.from(x25519Public(a))).toEqual(Buffer.from(x25519.getPublicKey(a)));
      expect(Buffer.from(x25519Shared(a, x25519.getPublicKey(b)))).toEqual(
        Buffer.from(x25519.getSharedSecret(b, x25519Public(a))),
      );
    }
  });

  it('refuses a low-order public key and keys of the wrong size', () => {
    expect(() => x25519Shared(x25519RandomPrivate(), new Uint8Array(32))).toThrow();
    expect(() => x25519Public(new Uint8Array(31))).toThrow(/32 bytes/);
    expect(() => x25519Shared(x25519RandomPrivate(), new Uint8Array(33))).toThrow(/32 bytes/);
  });
});

describe('x25519 key loading', () => {
  it('loads a private key once however often it is used', () => {
    const a = x25519RandomPrivate();
    const peer = x25519.getPublicKey(x25519.utils.randomSecretKey());
    const before = privateKeyLoads();
    x25519Public(a);
    x25519Shared(a, peer);
    x25519Shared(a, peer);
    expect(privateKeyLoads() - before).toBe(1);
  });
});
