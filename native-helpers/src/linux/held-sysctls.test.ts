import { describe, expect, it } from 'vitest';
import type { Logger } from '../log.js';
import { HeldSysctls, sysctlsFor } from './held-sysctls.js';
import type { Sysctl } from './sysctl.js';

const log: Logger = { info: () => {}, warn: () => {}, error: () => {} };

function fake(values: Record<string, string>): Sysctl & { values: Map<string, string> } {
  const map = new Map(Object.entries(values));
  return {
    values: map,
    read: async (k) => map.get(k) as string,
    write: async (k, v) => {
      map.set(k, v);
    },
  };
}

describe('held kernel parameters', () => {
  it('sets on first need, restores after the last holder, and keeps what was already set', async () => {
    const sysctl = fake({ 'net.ipv4.ip_forward': '0', 'net.ipv6.conf.all.forwarding': '1' });
    const held = new HeldSysctls(sysctl, log);
    const both = new Map([
      ['net.ipv4.ip_forward', '1'],
      ['net.ipv6.conf.all.forwarding', '1'],
    ]);
    await held.hold('wg0', both);
    await held.hold('wg1', both);
    expect(sysctl.values.get('net.ipv4.ip_forward')).toBe('1');
    await held.release('wg0');
    expect(sysctl.values.get('net.ipv4.ip_forward')).toBe('1');
    await held.hold('wg1', new Map([['net.ipv6.conf.all.forwarding', '1']]));
    expect(sysctl.values.get('net.ipv4.ip_forward')).toBe('0');
    await held.release('wg1');
    // It was on before Weft came: it stays on.
    expect(sysctl.values.get('net.ipv6.conf.all.forwarding')).toBe('1');
    expect(held.held()).toEqual([]);
  });

  it('leaves a parameter someone else changed meanwhile', async () => {
    const sysctl = fake({ 'net.ipv4.ip_forward': '0' });
    const held = new HeldSysctls(sysctl, log);
    await held.hold('wg0', new Map([['net.ipv4.ip_forward', '1']]));
    sysctl.values.set('net.ipv4.ip_forward', '2');
    await held.release('wg0');
    expect(sysctl.values.get('net.ipv4.ip_forward')).toBe('2');
  });

  it('says which parameters a state needs', () => {
    expect([...sysctlsFor({ router: { routes: ['198.51.100.0/24'] } }).keys()]).toEqual([
      'net.ipv4.ip_forward',
    ]);
    expect([...sysctlsFor({ router: { routes: ['0.0.0.0/0', '::/0'] } }).keys()]).toEqual([
      'net.ipv4.ip_forward',
      'net.ipv6.conf.all.forwarding',
    ]);
    expect([...sysctlsFor({ exitNode: {} }).keys()]).toEqual(['net.ipv4.conf.all.src_valid_mark']);
    expect(sysctlsFor({}).size).toBe(0);
  });
});
