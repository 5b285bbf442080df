import { describe, expect, it } from 'vitest';
import {
  generateKeyPair,
  machineSigner,
  sharedSecret,
  signMachineRequest,
  verifyMachineRequest,
} from './machine-auth.js';

describe('machine request signatures', () => {
  const control = generateKeyPair();
  const machine = generateKeyPair();
  const sign = (body: string, now?: number) =>
    signMachineRequest({
      machinePrivateKey: machine.privateKey,
      controlPublicKey: control.publicKey,
      method: 'POST',
      path: '/machine/register',
      body,
      now,
    });
  const verify = (header: string, body: string, path = '/machine/register') =>
    verifyMachineRequest({ header, controlPrivateKey: control.privateKey, method: 'POST', path, body });

  it('proves possession of the machine key', () => {
    expect(verify(sign('{"a":1}'), '{"a":1}')).toMatchObject({ machineKey: machine.publicKey });
  });

  it('signs as signMachineRequest with a signer made once per machine, a fresh nonce each time', () => {
    const signer = machineSigner(machine.privateKey, control.publicKey);
    const req = { method: 'POST', path: '/machine/register', body: '{}' };
    const [a, b] = [verify(signer(req), '{}'), verify(signer(req), '{}')];
    expect(a).toMatchObject({ machineKey: machine.publicKey });
    if (!('nonce' in a) || !('nonce' in b)) throw new Error('verification failed');
    expect(a.nonce).not.toBe(b.nonce);
  });

  it("uses the verifier's own secret function when given one, and refuses when it throws", () => {
    const header = sign('{}');
    const args = {
      header,
      controlPrivateKey: control.privateKey,
      method: 'POST',
      path: '/machine/register',
      body: '{}',
    };
    const asked: string[] = [];
    const secret = (key: string) => {
      asked.push(key);
      return sharedSecret(control.privateKey, key);
    };
    expect(verifyMachineRequest({ ...args, secret })).toMatchObject({ machineKey: machine.publicKey });
    expect(asked).toEqual([machine.publicKey]);
    expect(verifyMachineRequest({ ...args, secret: () => new Uint8Array(32) })).toEqual({
      error: 'bad machine signature',
    });
    const refuse = () => {
      throw new Error('no secret');
    };
    expect(verifyMachineRequest({ ...args, secret: refuse })).toEqual({ error: 'invalid machine key' });
  });

  it('refuses other spellings of the same machine key (top bit set, u past the prime, padding bits), which give the same secret', () => {
    const header = sign('{}');
    expect(verify(header, '{}')).toMatchObject({ machineKey: machine.publicKey });
    const [key, ...rest] = header.split('.');
    const bytes = Buffer.from(key as string, 'base64');
    const topBit = Buffer.from(bytes);
    topBit[31] = (topBit[31] as number) ^ 0x80;
    // The last base64 character carries two padding bits: set one, the bytes stay the same.
    const last = (key as string).at(-2) as string;
    const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/';
    const padded = `${(key as string).slice(0, -2)}${alphabet[alphabet.indexOf(last) ^ 1]}=`;
    expect(Buffer.from(padded, 'base64').equals(bytes)).toBe(true);
    for (const spelling of [topBit.toString('base64'), padded]) {
      expect(verify([spelling, ...rest].join('.'), '{}')).toEqual({
        error: 'machine key not in canonical form',
      });
    }
    // u = p + 9 (the base point past the prime): 32 bytes, top bit clear, still refused.
    const pastPrime = Buffer.alloc(32, 0xff);
    pastPrime[0] = 0xf6; // p = 2^255 - 19 is ed ff … ff 7f, little-endian
    pastPrime[31] = 0x7f;
    expect(verify([pastPrime.toString('base64'), ...rest].join('.'), '{}')).toEqual({
      error: 'machine key not in canonical form',
    });
  });

  it('gives every signature its own nonce, covered by the MAC, for the verifier to remember', () => {
    const [first, second] = [sign('{}'), sign('{}')];
    const a = verify(first, '{}');
    const b = verify(second, '{}');
    if (!('nonce' in a) || !('nonce' in b)) throw new Error('verification failed');
    expect(a.nonce).not.toBe(b.nonce);
    const parts = first.split('.');
    parts[2] = second.split('.')[2] as string;
    expect(verify(parts.join('.'), '{}')).toEqual({ error: 'bad machine signature' });
  });

  it('refuses a changed body, another path, an old signature, and a forged key', () => {
    expect(verify(sign('{"a":1}'), '{"a":2}')).toHaveProperty('error');
    expect(verify(sign('{}'), '{}', '/machine/other')).toHaveProperty('error');
    expect(verify(sign('{}', Date.now() - 10 * 60_000), '{}')).toHaveProperty('error');
    const other = generateKeyPair();
    const forged = sign('{}').replace(machine.publicKey, other.publicKey);
    expect(verify(forged, '{}')).toHaveProperty('error');
    expect(verify('garbage', '{}')).toHaveProperty('error');
  });
});
