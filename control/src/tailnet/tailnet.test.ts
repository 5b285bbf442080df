import { parseIPv4 } from '@weft/protocol';
import { describe, expect, it } from 'vitest';
import { ipv4From, ipv4Offset, ipv6For, randomUlaPrefix, unusedIPv4Offsets } from './addresses.js';
import { uniqueName } from './names.js';

describe('address allocation', () => {
  it('hands out addresses from an offset on, skipping the reserved ones', () => {
    expect(ipv4From(0)).toBe('100.64.0.1');
    expect(ipv4From(2)).toBe('100.64.0.2');
    // .255 and .0 inside the /10 are ordinary host addresses; only the /10's own ends are not.
    expect(ipv4From(256)).toBe('100.64.1.0');
    expect(ipv4From(ipv4Offset('100.100.100.100'))).toBe('100.100.100.101');
    expect(() => ipv4From(ipv4Offset('100.127.255.255'))).toThrow(/full/);
  });

  it('lists the free offsets below the highest used one', () => {
    expect(unusedIPv4Offsets([])).toEqual([]);
    expect(unusedIPv4Offsets([6, 1, 3])).toEqual([2, 4, 5]);
  });

  it('places an address in the range as the general address parser would, for any text', () => {
    const first = parseIPv4('100.64.0.0') as bigint;
    const reference = (ip: string) => {
      const v = parseIPv4(ip);
      return v === null || v < first || v >= first + (1n << 22n) ? -1 : Number(v - first);
    };
    let seed = 7;
    const rand = (n: number) => {
      seed = (seed * 1103515245 + 12345) % 2 ** 31;
      return seed % n;
    };
    const odd = [
      '100.64.0.01',
      '100.64.0',
      '100.64.0.1.2',
      '100.64.0.256',
      '1.2.3.4',
      'fd00::1',
      '',
      '100.63.255.255',
      '100.128.0.0',
    ];
    for (let round = 0; round < 2_000; round++) {
      const ip =
        rand(10) === 0 ? (odd[rand(odd.length)] as string) : `100.${rand(70) + 60}.${rand(256)}.${rand(256)}`;
      expect(ipv4Offset(ip), ip).toBe(reference(ip));
    }
  });

  it('derives a stable, unique IPv6 address from the IPv4 one inside the tailnet /48', () => {
    const ula = randomUlaPrefix();
    expect(ula).toMatch(/^fd[0-9a-f]{2}:[0-9a-f]{1,4}:[0-9a-f]{1,4}::\/48$/);
    expect(ipv6For('fd12:3456:789a::/48', '100.64.0.1')).toBe('fd12:3456:789a::6440:1');
    expect(ipv6For('fd12:3456:789a::/48', '100.127.255.254')).toBe('fd12:3456:789a::647f:fffe');
    expect(randomUlaPrefix()).not.toBe(ula);
  });
});

describe('names', () => {
  it('dedups with -1, -2 and fills gaps', () => {
    expect(uniqueName('laptop', [])).toBe('laptop');
    expect(uniqueName('laptop', ['laptop'])).toBe('laptop-1');
    expect(uniqueName('laptop', ['laptop', 'laptop-1'])).toBe('laptop-2');
    expect(uniqueName('laptop', ['laptop', 'laptop-2'])).toBe('laptop-1');
  });

  it('keeps suffixed names within 63 characters and valid', () => {
    const long = `${'a'.repeat(51)}-${'b'.repeat(11)}`;
    const name = uniqueName(long, [long]);
    expect(name).toBe(`${'a'.repeat(51)}-1`);
    expect(name.length).toBeLessThanOrEqual(63);
  });
});
