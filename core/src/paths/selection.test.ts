import type { WgPeerStatus } from '@weft/protocol';
import { describe, expect, it } from 'vitest';
import { orderCandidates } from './connectivity.js';
import type { RelayHold } from './relay-proxy.js';
import { DEFAULT_PATH_TIMING, isLoopbackEndpoint, PathManager } from './selection.js';

// The path state machine driven with made-up interface readings: what WireGuard would report
// (endpoint after roaming, byte counters) at each poll, and the endpoint the engine requests.

const KEY = `${'a'.repeat(43)}=`;
const RELAY = '127.0.0.1:40001';
const CAND = '198.18.0.102:41641';
const LAN = '198.18.12.2:41641';

function setup(opts: { relay?: boolean; candidates?: string[]; viaRelay?: boolean } = {}) {
  const pokes: number[] = [];
  const calls: string[] = [];
  let now = 0;
  const pm = new PathManager({
    relayEndpoint: () => (opts.relay === false ? undefined : RELAY),
    poke: () => pokes.push(now),
    onNewCandidates: (key) => calls.push(key),
    random: () => 0.5,
  });
  pm.setPeers([{ key: KEY, candidates: opts.candidates ?? [CAND, LAN], viaRelay: opts.viaRelay }], now);
  let rx = 0;
  let tx = 0;
  /** One poll `ms` after the last, WireGuard at `endpoint`, with bytes received/sent since. */
  const poll = (ms: number, endpoint: string | null, got = 0, sent = 0) => {
    now += ms;
    rx += got;
    tx += sent;
    const wg: WgPeerStatus = {
      publicKey: KEY,
      endpoint,
      allowedIPs: [],
      latestHandshake: 1,
      rxBytes: rx,
      txBytes: tx,
    };
    pm.observe([wg], now);
    return pm.info(KEY);
  };
  return { pm, poll, pokes, calls, at: () => now };
}

describe('path selection', () => {
  it('starts on the relay, so traffic flows at once', () => {
    const { pm } = setup();
    expect(pm.endpointFor(KEY)).toBe(RELAY);
    expect(pm.info(KEY)?.mode).toBe('relay');
  });

  it('tries a candidate, and goes direct once packets arrive on it', () => {
    const { pm, poll, pokes } = setup();
    poll(0, RELAY);
    expect(poll(400, RELAY)?.mode).toBe('trying');
    expect(pm.endpointFor(KEY)).toBe(CAND);
    // The helper set the candidate; pokes make WireGuard send to it.
    poll(400, CAND, 0, 64);
    expect(pokes.length).toBeGreaterThan(0);
    // The peer answered from its mapping: WireGuard roamed there (same address here).
    const info = poll(400, CAND, 96, 0);
    expect(info?.mode).toBe('direct');
    expect(pm.endpointFor(KEY)).toBe(CAND);
  });

  it('goes back to the relay when no candidate answers, and paces the next round', () => {
    const { pm, poll, at } = setup({ candidates: [CAND] });
    poll(0, RELAY);
    poll(400, RELAY);
    expect(pm.info(KEY)?.mode).toBe('trying');
    // The peer's relayed packets made WireGuard roam back to the proxy during the trial.
    for (let i = 0; i < 7; i++) poll(400, RELAY, 64, 64);
    expect(pm.info(KEY)?.mode).toBe('relay');
    expect(pm.endpointFor(KEY)).toBe(RELAY);
    const failedAt = at();
    let retried = 0;
    while (pm.info(KEY)?.mode === 'relay' && at() - failedAt < 60_000) {
      poll(100, RELAY);
      retried = at() - failedAt;
    }
    // Back-off: 2 s base with jitter (half to all of it), not at once.
    expect(retried).toBeGreaterThanOrEqual(1000);
    expect(retried).toBeLessThanOrEqual(2100);
  });

  it('sends to a candidate only until its first packet left, waits on the relay, then tries the next', () => {
    const { pm, poll } = setup();
    poll(0, RELAY);
    poll(400, RELAY);
    expect(pm.endpointFor(KEY)).toBe(CAND);
    // The helper set it: pokes go there (they open our NAT towards it) for a short while…
    let polls = 0;
    while (pm.endpointFor(KEY) === CAND && polls++ < 100) poll(100, CAND, 0, 64);
    expect(polls * 100).toBeGreaterThanOrEqual(DEFAULT_PATH_TIMING.openMs);
    expect(polls * 100).toBeLessThan(DEFAULT_PATH_TIMING.trialQuietMs);
    // …then back on the relay while the trial waits for the peer: traffic flows there meanwhile.
    expect(pm.info(KEY)).toMatchObject({ mode: 'trying', requested: RELAY });
    while (pm.info(KEY)?.mode === 'trying' && polls < 100) {
      poll(100, RELAY, 64, 64);
      polls++;
    }
    expect(pm.info(KEY)?.mode).toBe('relay');
    while (pm.info(KEY)?.mode === 'relay' && polls < 200) {
      poll(100, RELAY);
      polls++;
    }
    expect(pm.endpointFor(KEY)).toBe(LAN);
  });

  it('follows the peer when its packets reach us directly (WireGuard roamed)', () => {
    const { pm, poll } = setup({ candidates: [] });
    poll(0, RELAY);
    expect(poll(1000, '198.18.0.101:5555', 96)?.mode).toBe('trying');
    expect(pm.endpointFor(KEY)).toBe('198.18.0.101:5555');
    expect(poll(400, '198.18.0.101:5555', 96)?.mode).toBe('direct');
  });

  it('falls back to the relay when what it sends on a direct path stays unanswered', () => {
    const { pm, poll } = setup();
    poll(0, RELAY);
    poll(400, RELAY);
    poll(400, CAND, 96, 64);
    expect(poll(400, CAND, 96, 64)?.mode).toBe('direct');
    // Traffic keeps going out; nothing comes back (the path was cut).
    let polls = 0;
    while (poll(1000, CAND, 0, 128)?.mode === 'direct' && polls < 10) polls++;
    // The first unanswered send is seen at the first poll; 3.5 s later it is dead.
    expect(polls).toBe(4);
    expect(pm.endpointFor(KEY)).toBe(RELAY);
  });

  it('follows the peer back to the relay, and adopts a roamed direct endpoint', () => {
    const { pm, poll } = setup();
    poll(0, RELAY);
    poll(400, RELAY);
    poll(400, CAND, 96, 64);
    poll(400, CAND, 96, 64);
    expect(pm.info(KEY)?.mode).toBe('direct');
    // The peer's NAT moved it: WireGuard roamed; requesting the new one makes a later fall-back a change.
    poll(1000, '198.18.0.102:6000', 96, 64);
    expect(pm.endpointFor(KEY)).toBe('198.18.0.102:6000');
    // The peer sent through the relay: it lost the direct path, so do we.
    poll(1000, RELAY, 96, 64);
    expect(pm.info(KEY)?.mode).toBe('relay');
    expect(pm.endpointFor(KEY)).toBe(RELAY);
  });

  it('answers a packet that arrived directly, at most once per interval', () => {
    const { poll, pokes } = setup({ candidates: [] });
    poll(0, RELAY);
    poll(1000, '198.18.0.101:5555', 96);
    poll(400, '198.18.0.101:5555', 96);
    const before = pokes.length;
    poll(2000, '198.18.0.101:5555', 32);
    expect(pokes.length).toBe(before + 1);
    poll(100, '198.18.0.101:5555', 32);
    expect(pokes.length).toBe(before + 1);
  });

  it('without a relay, uses the first candidate and never trials', () => {
    const { pm, poll } = setup({ relay: false });
    expect(pm.endpointFor(KEY)).toBe(CAND);
    for (let i = 0; i < 20; i++) poll(1000, CAND, 96, 96);
    expect(pm.info(KEY)?.mode).toBe('relay');
    expect(pm.endpointFor(KEY)).toBe(CAND);
  });

  it('tries new candidates soon after they change', () => {
    const { pm, poll, at } = setup({ candidates: [CAND] });
    poll(0, RELAY);
    poll(400, RELAY);
    for (let i = 0; i < 7; i++) poll(400, RELAY);
    expect(pm.info(KEY)?.mode).toBe('relay');
    pm.setPeers([{ key: KEY, candidates: ['198.18.0.102:7777'] }], at());
    poll(400, RELAY);
    expect(pm.endpointFor(KEY)).toBe('198.18.0.102:7777');
  });
});

describe('call me maybe', () => {
  /** Fails trials until the back-off has grown past `ms`; returns when the last round failed. */
  function failRounds(t: ReturnType<typeof setup>, rounds: number): void {
    for (let r = 0; r < rounds; r++) {
      let polls = 0;
      while (t.pm.info(KEY)?.mode === 'relay' && polls++ < 400) t.poll(100, RELAY);
      while (t.pm.info(KEY)?.mode === 'trying' && polls++ < 800)
        t.poll(100, t.pm.endpointFor(KEY) ?? null, 0, 64);
    }
  }

  it('asks a relayed peer with new candidates to call, once per new set', () => {
    const t = setup({ candidates: [CAND] });
    expect(t.calls).toEqual([KEY]);
    t.pm.setPeers([{ key: KEY, candidates: [CAND] }], t.at());
    expect(t.calls).toEqual([KEY]);
    t.pm.setPeers([{ key: KEY, candidates: ['198.18.0.102:7777'] }], t.at());
    expect(t.calls).toEqual([KEY, KEY]);
  });

  it('never asks a peer the relay does not reach, nor one without candidates', () => {
    expect(setup({ viaRelay: false }).calls).toEqual([]);
    expect(setup({ candidates: [] }).calls).toEqual([]);
  });

  it('starts a trial of the caller at once, with its candidates, whatever the back-off', () => {
    const t = setup({ candidates: [CAND] });
    failRounds(t, 4);
    expect(t.pm.info(KEY)?.mode).toBe('relay');
    // The peer (new network) calls with its new mapping: no waiting out the back-off.
    expect(t.pm.callMeMaybe(KEY, ['198.18.0.102:9999'], t.at())).toBe(true);
    expect(t.pm.info(KEY)).toMatchObject({ mode: 'trying', trying: '198.18.0.102:9999' });
  });

  it('a peer calling again and again gets one trial per trial window', () => {
    const t = setup({ candidates: [CAND] });
    failRounds(t, 4);
    expect(t.pm.callMeMaybe(KEY, ['198.18.0.102:9000'], t.at())).toBe(true);
    t.poll(100, '198.18.0.102:9000');
    // Right after, another call with other candidates: kept, but no second trial in this window.
    const now = t.at();
    expect(t.pm.callMeMaybe(KEY, ['198.18.0.102:9001'], now)).toBe(false);
    expect(t.pm.callMeMaybe(KEY, ['198.18.0.102:9002'], now + DEFAULT_PATH_TIMING.trialMs)).toBe(true);
  });

  it('ignores a call from a peer it does not know, and leaves a direct path alone', () => {
    const t = setup();
    expect(t.pm.callMeMaybe(`${'b'.repeat(43)}=`, [CAND], 0)).toBe(false);
    t.poll(0, RELAY);
    t.poll(400, RELAY);
    t.poll(400, CAND, 96, 64);
    expect(t.poll(400, CAND, 96, 64)?.mode).toBe('direct');
    // It still reports the address we are direct to: nothing to change.
    expect(t.pm.callMeMaybe(KEY, [LAN, CAND], t.at())).toBe(false);
    expect(t.pm.info(KEY)).toMatchObject({ mode: 'direct', requested: CAND });
  });

  it('on a direct path, tries the caller’s new address at once when it no longer reports the old one', () => {
    const t = setup();
    t.poll(0, RELAY);
    t.poll(400, RELAY);
    t.poll(400, CAND, 96, 64);
    expect(t.poll(400, CAND, 96, 64)?.mode).toBe('direct');
    // Same address, other ports (a NAT that maps per destination): not a move, nothing changes.
    expect(t.pm.callMeMaybe(KEY, [LAN], t.at(), ['198.18.0.102:1', '198.18.0.102:2', LAN])).toBe(false);
    expect(t.pm.info(KEY)?.mode).toBe('direct');
    // Its router came back with a new address: tried now.
    expect(t.pm.callMeMaybe(KEY, ['198.18.0.202:41641', LAN], t.at())).toBe(true);
    expect(t.pm.info(KEY)).toMatchObject({ mode: 'trying', trying: '198.18.0.202:41641' });
  });

  /** A PathManager whose holds of the peer's relayed packets are recorded, and polls of it. */
  function holding() {
    const holds: RelayHold[] = [];
    let now = 0;
    let rx = 0;
    let tx = 0;
    const pm = new PathManager({
      relayEndpoint: () => RELAY,
      poke: () => {},
      onHold: (_key, hold) => holds.push(hold),
    });
    pm.setPeers([{ key: KEY, candidates: [CAND] }], now);
    const poll = (ms: number, endpoint: string, got = 0, sent = 0) => {
      now += ms;
      rx += got;
      tx += sent;
      pm.observe(
        [{ publicKey: KEY, endpoint, allowedIPs: [], latestHandshake: 1, rxBytes: rx, txBytes: tx }],
        now,
      );
      return pm.info(KEY);
    };
    poll(0, RELAY);
    expect(poll(400, RELAY)?.mode).toBe('trying');
    return { pm, poll, holds, at: () => now };
  }

  it('a trial that never gets an answer holds relayed packets only until its first packet left', () => {
    const { pm, poll, holds, at } = holding();
    // Queued while WireGuard is moved to the candidate, so a relayed packet cannot take it back first.
    expect(holds).toEqual(['queue']);
    // The helper set it, pokes go there; nothing comes back: on to the relay, and what was
    // queued is delivered (relayed packets flow again).
    while (pm.endpointFor(KEY) === CAND && at() < 10_000) poll(100, CAND, 0, 64);
    expect(pm.info(KEY)).toMatchObject({ mode: 'trying', requested: RELAY });
    expect(holds).toEqual(['queue', 'off']);
    while (pm.info(KEY)?.mode === 'trying' && at() < 10_000) poll(100, RELAY, 64, 64);
    expect(pm.info(KEY)).toMatchObject({ mode: 'relay', requested: RELAY });
    expect(holds).toEqual(['queue', 'off']);
    // A peer that leaves mid-trial is released too.
    while (pm.info(KEY)?.mode !== 'trying' && at() < 60_000) poll(100, RELAY);
    pm.setPeers([], at());
    expect(holds).toEqual(['queue', 'off', 'queue', 'off']);
  });

  it('drops relayed packets once the candidate answered, until the path is confirmed', () => {
    const { pm, poll, holds, at } = holding();
    while (pm.endpointFor(KEY) === CAND && at() < 10_000) poll(100, CAND, 0, 64);
    poll(100, RELAY, 64, 64);
    // The peer's packets arrived directly: WireGuard roamed there; stay (relayed ones would roam back).
    expect(poll(100, '198.18.0.102:5000', 96, 0)).toMatchObject({
      mode: 'trying',
      requested: '198.18.0.102:5000',
    });
    expect(holds).toEqual(['queue', 'off', 'drop']);
    expect(poll(100, '198.18.0.102:5000', 96, 64)?.mode).toBe('direct');
    expect(holds).toEqual(['queue', 'off', 'drop', 'off']);
  });

  it('an answered trial that then goes unanswered falls back to the relay and lets relayed packets through', () => {
    const { pm, poll, holds, at } = holding();
    while (pm.endpointFor(KEY) === CAND && at() < 10_000) poll(100, CAND, 0, 64);
    poll(100, '198.18.0.102:5000', 96, 0);
    while (pm.info(KEY)?.mode === 'trying' && at() < 10_000) poll(100, RELAY, 0, 64);
    expect(pm.info(KEY)).toMatchObject({ mode: 'relay', requested: RELAY });
    expect(holds).toEqual(['queue', 'off', 'drop', 'off']);
  });

  it('before a first session, only the peer with the lower key pokes for it (no crossed handshakes)', () => {
    const pokesBy = (selfKey: string) => {
      let pokes = 0;
      const pm = new PathManager({ relayEndpoint: () => RELAY, poke: () => pokes++, selfKey });
      pm.setPeers([{ key: KEY, candidates: [CAND] }], 0);
      for (let now = 0; now <= 2000; now += 100) {
        const wg: WgPeerStatus = {
          publicKey: KEY,
          endpoint: RELAY,
          allowedIPs: [],
          latestHandshake: null,
          rxBytes: 0,
          txBytes: 0,
        };
        pm.observe([wg], now);
      }
      expect(pm.info(KEY)?.mode).toBe('relay');
      return pokes;
    };
    expect(pokesBy(`${'0'.repeat(43)}=`)).toBeGreaterThan(0);
    expect(pokesBy(`${'b'.repeat(43)}=`)).toBe(0);
  });

  it('after our own network changed, tries every relayed peer at once', () => {
    const t = setup({ candidates: [CAND] });
    failRounds(t, 4);
    expect(t.pm.info(KEY)?.mode).toBe('relay');
    expect(t.pm.retryAll(t.at())).toBe(true);
    expect(t.pm.info(KEY)).toMatchObject({ mode: 'trying', trying: CAND });
  });
});

describe('path selection for a peer the relay does not reach (a Tailscale client)', () => {
  it('never requests the relay: starts on the first candidate and tries each in turn', () => {
    const { pm, poll } = setup({ viaRelay: false });
    expect(pm.endpointFor(KEY)).toBe(CAND);
    const requested = new Set<string | undefined>();
    // Unanswered throughout: what we send gets nothing back, for a minute.
    for (let i = 0; i < 150; i++) {
      const asked = pm.endpointFor(KEY);
      poll(400, asked ?? null, 0, 64);
      requested.add(pm.endpointFor(KEY));
    }
    expect([...requested].sort()).toEqual([CAND, LAN].sort());
  });

  it('keeps a silent candidate past a WireGuard handshake retry (5 s), then moves on at once', () => {
    const { pm, poll } = setup({ viaRelay: false });
    poll(0, CAND);
    poll(400, CAND);
    expect(pm.info(KEY)?.trying).toBe(CAND);
    let polls = 0;
    while (pm.endpointFor(KEY) === CAND && polls < 40) {
      poll(400, CAND, 0, 64);
      polls++;
    }
    expect(polls * 400).toBeGreaterThanOrEqual(5000);
    expect(pm.info(KEY)).toMatchObject({ mode: 'trying', trying: LAN, requested: LAN });
  });

  it('goes direct once the peer answers, and tries again at once when the path dies', () => {
    const { pm, poll } = setup({ viaRelay: false, candidates: [CAND] });
    poll(0, CAND);
    poll(400, CAND, 0, 64);
    expect(poll(400, CAND, 96, 64)?.mode).toBe('direct');
    for (let i = 0; i < 12; i++) poll(400, CAND, 0, 64);
    expect(pm.info(KEY)).toMatchObject({ mode: 'trying', requested: CAND });
  });

  it('moves at once to new candidates when the one being tried is no longer listed', () => {
    const { pm, poll, at } = setup({ viaRelay: false, candidates: [LAN] });
    poll(0, LAN);
    poll(400, LAN, 0, 64);
    expect(pm.info(KEY)?.trying).toBe(LAN);
    // The peer learnt its mapping (STUN) after its first map: only that is listed now.
    expect(pm.setPeers([{ key: KEY, candidates: [CAND], viaRelay: false }], at())).toBe(true);
    expect(pm.info(KEY)).toMatchObject({ mode: 'trying', trying: CAND, requested: CAND });
  });
});

describe('candidates', () => {
  it('puts those on our own LANs first, then keeps the reported order, without repeats', () => {
    expect(
      orderCandidates(
        ['198.18.0.101:1', '198.51.100.3:1', '198.18.0.101:1', 'junk', '203.0.113.9:1'],
        ['198.51.100.2/24', 'fd00::1/64'],
      ),
    ).toEqual(['198.51.100.3:1', '198.18.0.101:1', '203.0.113.9:1']);
  });

  it('leaves out mappings that vary by destination (they only work towards the reflectors)', () => {
    expect(
      orderCandidates(['198.18.0.103:1000', '198.18.0.103:2000', '198.18.13.2:5'], ['198.18.11.2/24']),
    ).toEqual(['198.18.13.2:5']);
  });

  it('puts the peer’s IPv6 candidates before its IPv4 ones when this host has IPv6', () => {
    const peer = ['198.18.0.103:1000', '198.18.13.2:5', '[fd00:13::2]:5'];
    expect(orderCandidates(peer, ['198.18.14.2/24'])).toEqual(peer);
    expect(orderCandidates(peer, ['198.18.14.2/24'], { ipv6: true })).toEqual([
      '[fd00:13::2]:5',
      '198.18.0.103:1000',
      '198.18.13.2:5',
    ]);
    // Same LAN still comes first.
    expect(orderCandidates(peer, ['198.18.13.9/24'], { ipv6: true })[0]).toBe('198.18.13.2:5');
  });

  it('tells the loopback relay proxy from a direct endpoint', () => {
    expect(isLoopbackEndpoint('127.0.0.1:5')).toBe(true);
    expect(isLoopbackEndpoint('[::1]:5')).toBe(true);
    expect(isLoopbackEndpoint('198.18.0.1:5')).toBe(false);
    expect(isLoopbackEndpoint(null)).toBe(false);
  });
});
