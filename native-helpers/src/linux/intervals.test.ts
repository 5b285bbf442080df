import { mergeSpans } from '@weft/protocol';
import { describe, expect, it } from 'vitest';
import {
  disjointRects,
  disjointRectsBound,
  formatAddrSpan,
  formatPortSpan,
  prefixSpan,
  type Rect,
} from './intervals.js';

const span = (first: number, last: number) => ({ first: BigInt(first), last: BigInt(last) });
const rect = (a: [number, number], p: [number, number]): Rect => ({ addr: span(...a), ports: span(...p) });

describe('intervals', () => {
  it('merges overlapping and adjacent spans', () => {
    expect(mergeSpans([span(5, 9), span(0, 2), span(3, 4), span(20, 30), span(21, 22)])).toEqual([
      span(0, 9),
      span(20, 30),
    ]);
  });

  it('cuts overlapping rectangles into disjoint ones that cover the same points', () => {
    const input = [
      rect([0, 99], [20, 30]),
      rect([10, 10], [22, 22]),
      rect([10, 10], [25, 40]),
      rect([50, 200], [1, 1]),
    ];
    const out = disjointRects(input);
    expect(out).toEqual([
      rect([0, 9], [20, 30]),
      rect([10, 10], [20, 40]),
      rect([11, 49], [20, 30]),
      rect([50, 99], [1, 1]),
      rect([50, 99], [20, 30]),
      rect([100, 200], [1, 1]),
    ]);
    // Same coverage, point by point, and no two outputs overlap.
    const covered = (rs: Rect[], a: number, p: number) =>
      rs.some((r) => r.addr.first <= a && a <= r.addr.last && r.ports.first <= p && p <= r.ports.last);
    for (let a = 0; a <= 210; a += 1)
      for (const p of [0, 1, 2, 19, 20, 22, 25, 30, 31, 40, 41])
        expect(covered(out, a, p)).toBe(covered(input, a, p));
    for (const [i, x] of out.entries())
      for (const y of out.slice(i + 1))
        expect(
          x.addr.first <= y.addr.last &&
            y.addr.first <= x.addr.last &&
            x.ports.first <= y.ports.last &&
            y.ports.first <= x.ports.last,
        ).toBe(false);
  });

  it('joins neighbouring pieces with the same ports again', () => {
    expect(disjointRects([rect([0, 9], [1, 2]), rect([10, 19], [1, 2])])).toEqual([rect([0, 19], [1, 2])]);
  });

  it('writes spans as nft does: address, prefix or range', () => {
    expect(formatAddrSpan(4, prefixSpan('100.64.0.0/10').span)).toBe('100.64.0.0/10');
    expect(formatAddrSpan(4, prefixSpan('100.64.0.1/32').span)).toBe('100.64.0.1');
    expect(formatAddrSpan(4, span(0x64400003, 0x64400009))).toBe('100.64.0.3-100.64.0.9');
    expect(formatAddrSpan(6, prefixSpan('::/0').span)).toBe('::/0');
    expect(formatAddrSpan(6, prefixSpan('fd00::/8').span)).toBe('fd00::/8');
    expect(formatPortSpan(span(443, 443))).toBe('443');
    expect(formatPortSpan(span(0, 65535))).toBe('0-65535');
  });
});

describe('disjointRectsBound', () => {
  it('is never below the number of rectangles disjointRects builds', () => {
    // A small deterministic generator, so a failure is reproducible.
    let seed = 7;
    const next = (n: number) => {
      seed = (seed * 1103515245 + 12345) % 2 ** 31;
      return seed % n;
    };
    for (let round = 0; round < 300; round++) {
      const rects = Array.from({ length: 1 + next(12) }, () => {
        const a = next(40);
        const p = next(10);
        return rect([a, a + next(15)], [p, p + next(3)]);
      });
      expect(disjointRectsBound(rects)).toBeGreaterThanOrEqual(disjointRects(rects).length);
    }
  });

  it('grows with pieces times distinct ports, not with the square of the input when ports repeat', () => {
    const wide = Array.from({ length: 100 }, (_, i) => rect([0, 1000], [i * 2, i * 2]));
    const narrow = Array.from({ length: 100 }, (_, i) => rect([i * 2, i * 2], [500, 500]));
    expect(disjointRects([...wide, ...narrow]).length).toBeGreaterThan(100 * 100);
    expect(disjointRectsBound([...wide, ...narrow])).toBeLessThanOrEqual(201 * 101);
    const samePort = Array.from({ length: 1000 }, (_, i) => rect([i * 2, i * 2], [443, 443]));
    expect(disjointRectsBound(samePort)).toBe(1000);
    expect(disjointRectsBound([])).toBe(0);
  });
});
