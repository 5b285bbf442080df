import type { DesiredState } from '@weft/protocol';
import { describe, expect, it } from 'vitest';
import { parseDump, peersToEmpty, renderConfig, requestedEndpoints, wgMatches } from './wg.js';

const key = (n: number) => Buffer.alloc(32, n).toString('base64');
const none = new Map<string, string>();

// As `wg show wg0 dump` prints it (tab-separated; private key first).
const DUMP = [
  [key(1), key(11), '51820', 'off'],
  [key(2), '(none)', '198.18.0.2:51820', '100.64.0.2/32,fd00::2/128', '1764112000', '1234', '5678', '25'],
  [key(3), '(none)', '(none)', '(none)', '0', '0', '0', 'off'],
  [key(4), '(none)', '[fd00::9]:4000', '198.51.100.0/24', '0', '0', '148', 'off'],
]
  .map((f) => f.join('\t'))
  .join('\n');

function state(): DesiredState {
  return {
    interface: { name: 'wg0', privateKey: key(1), listenPort: 51820, addresses: [], mtu: 1280 },
    peers: [
      {
        publicKey: key(2),
        allowedIPs: ['fd00:0::2/128', '100.64.0.2/32'],
        endpoint: '198.18.0.2:51820',
        persistentKeepalive: 25,
      },
      { publicKey: key(3), allowedIPs: [] },
      { publicKey: key(4), allowedIPs: ['198.51.100.0/24'], endpoint: '[fd00:0::9]:4000' },
    ],
    routes: [],
  };
}

describe('parseDump', () => {
  it('reads the interface and its peers; a zero handshake and (none) become null', () => {
    const dump = parseDump(`${DUMP}\n`);
    expect(dump).toMatchObject({ privateKey: key(1), publicKey: key(11), listenPort: 51820 });
    expect(dump.peers).toEqual([
      {
        publicKey: key(2),
        endpoint: '198.18.0.2:51820',
        allowedIPs: ['100.64.0.2/32', 'fd00::2/128'],
        latestHandshake: 1764112000,
        rxBytes: 1234,
        txBytes: 5678,
        persistentKeepalive: 25,
      },
      {
        publicKey: key(3),
        endpoint: null,
        allowedIPs: [],
        latestHandshake: null,
        rxBytes: 0,
        txBytes: 0,
        persistentKeepalive: 0,
      },
      {
        publicKey: key(4),
        endpoint: '[fd00::9]:4000',
        allowedIPs: ['198.51.100.0/24'],
        latestHandshake: null,
        rxBytes: 0,
        txBytes: 148,
        persistentKeepalive: 0,
      },
    ]);
  });

  it('reads a fresh device with no key', () => {
    expect(parseDump('(none)\t(none)\t53176\toff\n')).toEqual({
      privateKey: null,
      publicKey: null,
      listenPort: 53176,
      fwmark: 0,
      peers: [],
    });
    expect(parseDump('(none)\t(none)\t53176\t0x5746\n').fwmark).toBe(0x5746);
  });

  it('refuses output it does not understand', () => {
    expect(() => parseDump('')).toThrow(/unexpected output/);
    expect(() => parseDump(`${DUMP}\nshort\tline`)).toThrow(/unexpected peer line/);
  });
});

describe('wgMatches', () => {
  const dump = parseDump(DUMP);

  it('matches the same key, port and peers however prefixes and endpoints are spelled', () => {
    expect(wgMatches(dump, state(), none)).toBe(true);
  });

  it('sees a changed key, port, peer set, allowed IPs, keepalive or endpoint', () => {
    const changes: ((s: DesiredState) => void)[] = [
      (s) => {
        s.interface.privateKey = key(9);
      },
      (s) => {
        s.interface.listenPort = 51821;
      },
      (s) => {
        s.peers.pop();
      },
      (s) => {
        s.peers.push({ publicKey: key(5), allowedIPs: [] });
      },
      (s) => {
        (s.peers[0] as { allowedIPs: string[] }).allowedIPs = ['100.64.0.2/32'];
      },
      (s) => {
        (s.peers[0] as { persistentKeepalive?: number }).persistentKeepalive = undefined;
      },
      (s) => {
        (s.peers[0] as { endpoint?: string }).endpoint = '198.18.0.3:51820';
      },
      (s) => {
        s.exitNode = { allowedLan: [], bypass: [] };
      },
    ];
    for (const change of changes) {
      const s = state();
      change(s);
      expect(wgMatches(dump, s, none)).toBe(false);
    }
  });

  it('accepts any port for listen port 0', () => {
    const s = state();
    s.interface.listenPort = 0;
    expect(wgMatches(dump, s, none)).toBe(true);
  });

  it('leaves a roamed endpoint alone while the requested one is the one set before', () => {
    const s = state();
    (s.peers[0] as { endpoint?: string }).endpoint = '127.0.0.1:41641';
    const setBefore = requestedEndpoints(s);
    expect(wgMatches(dump, s, setBefore)).toBe(true);
    expect(renderConfig(s, setBefore)).not.toContain('Endpoint');
    // A new request for the same peer is set again.
    (s.peers[0] as { endpoint?: string }).endpoint = '127.0.0.1:41642';
    expect(wgMatches(dump, s, setBefore)).toBe(false);
    expect(renderConfig(s, setBefore)).toContain('Endpoint = 127.0.0.1:41642');
  });
});

describe('renderConfig', () => {
  it('marks the socket while an exit node is used, and matches only a device with that mark', () => {
    const exit = { ...state(), exitNode: { allowedLan: [], bypass: [] } };
    expect(renderConfig(exit, none)).toContain('ListenPort = 51820\nFwMark = 0x5746\n');
  });

  it('writes the interface and every peer, with keepalive off when not asked', () => {
    expect(renderConfig(state(), none)).toBe(
      [
        '[Interface]',
        `PrivateKey = ${key(1)}`,
        'ListenPort = 51820',
        'FwMark = off',
        '',
        '[Peer]',
        `PublicKey = ${key(2)}`,
        'AllowedIPs = fd00:0::2/128, 100.64.0.2/32',
        'Endpoint = 198.18.0.2:51820',
        'PersistentKeepalive = 25',
        '',
        '[Peer]',
        `PublicKey = ${key(3)}`,
        'PersistentKeepalive = off',
        '',
        '[Peer]',
        `PublicKey = ${key(4)}`,
        'AllowedIPs = 198.51.100.0/24',
        'Endpoint = [fd00::9]:4000',
        'PersistentKeepalive = off',
        '',
      ].join('\n'),
    );
  });

  it('leaves ListenPort out for port 0 so the device keeps the port it has', () => {
    const s = state();
    s.interface.listenPort = 0;
    expect(renderConfig(s, none)).not.toContain('ListenPort');
  });
});

describe('peersToEmpty', () => {
  it('names peers asked to have no allowed IPs that still have some', () => {
    const dump = parseDump(DUMP);
    const s = state();
    (s.peers[0] as { allowedIPs: string[] }).allowedIPs = [];
    expect(peersToEmpty(dump, s)).toEqual([key(2)]);
  });
});
