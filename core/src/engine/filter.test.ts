import { ALLOW_ALL, FilterRuleSpec } from '@weft/protocol';
import { describe, expect, it } from 'vitest';
import { normalizeFilter, prefixesOf } from './filter.js';

describe('packet filter normalisation', () => {
  it('turns allow-all into both families, all ports, the four default protocols', () => {
    expect(normalizeFilter(ALLOW_ALL)).toEqual([
      {
        src: ['0.0.0.0/0', '::/0'],
        dst: [
          { prefix: '0.0.0.0/0', ports: { first: 0, last: 65535 } },
          { prefix: '::/0', ports: { first: 0, last: 65535 } },
        ],
        protos: [1, 6, 17, 58],
      },
    ]);
  });

  it('reads addresses, CIDRs and ranges as the prefixes that cover them exactly', () => {
    expect(prefixesOf('100.64.0.1')).toEqual(['100.64.0.1/32']);
    expect(prefixesOf('fd7a:115c:a1e0::0001')).toEqual(['fd7a:115c:a1e0::1/128']);
    expect(prefixesOf('198.51.100.0/24')).toEqual(['198.51.100.0/24']);
    expect(prefixesOf('100.64.0.3-100.64.0.8')).toEqual(['100.64.0.3/32', '100.64.0.4/30', '100.64.0.8/32']);
    expect(prefixesOf('fd00::-fd00::ffff')).toEqual(['fd00::/112']);
  });

  it('refuses what is not an address: host bits set, mixed or reversed ranges, names', () => {
    for (const bad of ['100.64.0.1/24', '100.64.0.9-100.64.0.1', '100.64.0.1-fd00::1', 'host', '', '1.2.3']) {
      expect(prefixesOf(bad)).toBeNull();
    }
  });

  it('keeps explicit protocols and port ranges; drops unreadable entries and capability-only rules', () => {
    const ignored: string[] = [];
    const rules = normalizeFilter(
      [
        {
          SrcIPs: ['100.64.0.2', 'bogus', '100.64.0.2/32'],
          DstPorts: [
            { IP: '100.64.0.1', Ports: { First: 22, Last: 22 } },
            { IP: '198.51.100.0/24', Ports: { First: 8000, Last: 8100 } },
            { IP: '100.64.0.1', Ports: { First: 9, Last: 1 } },
          ],
          IPProto: [17, 6, 6],
        },
        { SrcIPs: ['*'], CapGrant: [{}] },
        { SrcIPs: ['bogus'], DstPorts: [{ IP: '*', Ports: { First: 0, Last: 65535 } }] },
        { SrcIPs: ['*'], DstPorts: [{ IP: '*', Ports: { First: 0, Last: 65535 } }], IPProto: [] },
      ],
      ignored,
    );
    expect(rules).toEqual([
      {
        src: ['100.64.0.2/32'],
        dst: [
          { prefix: '100.64.0.1/32', ports: { first: 22, last: 22 } },
          { prefix: '198.51.100.0/24', ports: { first: 8000, last: 8100 } },
        ],
        protos: [6, 17],
      },
      expect.objectContaining({ src: ['0.0.0.0/0', '::/0'], protos: [1, 6, 17, 58] }),
    ]);
    expect(ignored).toEqual([
      'rule 0: source "bogus"',
      'rule 0: destination "100.64.0.1" 9-1',
      'rule 2: source "bogus"',
    ]);
    for (const r of rules) expect(FilterRuleSpec.safeParse(r).success).toBe(true);
  });
});
