import type { Status } from '@weft/protocol';
import { describe, expect, it } from 'vitest';
import { formatAgo, formatBytes, formatDnsStatus, formatStatus } from './format.js';

const now = Date.parse('2025-01-01T12:00:00Z');
const running: Status = {
  backendState: 'Running',
  controlUrl: 'http://198.18.0.1:8080',
  authUrl: null,
  self: { id: 'n1', name: 'laptop', addresses: ['100.64.0.1', 'fd7a:115c:a1e0::1'] },
  peers: [
    {
      id: 'n2',
      name: 'server',
      user: null,
      tags: ['tag:web'],
      os: 'linux',
      addresses: ['100.64.0.2'],
      online: true,
      lastSeen: null,
      endpoint: '198.18.0.2:41641',
      lastHandshake: '2025-01-01T11:59:30Z',
      rxBytes: 1536,
      txBytes: 100,
    },
  ],
  health: [],
};

describe('weft status output', () => {
  it('prints this device and a table of peers', () => {
    expect(formatStatus(running, now)).toBe(
      [
        'laptop  100.64.0.1, fd7a:115c:a1e0::1  (this device)',
        '',
        'NAME    ADDRESSES   ONLINE  ENDPOINT          HANDSHAKE  RX       TX',
        'server  100.64.0.2  yes     198.18.0.2:41641  30s ago    1.5 KiB  100 B',
      ].join('\n'),
    );
  });

  it('says why a relayed peer is relayed', () => {
    const peer = running.peers[0] as Status['peers'][number];
    const relayed: Status = {
      ...running,
      peers: [
        {
          ...peer,
          endpoint: '127.0.0.1:40001',
          path: 'relay',
          relayRegion: 'lab1',
          relayReason: 'peer’s NAT maps per destination',
        },
      ],
    };
    const out = formatStatus(relayed, now).split('\n');
    expect(out[3]).toContain('relay (lab1)');
    expect(out.at(-1)).toBe('server is relayed: peer’s NAT maps per destination');
  });

  it('says what to do when logged out or stopped, and lists health problems', () => {
    expect(formatStatus({ ...running, backendState: 'NeedsLogin', self: null, peers: [] })).toMatch(
      /weft up/,
    );
    const stopped = formatStatus({
      ...running,
      backendState: 'Stopped',
      peers: [],
      health: ['control unreachable'],
    });
    expect(stopped).toMatch(/stopped/);
    expect(stopped).toMatch(/Health:\n {2}- control unreachable/);
  });

  it('formats sizes and ages', () => {
    expect(formatBytes(0)).toBe('0 B');
    expect(formatBytes(5 * 1024 * 1024)).toBe('5.0 MiB');
    expect(formatAgo(null, now)).toBe('-');
    expect(formatAgo('2025-01-01T10:00:00Z', now)).toBe('2h ago');
  });
});

describe('weft dns status output', () => {
  it('shows the settings, the resolver, the counters and the names; and tailnet names in weft status', () => {
    const text = formatDnsStatus({
      settings: {
        magicDns: true,
        baseDomain: 'weft.internal',
        nameservers: [],
        splitDns: { 'corp.example': ['198.51.100.53'] },
        searchDomains: [],
        extraRecords: [],
      },
      useTailnetDns: true,
      resolver: { addresses: ['100.64.0.1'], port: 40053 },
      osResolvers: ['198.51.100.1'],
      records: [{ name: 'laptop.weft.internal', addresses: ['100.64.0.1'] }],
      stats: { queries: 3, answeredLocally: 2, forwarded: 1, cacheHits: 0, malformed: 0, failed: 0 },
    });
    expect(text.split('\n')).toEqual([
      'Tailnet DNS: on',
      'MagicDNS: on, names end in .weft.internal',
      "Nameservers: none set; the OS's own (198.51.100.1)",
      'Split DNS: corp.example -> 198.51.100.53',
      'Resolver: 100.100.100.100 (listening on 100.64.0.1 port 40053)',
      'Queries: 3 (2 answered locally, 1 forwarded, 0 from cache, 0 failed, 0 malformed)',
      '',
      expect.stringMatching(/^NAME +ADDRESSES$/),
      expect.stringMatching(/^laptop\.weft\.internal +100\.64\.0\.1$/),
    ]);
    const named: Status = {
      ...running,
      self: { ...(running.self as NonNullable<Status['self']>), dnsName: 'laptop.weft.internal' },
      peers: running.peers.map((p) => ({ ...p, dnsName: `${p.name}.weft.internal` })),
    };
    const out = formatStatus(named, now);
    expect(out).toMatch(/^laptop\.weft\.internal {2}100\.64\.0\.1/);
    expect(out).toMatch(/\nserver\.weft\.internal +100\.64\.0\.2 /);
  });
});
