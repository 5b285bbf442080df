import { describe, expect, it } from 'vitest';
import { describeExitRoute, exitRouteFamilies } from './exit-route.js';

describe('exitRouteFamilies', () => {
  it('counts a default route, and any prefix wider than 1/64 of the space, as an exit route', () => {
    expect(exitRouteFamilies(['0.0.0.0/0'])).toEqual([4]);
    expect(exitRouteFamilies(['::/0'])).toEqual([6]);
    expect(exitRouteFamilies(['0.0.0.0/1'])).toEqual([4]);
    expect(exitRouteFamilies(['64.0.0.0/5'])).toEqual([4]);
    expect(exitRouteFamilies(['2000::/3', '0.0.0.0/0'])).toEqual([4, 6]);
  });

  it('lets exactly 1/64 of the space, and everything narrower, through', () => {
    expect(exitRouteFamilies(['64.0.0.0/6'])).toEqual([]);
    expect(exitRouteFamilies(['100.64.0.0/10', '198.18.0.0/15', 'fd00::/8', '2001:db8::/32'])).toEqual([]);
    expect(exitRouteFamilies([])).toEqual([]);
  });

  it('adds up the prefixes of one set: two /1 halves, or many small pieces, are a default route', () => {
    expect(exitRouteFamilies(['0.0.0.0/1', '128.0.0.0/1'])).toEqual([4]);
    expect(exitRouteFamilies(['::/1', '8000::/1'])).toEqual([6]);
    // Two /6 side by side are 2/64: more than the share, although each alone is allowed.
    expect(exitRouteFamilies(['64.0.0.0/6', '68.0.0.0/6'])).toEqual([4]);
    // 65 prefixes of /12 are 65/4096 > 1/64 of IPv4.
    const pieces = Array.from({ length: 65 }, (_, i) => `${(i * 16) >> 8}.${(i * 16) & 255}.0.0/12`);
    expect(exitRouteFamilies(pieces)).toEqual([4]);
    expect(exitRouteFamilies(pieces.slice(0, 64))).toEqual([]);
  });

  it('counts overlapping prefixes once', () => {
    expect(exitRouteFamilies(['64.0.0.0/6', '64.0.0.0/7', '66.0.0.0/8', '64.0.0.0/6'])).toEqual([]);
  });

  it('says which family and why', () => {
    expect(describeExitRoute([4, 6])).toBe(
      'covers more than 1/64 of the IPv4 and IPv6 address space, which makes it an exit route',
    );
  });
});
