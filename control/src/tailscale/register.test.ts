import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { Browser } from '../testing/browser.js';
import { cleanupAll, freePort, startTestControl, type TestControl, tempDir } from '../testing/harness.js';
import {
  CLIENT_ID,
  CLIENT_SECRET,
  confirmAtControl,
  signInAtIdp,
  startIdp,
} from '../testing/identity-provider.js';
import { TsTestClient } from '../testing/tailscale-client.js';

afterEach(cleanupAll);

interface NodeJson {
  name: string;
  ipv4: string;
  tags: string[];
  user: string | null;
  ephemeral: boolean;
  kind: string;
  version: string | null;
  keyExpiry: string | null;
}

async function nodes(t: TestControl): Promise<NodeJson[]> {
  return JSON.parse((await t.cli('nodes', 'list', '--json')).out) as NodeJson[];
}

describe('/machine/register for Tailscale clients', () => {
  it('joins with reusable, tagged and ephemeral pre-auth keys; a used single-use key is refused', async () => {
    const t = await startTestControl();
    const reusable = await t.key('--reusable');
    const a = new TsTestClient(t.control.url);
    expect(await a.register({ Auth: { AuthKey: reusable } }, 'Alice’s MacBook Pro')).toMatchObject({
      MachineAuthorized: true,
      NodeKeyExpired: false,
      AuthURL: '',
      User: { LoginName: 'alice' },
    });
    // The same machine again (a restart) is the same node.
    await a.register({ Auth: { AuthKey: reusable } }, 'Alice’s MacBook Pro');

    const tagged = new TsTestClient(t.control.url);
    const reply = await tagged.register({ Auth: { AuthKey: await t.key('--tags', 'tag:server') } }, 'srv');
    expect(reply.User).toMatchObject({ LoginName: 'tagged-devices' });

    const eph = new TsTestClient(t.control.url);
    await eph.register({ Auth: { AuthKey: await t.key('--ephemeral') } }, 'ci-job');

    const memState = new TsTestClient(t.control.url);
    await memState.register({ Auth: { AuthKey: reusable }, Ephemeral: true }, 'mem-state');

    const single = await t.key();
    await new TsTestClient(t.control.url).register({ Auth: { AuthKey: single } }, 'one');
    const second = await new TsTestClient(t.control.url).register({ Auth: { AuthKey: single } }, 'two');
    expect(second).toMatchObject({
      MachineAuthorized: false,
      Error: expect.stringMatching(/already been used/),
    });
    const unknown = await new TsTestClient(t.control.url).register(
      { Auth: { AuthKey: 'tskey-nonsense' } },
      'x',
    );
    expect(unknown.Error).toMatch(/unknown pre-auth key/);

    const list = await nodes(t);
    expect(list.map((n) => n.name).sort()).toEqual([
      'alices-macbook-pro',
      'ci-job',
      'mem-state',
      'one',
      'srv',
    ]);
    expect(list.find((n) => n.name === 'srv')).toMatchObject({ tags: ['tag:server'], user: null });
    expect(list.find((n) => n.name === 'ci-job')).toMatchObject({ ephemeral: true });
    expect(list.find((n) => n.name === 'mem-state')).toMatchObject({ ephemeral: true });
    expect(list.find((n) => n.name === 'alices-macbook-pro')).toMatchObject({ ephemeral: false });
    expect(list.every((n) => n.kind === 'tailscale' && n.version === '1.102.5-test')).toBe(true);
    for (const c of [a, tagged, eph, memState]) c.close();
  });

  it('binds the node key to its machine: another machine cannot take it', async () => {
    const t = await startTestControl();
    const key = await t.key('--reusable');
    const a = new TsTestClient(t.control.url);
    await a.register({ Auth: { AuthKey: key } }, 'a');
    const thief = new TsTestClient(t.control.url);
    thief.nodePrivate = a.nodePrivate;
    const r = await thief.register({ Auth: { AuthKey: key } }, 'thief');
    expect(r).toMatchObject({
      MachineAuthorized: false,
      Error: expect.stringMatching(/belongs to another node/),
    });
    expect((await nodes(t)).map((n) => n.name)).toEqual(['a']);
    a.close();
    thief.close();
  });

  it('rotates the node key with OldNodeKey (same node and address) and logs out with a past Expiry', async () => {
    const t = await startTestControl();
    const a = new TsTestClient(t.control.url);
    await a.register({ Auth: { AuthKey: await t.key() } }, 'a');
    const old = a.nodeKey;
    a.nodePrivate = new TsTestClient(t.control.url).nodePrivate;
    const rotated = await a.register({ OldNodeKey: old }, 'a');
    expect(rotated).toMatchObject({ MachineAuthorized: true });
    const [node] = await nodes(t);
    expect(node).toMatchObject({ name: 'a', ipv4: '100.64.0.1' });

    const out = await a.register({ Expiry: new Date(Date.now() - 1000).toISOString() }, 'a');
    expect(out).toMatchObject({ NodeKeyExpired: true, MachineAuthorized: false });
    const [after] = await nodes(t);
    expect(Date.parse(after?.keyExpiry as string)).toBeLessThanOrEqual(Date.now());
    // Without an identity provider, coming back needs a key: a clear error, nothing changed.
    const back = await a.register({}, 'a');
    expect(back.Error).toMatch(/pre-auth key/);
    a.close();
  });

  it('signs in interactively through the same OIDC flow: AuthURL, then the Followup long-poll', async () => {
    const [controlPort, idpPort] = [await freePort(), await freePort()];
    const controlUrl = `http://127.0.0.1:${controlPort}`;
    const idp = await startIdp(idpPort, [`${controlUrl}/oidc/callback`]);
    const secretFile = join(tempDir(), 'oidc-secret');
    writeFileSync(secretFile, `${CLIENT_SECRET}\n`);
    const t = await startTestControl({
      config: {
        listen: { host: '127.0.0.1', port: controlPort },
        oidc: {
          issuer: idp.issuer,
          clientId: CLIENT_ID,
          clientSecretFile: secretFile,
          groupsClaim: 'groups',
          scopes: ['openid', 'email', 'profile'],
        },
      },
    });
    try {
      const c = new TsTestClient(t.control.url);
      const first = await c.register({}, 'phone');
      expect(first).toMatchObject({
        MachineAuthorized: false,
        AuthURL: expect.stringContaining(`${controlUrl}/login/`),
      });
      const waiting = c.register({ Followup: first.AuthURL }, 'phone');
      const browser = new Browser();
      const callback = await signInAtIdp(browser, first.AuthURL as string, 'alice', idp.issuer);
      expect((await confirmAtControl(browser, callback)).status).toBe(200);
      expect(await waiting).toMatchObject({
        MachineAuthorized: true,
        User: { LoginName: 'alice@example.com' },
      });
      expect(await nodes(t)).toEqual([expect.objectContaining({ name: 'phone', kind: 'tailscale' })]);
      c.close();
    } finally {
      await t.control.close();
      await idp.stop();
    }
  });
});
