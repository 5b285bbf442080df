import { DesiredState, generateKeyPair, type NetMap, withDefaults } from '@weft/protocol';
import { describe, expect, it } from 'vitest';
import { choosePeerEndpoint } from '../paths/selection.js';
import { nodeView } from '../testing/standin-control.js';
import { desiredOsState, desiredState } from './desired.js';

const self = generateKeyPair();
const [a, b, c] = [generateKeyPair(), generateKeyPair(), generateKeyPair()].map((k) => k.publicKey) as [
  string,
  string,
  string,
];

function map(peers: NetMap['peers']): NetMap {
  return {
    self: nodeView(1, self.publicKey),
    peers,
    packetFilter: [],
    tailnetRanges: ['100.64.0.0/10', 'fd7a:115c:a1e0::/48'],
  };
}

const inputs = (netmap: NetMap) => ({
  netmap,
  interfaceName: 'weft0',
  nodePrivateKey: self.privateKey,
  listenPort: 41641,
});

describe('desired state', () => {
  it('maps the netmap to the whole OS state, valid for the helper', () => {
    const state = desiredState(
      inputs(
        map([
          nodeView(2, a, {
            allowedIPs: ['100.64.0.2/32', '198.51.100.0/24'],
            endpoints: ['198.18.0.2:5000', '198.18.1.2:5000'],
          }),
        ]),
      ),
    );
    expect(state).toEqual({
      interface: {
        name: 'weft0',
        privateKey: self.privateKey,
        listenPort: 41641,
        addresses: ['100.64.0.1/32', 'fd7a:115c:a1e0::1/128'],
        mtu: 1280,
      },
      peers: [
        {
          publicKey: a,
          allowedIPs: ['100.64.0.2/32', '198.51.100.0/24'],
          endpoint: '198.18.0.2:5000',
          persistentKeepalive: 25,
        },
      ],
      routes: ['100.64.0.0/10', 'fd7a:115c:a1e0::/48'],
      filter: [],
    });
    expect(DesiredState.safeParse(state).success).toBe(true);
  });

  it('gives the same state whatever order the peers arrive in', () => {
    const peers = [nodeView(2, a), nodeView(3, b), nodeView(4, c)];
    const one = desiredState(inputs(map(peers)));
    const two = desiredState(inputs(map([...peers].reverse())));
    expect(one).toEqual(two);
    expect(one.peers.map((p) => p.publicKey)).toEqual([a, b, c].sort());
  });

  it('leaves out a peer without candidates’ endpoint, duplicates, and ourselves', () => {
    const state = desiredState(
      inputs(map([nodeView(2, a, { endpoints: [] }), nodeView(3, a), nodeView(4, self.publicKey)])),
    );
    expect(state.peers).toEqual([
      { publicKey: a, allowedIPs: nodeView(2, a).allowedIPs, persistentKeepalive: 25 },
    ]);
  });

  it('never lets a netmap peer take a relay key: the reflector peer stays, with no allowed IPs', () => {
    const relay = generateKeyPair().publicKey;
    const reflector = {
      publicKey: relay,
      allowedIPs: [],
      endpoint: '198.18.0.9:3478',
      persistentKeepalive: 25,
    };
    const state = desiredState({
      ...inputs(map([nodeView(2, relay), nodeView(3, a)])),
      extraPeers: [reflector],
    });
    expect(state.peers.map((p) => [p.publicKey, p.allowedIPs])).toEqual([
      [a, ['100.64.0.3/32', 'fd7a:115c:a1e0::3/128']],
      [relay, []],
    ]);
    expect(DesiredState.safeParse(state).success).toBe(true);
  });

  it('has no peers and still the interface for an empty tailnet', () => {
    const state = desiredState(inputs(map([])));
    expect(state.peers).toEqual([]);
    expect(state.interface.addresses).toHaveLength(2);
  });

  it('picks the first candidate endpoint (until path selection)', () => {
    expect(choosePeerEndpoint(nodeView(2, a, { endpoints: ['198.18.0.9:1', '198.18.0.8:2'] }))).toBe(
      '198.18.0.9:1',
    );
    expect(choosePeerEndpoint(nodeView(2, a, { endpoints: [] }))).toBeUndefined();
  });

  it('carries the netmap packet filter in the helper form', () => {
    const netmap = map([]);
    netmap.packetFilter = [
      {
        SrcIPs: ['100.64.0.2', '100.64.0.10-100.64.0.11'],
        DstPorts: [{ IP: '*', Ports: { First: 443, Last: 443 } }],
      },
    ];
    const state = desiredState(inputs(netmap));
    expect(state.filter).toEqual([
      {
        src: ['100.64.0.10/31', '100.64.0.2/32'],
        dst: [
          { prefix: '0.0.0.0/0', ports: { first: 443, last: 443 } },
          { prefix: '::/0', ports: { first: 443, last: 443 } },
        ],
        protos: [1, 6, 17, 58],
      },
    ]);
    expect(DesiredState.safeParse(state).success).toBe(true);
  });
});

describe('desiredOsState', () => {
  it('is the tunnel with the paths chosen, then the exit node and routes the prefs ask for', () => {
    const reflector = { publicKey: c, allowedIPs: [], endpoint: '198.18.9.1:3478' };
    const netmap = map([
      nodeView(2, a, { endpoints: ['198.18.0.2:5000'] }),
      nodeView(3, b, {
        allowedIPs: ['100.64.0.3/32', '0.0.0.0/0', '::/0'],
        exitNodeOption: true,
        endpoints: ['198.18.0.3:5000'],
      }),
    ]);
    const prefs = withDefaults({
      controlUrl: null,
      hostname: null,
      wantRunning: true,
      listenPort: 41641,
      exitNodeId: netmap.peers[1]?.id ?? null,
    });
    const state = desiredOsState({
      netmap,
      prefs,
      paths: {
        endpointFor: (p) => (p.nodeKey === a ? '127.0.0.1:40001' : undefined),
        reflectorPeers: () => [reflector],
      },
      interfaceName: 'weft0',
      nodePrivateKey: self.privateKey,
      localPrefixes: ['198.18.20.0/24'],
      bypass: ['198.18.30.5/32'],
    });
    expect(DesiredState.safeParse(state).success).toBe(true);
    expect(state.interface.listenPort).toBe(41641);
    expect(state.peers.find((p) => p.publicKey === a)?.endpoint).toBe('127.0.0.1:40001');
    expect(state.peers.find((p) => p.publicKey === b)?.allowedIPs).toEqual([
      '100.64.0.3/32',
      '0.0.0.0/0',
      '::/0',
    ]);
    expect(state.peers.find((p) => p.publicKey === c)).toEqual(reflector);
    expect(state.exitNode).toEqual({ allowedLan: [], bypass: ['198.18.30.5/32'] });
  });
});
