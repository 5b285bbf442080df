import { describe, expect, it } from 'vitest';
import { localEndpoints } from './local-endpoints.js';

describe('local endpoints', () => {
  it('reports usable addresses with the WireGuard port, sorted and without duplicates', () => {
    const source = () => [
      { iface: 'eth0', address: '198.18.0.5' },
      { iface: 'eth0', address: '169.254.3.3' },
      { iface: 'eth0', address: 'fe80::1' },
      { iface: 'eth1', address: 'fd00::5' },
      { iface: 'eth1', address: '198.18.0.5' },
      { iface: 'lo', address: '127.0.0.1' },
      { iface: 'lo', address: '::1' },
      { iface: 'weft0', address: '100.64.0.1' },
      { iface: 'weft0', address: 'fd7a:115c:a1e0::1' },
      { iface: 'eth2', address: '192.0.2.7' },
    ];
    expect(localEndpoints(source, 'weft0', 41641)).toEqual([
      '192.0.2.7:41641',
      '198.18.0.5:41641',
      '[fd00::5]:41641',
    ]);
  });
});
