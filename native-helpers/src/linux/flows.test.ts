import { describe, expect, it } from 'vitest';
import { parseFlows, renderFlows } from './flows.js';

const listing = (...elem: unknown[]) =>
  JSON.stringify({
    nftables: [
      { metainfo: { version: '1.0.6', json_schema_version: 1 } },
      { set: { family: 'inet', name: 'udp4', table: 'weft-wg0', timeout: 120, elem } },
    ],
  });

describe('UDP flows carried over a table replacement', () => {
  it('reads each flow with the whole seconds it has left, and skips one about to expire', () => {
    const json = listing(
      { elem: { val: { concat: ['100.64.0.2', 53, '100.64.0.1', 40000] }, expires: 108 } },
      { elem: { val: { concat: ['100.64.0.3', 443, '100.64.0.1', 40001] }, expires: 0 } },
    );
    expect(parseFlows(json, 4)).toEqual([
      { addr: '100.64.0.2', dport: 53, local: '100.64.0.1', sport: 40000, expires: 108 },
    ]);
    const six = listing({ elem: { val: { concat: ['fd00::2', 53, 'fd00::1', 40000] }, expires: 9 } });
    expect(parseFlows(six, 6)).toEqual([
      { addr: 'fd00::2', dport: 53, local: 'fd00::1', sport: 40000, expires: 9 },
    ]);
  });

  it('reads an empty set (nft leaves `elem` out)', () => {
    expect(parseFlows(JSON.stringify({ nftables: [{ set: { name: 'udp6' } }] }), 6)).toEqual([]);
  });

  it('refuses what is not a flow of the family, rather than write it into the new table', () => {
    const flow = (addr: unknown, dport: unknown = 53, local: unknown = '100.64.0.1') =>
      listing({ elem: { val: { concat: [addr, dport, local, 1] }, expires: 5 } });
    expect(() => parseFlows(flow('fd00::1'), 4)).toThrow(/not an IPv4 address/);
    expect(() => parseFlows(flow('100.64.0.2 } ; flush ruleset ; {'), 4)).toThrow(/not an IPv4 address/);
    expect(() => parseFlows(flow('100.64.0.2', 53, 'fd00::1'), 4)).toThrow(/not an IPv4 address/);
    expect(() => parseFlows(flow('100.64.0.2', 53, '1 } ; flush ruleset ; {'), 4)).toThrow(
      /not an IPv4 address/,
    );
    expect(() => parseFlows(flow('100.64.0.2', 70000), 4)).toThrow();
    expect(() => parseFlows(flow(7), 4)).toThrow();
    expect(() => parseFlows(flow('100.64.0.2', 53, 7), 4)).toThrow();
    // A table from before the local address was in the key: its flows are not written into the new one.
    expect(() =>
      parseFlows(listing({ elem: { val: { concat: ['100.64.0.2', 53, 1] }, expires: 5 } }), 4),
    ).toThrow();
    expect(() => parseFlows('not json', 4)).toThrow();
  });

  it('writes one `add element` line with each flow and its time left, nothing without flows', () => {
    const flows = [
      { addr: '100.64.0.2', dport: 53, local: '100.64.0.1', sport: 40000, expires: 108 },
      { addr: '100.64.0.4', dport: 7, local: '198.51.100.1', sport: 9, expires: 1 },
    ];
    expect(renderFlows('inet', 'weft-wg0', 'udp4', flows)).toBe(
      'add element inet weft-wg0 udp4 { 100.64.0.2 . 53 . 100.64.0.1 . 40000 expires 108s, ' +
        '100.64.0.4 . 7 . 198.51.100.1 . 9 expires 1s }\n',
    );
    expect(renderFlows('inet', 'weft-wg0', 'udp4', [])).toBe('');
  });
});
