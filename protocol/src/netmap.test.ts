import { describe, expect, it } from 'vitest';
import {
  applyStreamMessage,
  MapToken,
  mapTokenAfter,
  type NetMap,
  type NodeView,
  STREAM_PATH,
  StreamQuery,
  StreamServerMessage,
  streamPath,
} from './netmap.js';

const KEY = 'AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=';

function view(id: string): NodeView {
  return {
    id,
    name: id,
    user: null,
    tags: [],
    nodeKey: KEY,
    addresses: ['100.64.0.1/32'],
    allowedIPs: ['100.64.0.1/32'],
    endpoints: [],
    online: true,
    lastSeen: null,
    keyExpiry: null,
    os: 'linux',
  };
}

const map: NetMap = {
  self: view('self'),
  peers: [view('a'), view('b')],
  packetFilter: [],
  tailnetRanges: ['100.64.0.0/10'],
};

describe('the map token', () => {
  it('takes a token of letters, digits, ".", "_" and "-", up to 64, and nothing else', () => {
    for (const ok of ['1.10000.0123456789abcdef', 'x', 'A_b-9', 'a'.repeat(64)])
      expect(MapToken.safeParse(ok).success, ok).toBe(true);
    for (const bad of ['', 'a b', 'a/b', 'a?b', 'é', 'a'.repeat(65), 1, null])
      expect(MapToken.safeParse(bad).success, String(bad)).toBe(false);
  });

  it("reads the stream's query: a token or none; a second one, another key or a bad token is refused", () => {
    expect(StreamQuery.parse({})).toEqual({});
    expect(StreamQuery.parse({ mapToken: '1.2.ab' })).toEqual({ mapToken: '1.2.ab' });
    for (const bad of [{ mapToken: ['a', 'b'] }, { other: '1' }, { mapToken: '' }, { mapToken: 'a b' }])
      expect(StreamQuery.safeParse(bad).success, JSON.stringify(bad)).toBe(false);
    expect(streamPath(null)).toBe(STREAM_PATH);
    expect(streamPath('1.2.ab')).toBe(`${STREAM_PATH}?mapToken=1.2.ab`);
  });

  it('parses a resume with its token and no peers; a resume without a token, or with peers, is refused', () => {
    const { peers: _peers, ...rest } = map;
    expect(StreamServerMessage.parse({ type: 'resume', mapToken: '1.2.ab', netmap: rest }).type).toBe(
      'resume',
    );
    expect(StreamServerMessage.safeParse({ type: 'resume', netmap: rest }).success).toBe(false);
    expect(StreamServerMessage.safeParse({ type: 'resume', mapToken: '1.2.ab', netmap: map }).success).toBe(
      false,
    );
    expect(StreamServerMessage.safeParse({ type: 'full', mapToken: 'a b', netmap: map }).success).toBe(false);
    expect(StreamServerMessage.safeParse({ type: 'delta', mapToken: '' }).success).toBe(false);
  });

  it('keeps the peers held on resume and takes the rest; the token held is the latest message’s', () => {
    const { peers: _peers, ...rest } = map;
    const renamed = { ...rest, self: { ...rest.self, name: 'renamed' }, packetFilter: [] };
    const resumed = applyStreamMessage(map, { type: 'resume', mapToken: 't', netmap: renamed });
    expect(resumed).toEqual({ ...renamed, peers: map.peers });
    // Nothing to resume without a map.
    expect(applyStreamMessage(null, { type: 'resume', mapToken: 't', netmap: renamed })).toBeNull();
    expect(mapTokenAfter({ type: 'full', mapToken: 't', netmap: map })).toBe('t');
    expect(mapTokenAfter({ type: 'full', netmap: map })).toBeNull();
    expect(mapTokenAfter({ type: 'delta', mapToken: 'u' })).toBe('u');
    expect(mapTokenAfter({ type: 'delta', peersRemoved: ['a'] })).toBeNull();
    expect(mapTokenAfter({ type: 'logout', reason: 'gone' })).toBeNull();
  });
});
