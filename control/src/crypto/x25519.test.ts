import { x25519 } from '@noble/curves/ed25519.js';
import { generateKeyPair, sharedSecret } from '@weft/protocol';
import { describe, expect, it } from 'vitest';
import {
  privateKeyLoads,
  x25519Public,
  x25519RandomPrivate,
  x25519Shared,
  x25519SharedBase64,
} from './x25519.js';

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

describe('x25519 on keys as WireGuard base64 (machine signatures)', () => {
  it('gives the same secret as the protocol package, either way round', () => {
    const control = generateKeyPair();
    for (let i = 0; i < 50; i++) {
      const machine = generateKeyPair();
      const native = x25519SharedBase64(control.privateKey, machine.publicKey);
      expect(Buffer.from(native).toString('hex')).toBe(
        Buffer.from(sharedSecret(control.privateKey, machine.publicKey)).toString('hex'),
      );
      expect(Buffer.from(x25519SharedBase64(machine.privateKey, control.publicKey)).equals(native)).toBe(
        true,
      );
    }
  });

  it('loads control private key once across requests, and a different private key anew', () => {
    const control = generateKeyPair();
    const other = generateKeyPair();
    const machine = generateKeyPair();
    const before = privateKeyLoads();
    x25519SharedBase64(control.privateKey, machine.publicKey);
    x25519SharedBase64(control.privateKey, generateKeyPair().publicKey);
    expect(privateKeyLoads() - before).toBe(1);
    const mine = x25519SharedBase64(other.privateKey, machine.publicKey);
    expect(Buffer.from(mine).toString('hex')).toBe(
      Buffer.from(sharedSecret(other.privateKey, machine.publicKey)).toString('hex'),
    );
  });

  it('refuses a key that gives no secret and a key of the wrong length', () => {
    const control = generateKeyPair();
    expect(() => x25519SharedBase64(control.privateKey, Buffer.alloc(32).toString('base64'))).toThrow();
    expect(() => x25519SharedBase64(control.privateKey, Buffer.alloc(31).toString('base64'))).toThrow(
      /32 bytes/,
    );
    expect(() => x25519SharedBase64(control.privateKey, 'not base64 at all!')).toThrow(/32 bytes/);
  });
});
