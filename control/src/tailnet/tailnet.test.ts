import { formatAddr, parseIPv4 } from '@weft/protocol';
import { describe, expect, it } from 'vitest';
import { ipv6For, lowestFreeIPv4, randomUlaPrefix } from './addresses.js';
import { uniqueName } from './names.js';

describe('address allocation', () => {
  it('hands out the lowest free address, skipping the reserved ones', () => {
    expect(lowestFreeIPv4([])).toBe('100.64.0.1');
    expect(lowestFreeIPv4(['100.64.0.1', '100.64.0.3'])).toBe('100.64.0.2');
    const upTo = (n: number) => Array.from({ length: n }, (_, i) => `100.64.${i >> 8}.${i & 255}`);
    // .255 and .0 inside the /10 are ordinary host addresses; only the /10's own ends are not.
    expect(lowestFreeIPv4(upTo(256))).toBe('100.64.1.0');
  });

  it('is the same as the general address parser would give, for any set of used addresses', () => {
    // The reference: parse each with protocol's parser, then count up from the range's start.
    const reference = (used: string[]) => {
      const first = parseIPv4('100.64.0.0') as bigint;
      const taken = new Set(used.map((ip) => parseIPv4(ip)).filter((v) => v !== null));
      for (const r of ['100.64.0.0', '100.127.255.255', '100.100.100.100']) taken.add(parseIPv4(r) as bigint);
      for (let v = first; ; v++) if (!taken.has(v)) return formatAddr({ family: 4, value: v });
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
    ];
    for (let round = 0; round < 200; round++) {
      const used = Array.from({ length: rand(600) }, () =>
        rand(10) === 0 ? (odd[rand(odd.length)] as string) : `100.64.${rand(3)}.${rand(256)}`,
      );
      expect(lowestFreeIPv4(used), used.join(' ')).toBe(reference(used));
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
