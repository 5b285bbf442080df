import { describe, expect, it } from 'vitest';
import { promSample } from './prometheus.js';

const TEXT = `# HELP weft_x_total Things.
# TYPE weft_x_total counter
weft_x_total{kind="a b",outcome="ok"} 3
weft_x_total{kind="c",outcome="ok"} 4 1700000000000
# HELP weft_x Open things.
# TYPE weft_x gauge
weft_x 0.5
weft_x_bucket{le="1"} 7
`;

describe('promSample', () => {
  it('reads a sample by its name and its labels as written, before any timestamp', () => {
    expect(promSample(TEXT, 'weft_x_total', 'kind="a b",outcome="ok"')).toBe(3);
    expect(promSample(TEXT, 'weft_x_total', 'kind="c",outcome="ok"')).toBe(4);
    expect(promSample(TEXT, 'weft_x')).toBe(0.5);
    expect(promSample(TEXT, 'weft_x_bucket', 'le="1"')).toBe(7);
  });

  it('is undefined for a sample not there: other labels, their order, or a longer name', () => {
    expect(promSample(TEXT, 'weft_x_total', 'kind="d",outcome="ok"')).toBeUndefined();
    expect(promSample(TEXT, 'weft_x_total', 'outcome="ok",kind="c"')).toBeUndefined();
    expect(promSample(TEXT, 'weft_x_total')).toBeUndefined();
    expect(promSample(TEXT, 'weft')).toBeUndefined();
  });
});
