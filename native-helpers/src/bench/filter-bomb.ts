import type { FilterRuleSpec } from '@weft/protocol';

/**
 * A packet filter whose rendering grows as the square of its size: `wide` destinations over the whole
 * tailnet range, each with its own port, and `narrow` /32s inside it that cut the range into pieces,
 * every one of which carries all the wide ports. With 400 of each the request is about 47 KB and,
 * unbounded, renders about 320,000 set elements per port protocol. Used by tests and the bench.
 */
export function filterBomb(wide = 400, narrow = 400): FilterRuleSpec[] {
  const dst = [
    ...Array.from({ length: wide }, (_, i) => ({
      prefix: '100.64.0.0/10',
      ports: { first: 2 * i + 1, last: 2 * i + 1 },
    })),
    ...Array.from({ length: narrow }, (_, i) => ({
      // Every other address, so no two narrow pieces touch and merge.
      prefix: `100.64.${(2 * i) >> 8}.${(2 * i) & 255}/32`,
      ports: { first: 0, last: 0 },
    })),
  ];
  return [{ src: ['0.0.0.0/0'], dst, protos: [6, 17] }];
}
