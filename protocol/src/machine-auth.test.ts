import { describe, expect, it } from 'vitest';
import { generateKeyPair, signMachineRequest, verifyMachineRequest } from './machine-auth.js';

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
