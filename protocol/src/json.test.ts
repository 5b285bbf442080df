import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { parseJsonAs } from './json.js';

describe('parseJsonAs', () => {
  const Point = z.strictObject({ x: z.number(), y: z.number() });

  it('gives the value when the text is JSON of the shape', () => {
    expect(parseJsonAs(Point, '{"x":1,"y":2}')).toEqual({ x: 1, y: 2 });
  });

  it('gives null for text that is not JSON, or JSON of another shape', () => {
    expect(parseJsonAs(Point, '{"x":1,')).toBeNull();
    expect(parseJsonAs(Point, '{"x":1,"y":"2"}')).toBeNull();
    expect(parseJsonAs(Point, '{"x":1,"y":2,"z":3}')).toBeNull();
    expect(parseJsonAs(Point, '')).toBeNull();
  });
});
