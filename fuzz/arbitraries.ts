import { type Addr, formatAddr, formatEndpoint, formatPrefix, maskAddr } from '@weft/protocol';
import fc from 'fast-check';

// Generators for the wire's primitives, biased toward the values validators must think about:
// short prefixes, the tailnet's ranges, loopback, link-local and multicast.

export const key = fc
  .uint8Array({ minLength: 32, maxLength: 32 })
  .map((b) => Buffer.from(b).toString('base64'));

const v4 = fc.oneof(
  fc.bigInt({ min: 0n, max: 2n ** 32n - 1n }),
  fc.constantFrom(0x64400001n, 0x7f000001n, 0xe0000001n, 0xffffffffn, 0n, 0xc6120001n),
);
const v6 = fc.oneof(
  fc.bigInt({ min: 0n, max: 2n ** 128n - 1n }),
  fc.constantFrom(0n, 1n, 0xfe80n << 112n, 0xff02n << 112n, (0xfd7an << 112n) | 1n, 0xffff7f000001n),
);
export const addr: fc.Arbitrary<Addr> = fc.oneof(
  v4.map((value) => ({ family: 4 as const, value })),
  v6.map((value) => ({ family: 6 as const, value })),
);

/** Prefix lengths: any, with the dangerous short ones and host routes over-represented. */
const bitsFor = (family: 4 | 6) =>
  fc.oneof(
    fc.integer({ min: 0, max: family === 4 ? 32 : 128 }),
    fc.constantFrom(0, 1, 2, family === 4 ? 32 : 128),
  );

/** A route: host bits zero. */
export const cidr = addr.chain((a) =>
  bitsFor(a.family).map((bits) => formatPrefix({ addr: maskAddr(a, bits), bits })),
);
/**
 * A route near the exit-route share (protocol's exit-route.ts: more than 1/64 of a family): alone
 * each stays under it, two of them together may not.
 */
export const nearExitCidr = addr.chain((a) =>
  fc.integer({ min: 5, max: 8 }).map((bits) => formatPrefix({ addr: maskAddr(a, bits), bits })),
);
/** An interface address: host bits may be set. */
export const ifaceAddr = addr.chain((a) => bitsFor(a.family).map((bits) => `${formatAddr(a)}/${bits}`));
export const endpoint = fc
  .tuple(addr, fc.integer({ min: 0, max: 65535 }))
  .map(([a, port]) => formatEndpoint(a, port));

export const interfaceName = fc.stringMatching(/^[A-Za-z][A-Za-z0-9_-]{0,14}$/);

/** Words that break validators: bad prefixes, names, keys, sizes. */
export const NET_WORDS = [
  '0.0.0.0/0',
  '::/0',
  '0.0.0.0/1',
  '128.0.0.0/1',
  '::/1',
  '8000::/1',
  '100.64.0.1/32',
  '100.64.0.1/0',
  '127.0.0.1/8',
  '224.0.0.0/4',
  'fe80::/10',
  '198.18.0.1/24',
  '1.2.3.4/33',
  '::ffff:1.2.3.4/128',
  '1.2.3.4:51820',
  '[fe80::1%eth0]:1',
  '[::1]:0',
  'wg0',
  'wg0;reboot',
  'a-very-long-interface-name',
  '../../etc',
  'AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=',
  'AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAB=',
  '',
  0,
  -1,
  65535,
  65536,
  1.5,
  2 ** 53,
  true,
];
