import { afterEach, describe, expect, it } from 'vitest';
import { cleanupAll, startTestControl, TestMachine } from '../testing/harness.js';

// The admin HTTP API: the CLI's functions behind `Authorization: Bearer <API key>`.

afterEach(cleanupAll);

type Answer = {
  error: { code: string; message: string };
  key: string;
  nodes: { name: string }[];
  users: unknown[];
  deleted: string;
};

describe('admin API /api/v1/', () => {
  it('serves nodes, users and pre-auth keys to a valid key, and refuses wrong, revoked and expired keys', async () => {
    const t = await startTestControl();
    const key = (await t.cli('apikey', 'create')).out.trim();
    const api = (path: string, init: { method?: string; body?: unknown; token?: string } = {}) =>
      fetch(`${t.control.url}/api/v1${path}`, {
        method: init.method ?? 'GET',
        headers: {
          authorization: `Bearer ${init.token ?? key}`,
          ...(init.body === undefined ? {} : { 'content-type': 'application/json' }),
        },
        body: init.body === undefined ? undefined : JSON.stringify(init.body),
      }).then(async (r) => ({ status: r.status, json: (await r.json()) as Answer }));

    expect((await api('/nodes', { token: 'weftapi-00000000-nope' })).json.error.code).toBe('invalid-api-key');
    const none = await fetch(`${t.control.url}/api/v1/nodes`);
    expect(none.status).toBe(401);

    await t.cli('users', 'create', 'alice');
    const made = await api('/preauthkeys', {
      method: 'POST',
      body: { user: 'alice', reusable: true, tags: ['tag:ci'] },
    });
    expect(made.status).toBe(200);
    expect(made.json.key).toMatch(/^weftkey-/);
    const sa = await (async () => {
      const a = new TestMachine(t);
      await a.join('a', made.json.key);
      const b = new TestMachine(t);
      await b.join('b', made.json.key);
      return a.stream();
    })();
    await sa.until('a sees b', (c) => c.peerNames().includes('b'));

    const nodes = await api('/nodes');
    expect(nodes.json.nodes.map((n) => n.name)).toEqual(['a', 'b']);
    expect(nodes.json.nodes[0]).toMatchObject({ tags: ['tag:ci'], ipv4: '100.64.0.1' });
    expect((await api('/users')).json.users).toEqual([
      expect.objectContaining({ name: 'alice', groups: [] }),
    ]);

    const expired = await api('/nodes/b/expire', { method: 'POST' });
    expect(expired.status).toBe(200);
    await sa.until('b expired away', (c) => !c.peerNames().includes('b'), 2_000);
    expect((await api('/nodes/b', { method: 'DELETE' })).json).toEqual({ deleted: 'b' });
    expect(await api('/nodes/b', { method: 'DELETE' })).toEqual({
      status: 404,
      json: { error: { code: 'not-found', message: 'no node named b' } },
    });
    expect((await api('/preauthkeys', { method: 'POST', body: { user: 'nobody' } })).status).toBe(404);
    expect((await api('/preauthkeys', { method: 'POST', body: { user: 'alice', admin: true } })).status).toBe(
      400,
    );

    const listed = JSON.parse((await t.cli('apikey', 'list', '--json')).out) as {
      prefix: string;
      lastUsedAt: string;
    }[];
    expect(listed[0]?.lastUsedAt).not.toBeNull();
    await t.cli('apikey', 'revoke', listed[0]?.prefix as string);
    expect((await api('/nodes')).json.error.code).toBe('invalid-api-key');

    const short = (await t.cli('apikey', 'create', '--expiration', '1s')).out.trim();
    await new Promise((r) => setTimeout(r, 1_100));
    expect((await api('/nodes', { token: short })).json.error.code).toBe('api-key-expired');
  });
});
