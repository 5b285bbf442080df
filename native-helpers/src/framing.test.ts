import { describe, expect, it } from 'vitest';
import { LineSplitter } from './framing.js';

const text = (lines: Buffer[]) => lines.map((l) => l.toString());

describe('LineSplitter', () => {
  it('splits lines across and within chunks', () => {
    const s = new LineSplitter(100);
    expect(text(s.push(Buffer.from('ab')).lines)).toEqual([]);
    expect(text(s.push(Buffer.from('c\nde\n\nf')).lines)).toEqual(['abc', 'de', '']);
    expect(s.finish()?.toString()).toBe('f');
    expect(s.finish()).toBeNull();
  });

  it('accepts a line of exactly the limit and refuses one byte more', () => {
    expect(new LineSplitter(4).push(Buffer.from('abcd\n'))).toEqual({
      lines: [Buffer.from('abcd')],
      tooLarge: false,
    });
    expect(new LineSplitter(4).push(Buffer.from('abcde\n')).tooLarge).toBe(true);
  });

  it('refuses a line over the limit before its newline arrives', () => {
    const s = new LineSplitter(4);
    expect(s.push(Buffer.from('abc')).tooLarge).toBe(false);
    expect(s.push(Buffer.from('de')).tooLarge).toBe(true);
    // Once refused, the stream stays refused.
    expect(s.push(Buffer.from('\nok\n'))).toEqual({ lines: [], tooLarge: true });
    expect(s.finish()).toBeNull();
  });

  it('returns the complete lines that came before an oversized one', () => {
    const frames = new LineSplitter(4).push(Buffer.from('ok\ntoolong'));
    expect(text(frames.lines)).toEqual(['ok']);
    expect(frames.tooLarge).toBe(true);
  });
});
