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
