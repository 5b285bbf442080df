import { describe, expect, it } from 'vitest';
import {
  chooseMtu,
  endpointAddress,
  type MtuChoice,
  MtuTracker,
  type ProbeRequest,
  parseRouteGet,
  readUnderlay,
  SAFE_MTU,
} from './mtu.js';

const direct = (name: string, mtu: number, family: 4 | 6 = 4) => ({
  name,
  path: 'direct' as const,
  underlay: { mtu, family, dev: 'eth0' },
});

describe('the tunnel MTU', () => {
  it('takes a 1500-byte underlay minus WireGuard: 1440 over IPv4, 1420 over IPv6', () => {
    expect(chooseMtu([direct('b', 1500)]).mtu).toBe(1440);
    expect(chooseMtu([direct('b', 1500, 6)]).mtu).toBe(1420);
    expect(chooseMtu([direct('b', 1500)]).reason).toMatch(/to b, is 1500 bytes \(eth0\) minus 60/);
  });

  it('fits the narrowest direct path', () => {
    const c = chooseMtu([direct('b', 1500), direct('c', 1400), direct('d', 9000, 6)]);
    expect(c).toEqual({ mtu: 1340, reason: expect.stringMatching(/to c/) });
  });

  it('keeps 1280 when a peer is relayed, its link unknown, too narrow, or no peer is online', () => {
    expect(chooseMtu([direct('b', 1500), { name: 'r', path: 'relay', underlay: null }])).toEqual({
      mtu: SAFE_MTU,
      reason: expect.stringMatching(/r is relayed/),
    });
    expect(chooseMtu([{ name: 'u', path: 'direct', underlay: null }]).reason).toMatch(/towards u is unknown/);
    expect(chooseMtu([direct('n', 1300)]).mtu).toBe(SAFE_MTU);
    expect(chooseMtu([]).mtu).toBe(SAFE_MTU);
    expect(chooseMtu([direct('b', 1500), { ...direct('p', 1500), probe: 'lost' }])).toEqual({
      mtu: SAFE_MTU,
      reason: expect.stringMatching(/probe to p .* got no answer/),
    });
    expect(chooseMtu([{ ...direct('p', 1500), probe: 'ok' }]).mtu).toBe(1440);
  });

  it('never goes past what the helper takes', () => {
    expect(chooseMtu([direct('j', 65535)]).mtu).toBe(9000);
  });

  it('reads endpoints and `ip route get`, learned path MTU included', () => {
    expect(endpointAddress('198.18.0.2:41641')).toEqual({ address: '198.18.0.2', family: 4 });
    expect(endpointAddress('[fd00::2]:41641')).toEqual({ address: 'fd00::2', family: 6 });
    expect(endpointAddress('not an endpoint')).toBeNull();
    expect(parseRouteGet('198.18.0.2 dev eth0 src 198.18.0.1 uid 0 \n    cache ')).toEqual({
      dev: 'eth0',
      pmtu: null,
    });
    expect(
      parseRouteGet('198.18.0.2 dev eth0 src 198.18.0.1 uid 0 \n    cache expires 590sec mtu 1400'),
    ).toEqual({ dev: 'eth0', pmtu: 1400 });
    expect(parseRouteGet('RTNETLINK answers: Network is unreachable')).toBeNull();
  });

  it('reads the loopback underlay of this machine', async () => {
    expect(await readUnderlay('127.0.0.1:41641')).toEqual({ mtu: 65536, family: 4, dev: 'lo' });
  });
});

describe('the MTU tracker', () => {
  it('comes down to what a router on the way carries once a probe taught the kernel, probing each size once', async () => {
    // The local link says 1500; a router beyond it carries 1400 and says so to the first probe.
    let learned = false;
    const probes: ProbeRequest[] = [];
    const choices: [MtuChoice, boolean][] = [];
    const applied: number[] = [];
    const tracker = new MtuTracker({
      peers: () => [{ name: 'c', path: 'direct', endpoint: '198.18.61.2:41641', address: '100.64.0.3' }],
      applied: async () => {
        applied.push(tracker.choice.mtu);
        return true;
      },
      onChoice: (c, changed) => choices.push([c, changed]),
      readUnderlay: async () => ({ mtu: learned ? 1400 : 1500, family: 4, dev: 'eth0' }),
      probePath: async (req) => {
        probes.push(req);
        learned = true;
        return true;
      },
    });
    await tracker.refresh();
    expect(probes.map((p) => p.mtu)).toEqual([1440, 1340]);
    expect(applied).toEqual([1440, 1340]);
    expect(choices.map(([c, changed]) => [c.mtu, changed])).toEqual([
      [1440, true],
      [1340, true],
    ]);
    expect(tracker.choice.reason).toMatch(/to c, is 1400 bytes/);
    // Nothing changed: nothing probed again.
    await tracker.refresh();
    expect(probes).toHaveLength(2);
  });
});
