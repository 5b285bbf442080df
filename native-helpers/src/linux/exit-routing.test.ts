import { describe, expect, it } from 'vitest';
import { desiredRules, hasTunnelDefault, parseRules, planRules } from './exit-routing.js';

const exitState = {
  exitNode: { allowedLan: ['198.18.20.0/24'], bypass: ['198.51.100.7/32', 'fd00:c::7/128'] },
};

describe('exit-node policy routing', () => {
  it('wants the rules wg-quick uses, plus direct rules for control, relay and the allowed LAN', () => {
    expect(desiredRules({}).length).toBe(0);
    const rules = desiredRules(exitState).map((r) => `${r.family} ${r.priority} ${r.args.join(' ')}`);
    expect(rules).toEqual([
      '4 5310 to 198.18.20.0/24 table main',
      '4 5310 to 198.51.100.7/32 table main',
      '4 5320 table main suppress_prefixlength 0',
      '4 5330 not fwmark 0x5746 table 22342',
      '6 5310 to fd00:c::7/128 table main',
      '6 5320 table main suppress_prefixlength 0',
      '6 5330 not fwmark 0x5746 table 22342',
    ]);
  });

  it('reads back exactly the rules it adds, and ignores everything else', () => {
    const json = JSON.stringify([
      { priority: 0, src: 'all', table: 'local' },
      { priority: 5310, src: 'all', dst: '198.51.100.7', table: 'main' },
      { priority: 5310, src: 'all', dst: '198.18.20.0', dstlen: 24, table: 'main' },
      { priority: 5310, src: 'all', dst: '198.18.99.0', dstlen: 24, table: '100' },
      { priority: 5320, src: 'all', table: 'main', suppress_prefixlen: 0 },
      { priority: 5330, not: null, src: 'all', fwmark: '0x5746', table: '22342' },
      { priority: 5330, src: 'all', fwmark: '0x5746', table: '22342' },
      { priority: 32766, src: 'all', table: 'main' },
    ]);
    const current = parseRules(json, 4);
    expect(current.map((r) => r.args.join(' '))).toEqual([
      'to 198.51.100.7/32 table main',
      'to 198.18.20.0/24 table main',
      'table main suppress_prefixlength 0',
      'not fwmark 0x5746 table 22342',
    ]);
    expect(
      planRules(
        current,
        desiredRules(exitState).filter((r) => r.family === 4),
      ),
    ).toEqual([]);
  });

  it('adds the tunnel rule last and removes it first', () => {
    const want = desiredRules(exitState);
    const add = planRules([], want);
    expect(add.at(-1)).toEqual([
      'ip',
      '-6',
      'rule',
      'add',
      'priority',
      '5330',
      'not',
      'fwmark',
      '0x5746',
      'table',
      '22342',
    ]);
    expect(add[0]).toEqual([
      'ip',
      'rule',
      'add',
      'priority',
      '5310',
      'to',
      '198.18.20.0/24',
      'table',
      'main',
    ]);
    const del = planRules(want, []);
    expect(del[0]).toEqual([
      'ip',
      'rule',
      'del',
      'priority',
      '5330',
      'not',
      'fwmark',
      '0x5746',
      'table',
      '22342',
    ]);
    expect(del).toHaveLength(7);
  });

  it('finds the default route of the interface in the tunnel table', () => {
    expect(hasTunnelDefault('[{"dst":"default","dev":"wg0","scope":"link","flags":[]}]', 'wg0')).toBe(true);
    expect(hasTunnelDefault('[{"dst":"default","dev":"wg1"}]', 'wg0')).toBe(false);
    expect(hasTunnelDefault('[]', 'wg0')).toBe(false);
  });
});
