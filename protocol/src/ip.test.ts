import { describe, expect, it } from 'vitest';
import { canonicalPrefix, formatAddr, parseAddr, parseEndpoint, parseIPv6, parsePrefix } from './ip.js';

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
