import { generateKeyPair, type InterfaceStatus, type NetMap, Status } from '@weft/protocol';
import { describe, expect, it } from 'vitest';
import { nodeView } from '../testing/standin-control.js';
import { buildStatus } from './status.js';

const [selfKey, a, b] = [generateKeyPair(), generateKeyPair(), generateKeyPair()].map((k) => k.publicKey) as [
  string,
  string,
  string,
];
const netmap: NetMap = {
  self: nodeView(1, selfKey, { name: 'laptop' }),
  peers: [nodeView(3, b, { name: 'zeta', online: false }), nodeView(2, a, { name: 'alpha' })],
  packetFilter: [],
  tailnetRanges: ['100.64.0.0/10'],
};
const iface: InterfaceStatus = {
  name: 'weft0',
  exists: true,
  backend: 'wireguard-go',
  publicKey: selfKey,
  listenPort: 41641,
  addresses: ['100.64.0.1/32'],
  peers: [
    {
      publicKey: a,
      endpoint: '198.18.0.2:41641',
      allowedIPs: [],
      latestHandshake: 1_700_000_000,
      rxBytes: 5,
      txBytes: 7,
    },
    { publicKey: b, endpoint: null, allowedIPs: [], latestHandshake: 0, rxBytes: 0, txBytes: 0 },
  ],
};
const base = { controlUrl: 'http://198.18.0.1', authUrl: null, netmap, iface, health: [] };

describe('status', () => {
  it('merges netmap facts with the live interface, peers sorted by name', () => {
    const st = buildStatus({ ...base, backendState: 'Running' });
    expect(Status.safeParse(st).success).toBe(true);
    expect(st.self).toEqual({
      id: 'n1',
      name: 'laptop',
      addresses: ['100.64.0.1', 'fd7a:115c:a1e0::1'],
      keyExpiry: null,
      os: 'linux',
    });
    expect(st.user).toEqual({ loginName: 'alice@example.com', displayName: 'alice@example.com' });
    const tagged = { ...netmap, self: { ...netmap.self, user: null, tags: ['tag:server'] } };
    expect(buildStatus({ ...base, backendState: 'Running', netmap: tagged }).user).toBeNull();
    expect(buildStatus({ ...base, backendState: 'NeedsLogin' }).user).toBeNull();
    expect(st.peers.map((p) => p.name)).toEqual(['alpha', 'zeta']);
    expect(st.peers[0]).toMatchObject({
      online: true,
      endpoint: '198.18.0.2:41641',
      lastHandshake: '2023-11-14T22:13:20.000Z',
      rxBytes: 5,
      txBytes: 7,
    });
    // A zero handshake time is WireGuard's "never".
    expect(st.peers[1]).toMatchObject({ online: false, endpoint: null, lastHandshake: null, rxBytes: 0 });
  });

  it('shows netmap peers without live figures when the interface is unknown', () => {
    const st = buildStatus({ ...base, iface: null, backendState: 'Starting' });
    expect(st.peers[0]).toMatchObject({ name: 'alpha', endpoint: null, lastHandshake: null, txBytes: 0 });
  });

  it('shows this device but no peers when stopped, and nothing when logged out', () => {
    expect(buildStatus({ ...base, backendState: 'Stopped' })).toMatchObject({
      self: { name: 'laptop' },
      peers: [],
    });
    expect(buildStatus({ ...base, backendState: 'NeedsLogin' })).toMatchObject({ self: null, peers: [] });
  });
});
