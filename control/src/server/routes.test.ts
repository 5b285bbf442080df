import { afterEach, describe, expect, it } from 'vitest';
import { cleanupAll, startTestControl, twoOnline } from '../testing/harness.js';

afterEach(cleanupAll);

// A node advertises routes over its stream; `weft-control routes` lists and approves them; the
// running server sends the approved ones to peers (the admin CLI is another database connection,
// so this goes through the change feed as in production).

describe('advertised routes, approved from the CLI', () => {
  it('are stored, listed as pending, approved, sent to peers, and withdrawn again', async () => {
    const t = await startTestControl();
    const { sa: sr, sb: sc } = await twoOnline(t, { names: ['router', 'client'] });

    // The tailnet's own range cannot be offered; duplicates and order do not matter.
    sr.send({
      type: 'routes',
      advertisedRoutes: ['198.51.100.0/24', '0.0.0.0/0', '::/0', '100.64.0.0/10', '198.51.100.0/24'],
    });
    const listed = async () => JSON.parse((await t.cli('routes', 'list', '--json')).out);
    const until = async (what: string, ok: () => Promise<boolean>) => {
      for (let i = 0; i < 100; i++) {
        if (await ok()) return;
        await new Promise((r) => setTimeout(r, 50));
      }
      throw new Error(`timed out waiting for ${what}`);
    };
    await until('the routes stored', async () => (await listed()).length === 1);
    expect(await listed()).toEqual([
      {
        node: 'router',
        advertised: ['0.0.0.0/0', '198.51.100.0/24', '::/0'],
        approved: [],
        enabled: [],
        exitNode: false,
      },
    ]);
    expect((await t.cli('routes', 'list')).out).toMatch(
      /NODE +ADVERTISED +ENABLED +PENDING APPROVAL\nrouter +0\.0\.0\.0\/0,198\.51\.100\.0\/24,::\/0 +- +0\.0\.0\.0/,
    );
    const peer = () => sc.netmap?.peers.find((p) => p.name === 'router');
    expect(peer()?.allowedIPs).toHaveLength(2);

    const bad = await t.cli('routes', 'approve', 'router', '198.51.100.1/24');
    expect(bad.code).toBe(1);
    expect(bad.err).toMatch(/invalid route/);
    expect((await t.cli('routes', 'approve', 'nobody', '198.51.100.0/24')).err).toMatch(/no node named/);

    const ok = await t.cli('routes', 'approve', 'router', '198.51.100.0/24');
    expect(ok.code).toBe(0);
    await sc.until(
      'subnet route at the client',
      () => peer()?.allowedIPs.includes('198.51.100.0/24') === true,
    );
    expect(peer()?.exitNodeOption).toBeUndefined();
    await sr.until(
      'own route at the router',
      (c) => c.netmap?.self.allowedIPs.includes('198.51.100.0/24') === true,
    );

    expect((await t.cli('routes', 'approve', 'router', 'exit')).code).toBe(0);
    await sc.until('exit node at the client', () => peer()?.exitNodeOption === true);
    expect(peer()?.allowedIPs).toEqual(expect.arrayContaining(['0.0.0.0/0', '::/0', '198.51.100.0/24']));
    expect((await listed())[0]).toMatchObject({
      exitNode: true,
      enabled: ['0.0.0.0/0', '198.51.100.0/24', '::/0'],
    });

    // The node stops offering the exit node: it is not used, though the approval stays.
    sr.send({ type: 'routes', advertisedRoutes: ['198.51.100.0/24'] });
    await sc.until('exit node gone', () => peer()?.exitNodeOption === undefined);
    expect((await listed())[0]).toMatchObject({ approved: ['0.0.0.0/0', '198.51.100.0/24', '::/0'] });

    expect((await t.cli('routes', 'unapprove', 'router', '198.51.100.0/24')).code).toBe(0);
    await sc.until('subnet route gone', () => peer()?.allowedIPs.length === 2);
  });
});
