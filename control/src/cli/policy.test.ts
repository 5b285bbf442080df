import { afterEach, describe, expect, it, vi } from 'vitest';
import { cleanupAll } from '../testing/harness.js';
import { storeWithNode } from '../testing/store.js';
import { checkPolicyText } from './policy.js';

afterEach(cleanupAll);

const ACLS = `"tagOwners": { "tag:server": [] }, "acls": [{ "action": "accept", "src": ["*"], "dst": ["tag:server:22"] }]`;

describe('checking a policy against the database', () => {
  it('reads the nodes only for a policy with tests (they are all that looks at nodes)', async () => {
    const store = await storeWithNode();
    const nodes = vi.spyOn(store, 'listNodes');
    expect(await checkPolicyText(store, `{ ${ACLS} }`)).toMatchObject({ ok: true });
    expect(nodes).not.toHaveBeenCalled();
    // The stored node (tag:server, 100.64.0.1) is what a test runs against.
    const tested = (port: number) =>
      `{ ${ACLS}, "tests": [{ "src": "100.64.0.9", "accept": ["100.64.0.1:${port}"] }] }`;
    expect(await checkPolicyText(store, tested(22))).toMatchObject({ ok: true });
    expect(await checkPolicyText(store, tested(23))).toMatchObject({ ok: false });
    expect(nodes).toHaveBeenCalledTimes(2);
    expect(await checkPolicyText(store, '{ "acls": [')).toMatchObject({ ok: false });
  });
});
