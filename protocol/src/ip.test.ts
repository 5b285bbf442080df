import { describe, expect, it } from 'vitest';
import {
  canonicalPrefix,
  formatAddr,
  formatPrefix,
  parseAddr,
  parseAddrRange,
  parseEndpoint,
  parseIPv6,
  parsePrefix,
  prefixRange,
  rangeToPrefixes,
} from './ip.js';

describe('ip parsing', () => {
  it('accepts canonical forms and round-trips them', () => {
    for (const a of [
      '100.64.0.1',
      '0.0.0.0',
      '255.255.255.255',
      '::',
      '::1',
      'fd7a:115c:a1e0::1',
      '2001:db8::8:800:200c:417a',
    ]) {
      const parsed = parseAddr(a);
      expect(parsed, a).not.toBeNull();
      expect(formatAddr(parsed!)).toBe(a);
    }
    expect(parseIPv6('::ffff:198.51.100.1')).toBe(0xffffc6336401n);
  });

  it('refuses sloppy or hostile forms', () => {
    for (const a of [
      '1.2.3',
      '01.2.3.4',
      '1.2.3.256',
      '0x1.2.3.4',
      ' 1.2.3.4',
      '1:2:3:4:5:6:7:8:9',
      '1::2::3',
      'fe80::1%eth0',
      '',
    ]) {
      expect(parseAddr(a), a).toBeNull();
    }
  });

  it('parses prefixes, strictly when asked', () => {
    expect(parsePrefix('1.2.3.4/33')).toBeNull();
    expect(parsePrefix('1.2.3.4/32')).not.toBeNull();
    expect(parsePrefix('100.64.0.1/10')).not.toBeNull();
    expect(parsePrefix('100.64.0.1/10', { strict: true })).toBeNull();
    expect(parsePrefix('::/0', { strict: true })).not.toBeNull();
    expect(parsePrefix('1.2.3.4/032')).toBeNull();
    expect(canonicalPrefix('fd00:0:0::1/8')).toBe('fd00::/8');
  });

  it('parses endpoints', () => {
    expect(parseEndpoint('198.18.0.1:41641')?.port).toBe(41641);
    expect(parseEndpoint('[fd00::1]:51820')?.addr.family).toBe(6);
    expect(parseEndpoint('fd00::1:51820')).toBeNull();
    expect(parseEndpoint('198.18.0.1:0')).toBeNull();
    expect(parseEndpoint('198.18.0.1:65536')).toBeNull();
  });
});

describe('address ranges', () => {
  it('gives the first and last address of a prefix', () => {
    const r = prefixRange(parsePrefix('198.18.1.7/16')!);
    expect(formatAddr({ family: 4, value: r.first })).toBe('198.18.0.0');
    expect(formatAddr({ family: 4, value: r.last })).toBe('198.18.255.255');
    expect(prefixRange(parsePrefix('::/0')!).last).toBe((1n << 128n) - 1n);
  });

  it('parses a-b ranges strictly', () => {
    expect(parseAddrRange('100.64.0.0-100.115.91.255')).toEqual({
      family: 4,
      first: 0x64400000n,
      last: 0x64735bffn,
    });
    expect(parseAddrRange('198.18.0.2-198.18.0.1')).toBeNull();
    expect(parseAddrRange('198.18.0.1-::1')).toBeNull();
    expect(parseAddrRange('198.18.0.1')).toBeNull();
  });

  it('covers a range with the fewest prefixes', () => {
    const cover = (text: string) => rangeToPrefixes(parseAddrRange(text)!).map(formatPrefix);
    expect(cover('100.115.94.0-100.127.255.255')).toEqual([
      '100.115.94.0/23',
      '100.115.96.0/19',
      '100.115.128.0/17',
      '100.116.0.0/14',
      '100.120.0.0/13',
    ]);
    expect(cover('0.0.0.0-255.255.255.255')).toEqual(['0.0.0.0/0']);
    expect(cover('::1-::1')).toEqual(['::1/128']);
  });
});
