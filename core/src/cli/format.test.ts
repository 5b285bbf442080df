import type { Status } from '@weft/protocol';
import { describe, expect, it } from 'vitest';
import { formatAgo, formatBytes, formatStatus } from './format.js';

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
