import type { NodeView } from '@weft/protocol';
import { decompress } from 'fzstd';
import { describe, expect, it, vi } from 'vitest';
import { connectedHub, testNode } from '../testing/nodes.js';
import { fullMapResponse, TsMapSession } from './map-session.js';
import { mapFrame, mapFrameParts } from './noise-api.js';
import { TAGGED_DEVICES_USER_ID, toDerpMap, toTsNode, tsNodeId, tsUserId } from './tailcfg-views.js';
import { loadZstd, zstdFrame } from './zstd.js';

const KEY = Buffer.alloc(32, 1).toString('base64');
const DISCO = Buffer.alloc(32, 2).toString('base64');

function view(i: number, extra: Partial<NodeView> = {}): NodeView {
  return {
    id: `n${i}`,
    name: `node${i}`,
    user: 'alice',
    tags: [],
    nodeKey: KEY,
    addresses: [`100.64.0.${i}/32`, `fd00::${i}/128`],
    allowedIPs: [`100.64.0.${i}/32`, `fd00::${i}/128`],
    endpoints: [],
    online: true,
    lastSeen: null,
    keyExpiry: '2027-01-01T00:00:00.000Z',
    os: 'linux',
    ...extra,
  };
}

describe('tailcfg views', () => {
  it('numbers nodes by IPv4 and users by name; tagged nodes belong to tagged-devices', () => {
    expect(tsNodeId('100.64.0.1')).toBe(0x64400001);
    expect(tsUserId(null)).toBe(TAGGED_DEVICES_USER_ID);
    expect(tsUserId('alice')).toBe(tsUserId('alice'));
    expect(tsUserId('alice')).not.toBe(tsUserId('bob'));
  });

  it('writes keys in Tailscale form; a Weft peer is WireGuard-only, a Tailscale peer has disco and DERP', () => {
    const weft = toTsNode(view(1), false);
    expect(weft).toMatchObject({
      ID: 0x64400001,
      Key: `nodekey:${'01'.repeat(32)}`,
      Name: 'node1.weft.internal.',
      IsWireGuardOnly: true,
      Online: true,
    });
    expect(weft.DiscoKey).toBeUndefined();
    const ts = toTsNode(
      view(2, { kind: 'tailscale', discoKey: DISCO, homeRelay: 3, clientVersion: '1.102.5' }),
      false,
    );
    expect(ts).toMatchObject({ DiscoKey: `discokey:${'02'.repeat(32)}`, HomeDERP: 3, DERP: '127.3.3.40:3' });
    expect(ts.IsWireGuardOnly).toBeUndefined();
    expect(ts.Hostinfo.IPNVersion).toBe('1.102.5');
    // Self carries no Online (Tailscale does not send it for self).
    expect(toTsNode(view(1), true).Online).toBeUndefined();
  });

  it('offers exit routes in AllowedIPs and subnets as PrimaryRoutes', () => {
    const router = toTsNode(
      view(3, {
        allowedIPs: ['100.64.0.3/32', 'fd00::3/128', '198.51.100.0/24', '0.0.0.0/0', '::/0'],
        exitNodeOption: true,
      }),
      false,
    );
    expect(router.AllowedIPs).toContain('0.0.0.0/0');
    expect(router.PrimaryRoutes).toEqual(['198.51.100.0/24']);
  });

  it('makes a DERP map of the relay map: ports, STUN, hostnames and ws:// as insecure', () => {
    const map = toDerpMap({
      regions: [
        { regionId: 1, name: 'fra', url: 'wss://relay.example.com/relay', publicKey: KEY },
        { regionId: 2, name: 'lab', url: 'ws://[fd00::7]:8080/relay', publicKey: KEY, stunPort: 3478 },
      ],
    });
    expect(map.Regions['1']?.Nodes).toEqual([
      { Name: '1a', RegionID: 1, HostName: 'relay.example.com', DERPPort: 443, STUNPort: -1 },
    ]);
    expect(map.Regions['2']?.Nodes).toEqual([
      {
        Name: '2a',
        RegionID: 2,
        HostName: 'fd00::7',
        IPv6: 'fd00::7',
        DERPPort: 8080,
        STUNPort: 3478,
        InsecureForTests: true,
      },
    ]);
    expect(toDerpMap(undefined)).toEqual({ Regions: {}, OmitDefaultRegions: true });
  });
});

describe('TsMapSession', () => {
  it('patches endpoint and online changes, sends other changes whole, numbers removals', () => {
    const sent: unknown[] = [];
    const session = new TsMapSession(
      'n1',
      (r) => sent.push(r),
      () => {},
    );
    session.send({
      type: 'full',
      netmap: { self: view(1), peers: [view(2)], packetFilter: [], tailnetRanges: [] },
    });
    sent.length = 0;
    session.send({
      type: 'delta',
      peersUpserted: [view(2, { endpoints: ['198.51.100.2:41641'], online: false })],
    });
    expect(sent).toEqual([
      { PeersChangedPatch: [{ NodeID: 0x64400002, Endpoints: ['198.51.100.2:41641'], Online: false }] },
    ]);
    session.send({ type: 'delta', peersUpserted: [view(2, { tags: ['tag:x'], user: null })] });
    expect(sent[1]).toMatchObject({ PeersChanged: [{ ID: 0x64400002, Tags: ['tag:x'] }] });
    session.send({ type: 'delta', peersRemoved: ['n2', 'n9'] });
    expect(sent[2]).toEqual({ PeersRemoved: [0x64400002] });
    // Nothing that a client can see changed: nothing is sent.
    session.send({ type: 'delta', peersUpserted: [view(3)] });
    session.send({ type: 'delta', peersUpserted: [view(3)] });
    expect(sent).toHaveLength(4);
    // Its own last seen is not part of a client's own node: nothing to send; a new expiry is.
    session.send({ type: 'delta', self: view(1, { lastSeen: '2026-12-05T20:00:00.000Z' }) });
    expect(sent).toHaveLength(4);
    session.send({ type: 'delta', self: view(1, { keyExpiry: '2027-02-01T00:00:00.000Z' }) });
    expect(sent[4]).toMatchObject({ Node: { KeyExpiry: '2027-02-01T00:00:00.000Z' } });
  });
});

describe('a change reaching many sessions', () => {
  it('is translated and patched once, shared by every session that held the same view', () => {
    const peer = view(2);
    const full = {
      type: 'full' as const,
      netmap: { self: view(1), peers: [peer], packetFilter: [], tailnetRanges: [] },
    };
    const sent: { PeersChangedPatch?: unknown[]; PeersChanged?: unknown[] }[][] = [[], [], []];
    const sessions = sent.map(
      (out, i) =>
        new TsMapSession(
          `n${10 + i}`,
          (r) => out.push(r),
          () => {},
        ),
    );
    for (const s of sessions) s.send(full);
    const moved = view(2, { endpoints: ['198.51.100.2:41641'] });
    const retagged = view(2, { endpoints: ['198.51.100.2:41641'], tags: ['tag:x'], user: null });
    for (const s of sessions) s.send({ type: 'delta', peersUpserted: [moved] });
    for (const s of sessions) s.send({ type: 'delta', peersUpserted: [retagged] });
    const [a, b, c] = sent.map((out) => out.slice(1));
    expect(a?.[0]?.PeersChangedPatch?.[0]).toEqual({ NodeID: 0x64400002, Endpoints: ['198.51.100.2:41641'] });
    expect(b?.[0]?.PeersChangedPatch?.[0]).toBe(a?.[0]?.PeersChangedPatch?.[0]);
    expect(c?.[0]?.PeersChangedPatch?.[0]).toBe(a?.[0]?.PeersChangedPatch?.[0]);
    expect(b?.[1]?.PeersChanged?.[0]).toBe(a?.[1]?.PeersChanged?.[0]);
    expect(c?.[1]?.PeersChanged?.[0]).toBe(a?.[1]?.PeersChanged?.[0]);
  });
});

describe('map frames', () => {
  const unframed = (frame: Buffer, zstd: boolean) => {
    expect(frame.readUInt32LE(0)).toBe(frame.length - 4);
    const body = frame.subarray(4);
    return Buffer.from(zstd ? decompress(body) : body).toString();
  };

  it('hold exactly the JSON of the response, whole maps and changes alike', async () => {
    await loadZstd();
    const self = view(1);
    const peers = [
      view(2),
      view(3, { tags: ['tag:x'], user: null }),
      view(4, { endpoints: ['198.51.100.4:1'] }),
    ];
    const whole = fullMapResponse({
      self,
      peers,
      packetFilter: [{ SrcIPs: ['*'], DstPorts: [{ IP: '*', Ports: { First: 0, Last: 65535 } }] }],
      tailnetRanges: [],
      dns: {
        magicDns: true,
        baseDomain: 'corp.test',
        nameservers: ['192.0.2.53'],
        searchDomains: [],
        splitDns: {},
        extraRecords: [],
      },
    });
    const session = new TsMapSession(
      'n1',
      () => {},
      () => {},
    );
    session.send({ type: 'full', netmap: { self, peers, packetFilter: [], tailnetRanges: [] } });
    const changed = session.translate({
      type: 'delta',
      peersUpserted: [view(2, { tags: ['tag:y'], user: null }), view(4, { endpoints: ['198.51.100.4:2'] })],
      peersRemoved: ['n3'],
    });
    for (const response of [whole, changed ?? {}, { Peers: [] }, { KeepAlive: true }, {}]) {
      for (const zstd of [false, true]) {
        expect(unframed(mapFrame(response, zstd), zstd)).toBe(JSON.stringify(response));
      }
    }
  });

  it('serialise each peer once for all the whole maps that carry it, not once per receiver', () => {
    // 40 Tailscale clients connect: each is sent a whole map of the others.
    const nodes = Array.from({ length: 40 }, (_, i) =>
      testNode(i + 1, { name: 'alice', email: 'alice@example.com', groups: [] }, { kind: 'tailscale' }),
    );
    const stringify = JSON.stringify;
    // What serialising the frames costs, apart from the hub's own JSON.
    let framing = false;
    let serialised = 0;
    let framed = 0;
    const spy = vi.spyOn(JSON, 'stringify').mockImplementation((...args: Parameters<typeof stringify>) => {
      const text = stringify(...args);
      if (framing) serialised += text?.length ?? 0;
      return text;
    });
    try {
      connectedHub(nodes, null, (id) => {
        return new TsMapSession(
          id,
          (response) => {
            framing = true;
            framed += mapFrame(response, false).length;
            framing = false;
          },
          () => {},
        );
      });
    } finally {
      spy.mockRestore();
    }
    expect(framed).toBeGreaterThan(0);
    // Each whole map repeats the peers it carries; their JSON is made once per peer view.
    expect(serialised).toBeLessThan(framed / 4);
  });
});

describe('whole maps to many receivers', () => {
  it('reference each peer’s bytes, shared by every receiver, not a copy for each', () => {
    const peers = [view(2), view(3), view(4)];
    const frames = [1, 5, 6].map((self) =>
      mapFrameParts(fullMapResponse({ self: view(self), peers, packetFilter: [], tailnetRanges: [] }), false),
    );
    const [a, b, c] = frames.map((parts) => new Set(parts)) as Set<Buffer>[];
    const shared = [...(a as Set<Buffer>)].filter((part) => b?.has(part) && c?.has(part));
    // The three peers' JSON, each one buffer held by all three frames.
    const peerJson = peers.map((p) =>
      JSON.stringify(
        fullMapResponse({ self: view(9), peers: [p], packetFilter: [], tailnetRanges: [] }).Peers?.[0],
      ),
    );
    expect(shared.map((part) => part.toString()).filter((text) => peerJson.includes(text))).toHaveLength(3);
  });
});

describe('zstd frames', () => {
  it('decode with an independent zstd decoder, and a map shrinks', async () => {
    await loadZstd();
    for (const size of [0, 1, 1000, 128 * 1024, 300 * 1024 + 7]) {
      const data = Buffer.alloc(size);
      for (let i = 0; i < size; i++) data[i] = (i * 31) % 251;
      expect(Buffer.from(decompress(zstdFrame(data)))).toEqual(data);
    }
    const map = Buffer.from(
      JSON.stringify(Array.from({ length: 100 }, (_, i) => toTsNode(view(i + 1), false))),
    );
    expect(zstdFrame(map).length).toBeLessThan(map.length / 4);
  });
});
