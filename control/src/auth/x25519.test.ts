import { generateKeyPair, sharedSecret } from '@weft/protocol';
import { describe, expect, it } from 'vitest';
import { nativeSharedSecret } from './x25519.js';

describe('native X25519', () => {
  it('gives the same secret as the protocol package, for many key pairs', () => {
    const control = generateKeyPair();
    for (let i = 0; i < 50; i++) {
      const machine = generateKeyPair();
      const native = nativeSharedSecret(control.privateKey, machine.publicKey);
      expect(Buffer.from(native).toString('hex')).toBe(
        Buffer.from(sharedSecret(control.privateKey, machine.publicKey)).toString('hex'),
      );
      // Either side: control's private key with the machine's public, or the other way round.
      expect(Buffer.from(nativeSharedSecret(machine.privateKey, control.publicKey)).equals(native)).toBe(
        true,
      );
    }
  });

  it('refuses a key that gives no secret and a key of the wrong length', () => {
    const control = generateKeyPair();
    expect(() => nativeSharedSecret(control.privateKey, Buffer.alloc(32).toString('base64'))).toThrow();
    expect(() => nativeSharedSecret(control.privateKey, Buffer.alloc(31).toString('base64'))).toThrow(
      /32 bytes/,
    );
  });
});
