import { describe, expect, it } from 'vitest';
import { parseLink, parseRoutes } from './ip.js';

// Outputs recorded from iproute2 6.1 on a wireguard-go interface.

const LINK = JSON.stringify([
  {
    ifindex: 2,
    ifname: 'wg0',
    flags: ['POINTOPOINT', 'MULTICAST', 'NOARP', 'UP', 'LOWER_UP'],
    mtu: 1280,
    linkinfo: { info_kind: 'tun', info_data: { type: 'tun', pi: true } },
    addr_info: [
      { family: 'inet', local: '100.64.0.1', prefixlen: 10, scope: 'global', label: 'wg0' },
      { family: 'inet6', local: 'fd00:0:0::1', prefixlen: 64, scope: 'global', nodad: true },
      { family: 'inet6', local: 'fe80::fd06:39c5:2c38:296d', prefixlen: 64, scope: 'link' },
    ],
  },
]);

describe('parseLink', () => {
  it('reads kind, MTU, state and the global addresses in canonical form', () => {
    expect(parseLink(LINK)).toEqual({
      name: 'wg0',
      kind: 'tun',
      mtu: 1280,
      up: true,
      addresses: ['100.64.0.1/10', 'fd00::1/64'],
    });
  });

  it('reads a down link without addresses or linkinfo', () => {
    const link = JSON.stringify([
      { ifname: 'wg0', flags: ['POINTOPOINT', 'NOARP'], mtu: 1420, addr_info: [] },
    ]);
    expect(parseLink(link)).toEqual({ name: 'wg0', kind: null, mtu: 1420, up: false, addresses: [] });
  });

  it('refuses output it does not understand', () => {
    expect(() => parseLink('[]')).toThrow(/unexpected output/);
  });
});

describe('parseRoutes', () => {
  it('marks kernel routes as present but not ours, and reads default and host routes', () => {
    const v4 = JSON.stringify([
      { dst: 'default', scope: 'link', flags: [] },
      { dst: '100.64.0.0/10', protocol: 'kernel', scope: 'link', prefsrc: '100.64.0.1', flags: [] },
      { dst: '100.100.0.5', scope: 'link', flags: [] },
      { dst: '224.0.0.0/4', scope: 'link', flags: [] },
      { type: 'broadcast', dst: '198.18.0.255', protocol: 'kernel', flags: [] },
    ]);
    expect(parseRoutes(v4, 4)).toEqual([
      { dst: '0.0.0.0/0', kernel: false, manageable: true },
      { dst: '100.64.0.0/10', kernel: true, manageable: false },
      { dst: '100.100.0.5/32', kernel: false, manageable: true },
      { dst: '224.0.0.0/4', kernel: false, manageable: false },
      { dst: '198.18.0.255/32', kernel: true, manageable: false },
    ]);
  });

  it('ignores IPv6 link-local and multicast routes', () => {
    const v6 = JSON.stringify([
      { dst: 'fd00::/64', protocol: 'kernel', metric: 256, flags: [], pref: 'medium' },
      { dst: 'fd00:1:0::/64', metric: 1024, flags: [], pref: 'medium' },
      { dst: 'fe80::/64', metric: 1024, flags: [], pref: 'medium' },
      { type: 'multicast', dst: 'ff00::/8', protocol: 'kernel', metric: 256, flags: [] },
      { dst: 'default', metric: 1024, flags: [], pref: 'medium' },
    ]);
    expect(parseRoutes(v6, 6)).toEqual([
      { dst: 'fd00::/64', kernel: true, manageable: false },
      { dst: 'fd00:1::/64', kernel: false, manageable: true },
      { dst: 'fe80::/64', kernel: false, manageable: false },
      { dst: 'ff00::/8', kernel: true, manageable: false },
      { dst: '::/0', kernel: false, manageable: true },
    ]);
  });
});
