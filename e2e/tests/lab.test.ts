import { afterAll, beforeAll, expect, it } from 'vitest';
import { Lab } from '../lab/index.js';

let lab: Lab;
beforeAll(async () => {
  lab = await Lab.create();
});
afterAll(async () => {
  await lab?.cleanup();
});

it('lab hosts on one segment reach each other and nothing else', async () => {
  const seg = await lab.addSegment();
  const a = await lab.addHost('a', { segment: seg, address: '198.18.0.1/24' });
  const b = await lab.addHost('b', { segment: seg, address: '198.18.0.2/24' });
  expect(await a.ping(b.ip)).toBe(true);
  expect(await a.ping('198.18.0.9', { deadlineS: 1 })).toBe(false);
});
