import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { generateKeyPair, LOGIN_CANCEL_PATH, RegisterResponse } from '@weft/protocol';
import { afterEach, describe, expect, it } from 'vitest';
import type { ControlConfig } from '../config/config.js';
import { Browser } from '../testing/browser.js';
import {
  cleanupAll,
  freePort,
  startTestControl,
  type TestControl,
  type TestControlOptions,
  TestMachine,
  tempDir,
} from '../testing/harness.js';
import {
  CLIENT_ID,
  CLIENT_SECRET,
  confirmAtControl,
  signInAtIdp,
  startIdp,
  type TestIdp,
} from '../testing/identity-provider.js';

// Interactive login against a real OpenID Connect provider (oidc-provider on 127.0.0.1), driven
// through its login and consent pages as a browser would.

afterEach(cleanupAll);

async function setUp(
  config: Partial<ControlConfig> = {},
  options: TestControlOptions = {},
): Promise<{ t: TestControl; idp: TestIdp }> {
  const [controlPort, idpPort] = [await freePort(), await freePort()];
  const controlUrl = `http://127.0.0.1:${controlPort}`;
  const idp = await startIdp(idpPort, [`${controlUrl}/oidc/callback`]);
  let stopped = false;
  const stop = idp.stop;
  idp.stop = async () => {
    if (!stopped) await stop();
    stopped = true;
  };
  const secretFile = join(tempDir(), 'oidc-secret');
  writeFileSync(secretFile, `${CLIENT_SECRET}\n`);
  const t = await startTestControl({
    ...options,
    config: {
      listen: { host: '127.0.0.1', port: controlPort },
      oidc: {
        issuer: idp.issuer,
        clientId: CLIENT_ID,
        clientSecretFile: secretFile,
        groupsClaim: 'groups',
        scopes: ['openid', 'email', 'profile', 'groups'],
      },
      ...config,
    },
  });
  // Control stops first (its cleanup was pushed last), then the provider.
  return { t, idp: { ...idp, stop: idp.stop } };
}

/** A machine that asked to join and got its auth URL. */
async function ask(t: TestControl, hostname = 'laptop') {
  const m = new TestMachine(t);
  const r = await m.register({ hostname });
  expect(r.status).toBe(200);
  const body = RegisterResponse.parse(r.json);
  if (body.status !== 'needs-auth') throw new Error(`expected needs-auth, got ${JSON.stringify(r.json)}`);
  return { m, authUrl: body.authUrl, expiresAt: body.expiresAt };
}

async function nodeNames(t: TestControl): Promise<string[]> {
  return (JSON.parse((await t.cli('nodes', 'list', '--json')).out) as { name: string }[]).map((n) => n.name);
}

describe('interactive login with an OpenID Connect provider', () => {
  it('signs a person in, authorizes exactly the node that asked, and answers its waiting register', async () => {
    const { t, idp } = await setUp({ metricsListen: { host: '127.0.0.1', port: 0 } });
    const { m, authUrl, expiresAt } = await ask(t);
    expect(authUrl).toMatch(new RegExp(`^${t.control.url}/login/[A-Za-z0-9_-]{32}$`));
    expect(Date.parse(expiresAt as string) - Date.now()).toBeGreaterThan(9 * 60_000);
    // Asking again while the login is pending gives the same link.
    expect((await m.register({ hostname: 'laptop' })).json.authUrl).toBe(authUrl);
    const other = await ask(t, 'other');

    const waiting = m.register({ hostname: 'laptop', wait: true });
    const opened = Date.now();
    const browser = new Browser();
    const callback = await signInAtIdp(browser, authUrl, 'alice', idp.issuer);
    const result = await confirmAtControl(browser, callback);
    const reply = await waiting;
    const elapsed = Date.now() - opened;
    console.log(`auth URL opened → node authorized (waiting register answered): ${elapsed} ms`);

    expect(result.status).toBe(200);
    expect(result.body).toContain('laptop is now connected to your tailnet as laptop');
    expect(result.body).toContain('alice@example.com');
    expect(reply.status).toBe(200);
    expect(reply.json).toMatchObject({
      status: 'authorized',
      node: { name: 'laptop', user: 'alice@example.com', nodeKey: m.nodeKey },
    });
    expect(Date.parse(reply.json.node.keyExpiry as string) - Date.now()).toBeGreaterThan(179 * 86_400_000);
    expect(await nodeNames(t)).toEqual(['laptop']);
    // The other machine's link is untouched: it is still waiting for its own sign-in.
    expect((await other.m.register({ hostname: 'other' })).json.authUrl).toBe(other.authUrl);

    const users = JSON.parse((await t.cli('users', 'list', '--json')).out);
    expect(users).toEqual([
      expect.objectContaining({
        name: 'alice@example.com',
        email: 'alice@example.com',
        displayName: 'Alice Example',
        provider: idp.issuer,
        subject: 'alice',
        groups: ['eng', '/platform/oncall'],
        policyGroups: ['group:eng', 'group:platform-oncall'],
      }),
    ]);
    // The metric names the kind of provider, not the issuer URL (a bounded label set).
    const metrics = await (await fetch(t.control.metricsUrl as string)).text();
    expect(metrics).toContain('weft_control_sign_ins_total{provider="oidc"} 1');
    // The link was for one sign-in only.
    const again = await new Browser().request(authUrl);
    expect(again.status).toBe(409);
    expect(again.body).toContain('used already');
  });

  it('asks before connecting: shows the device, OS, address and time, and only its own browser can press Connect', async () => {
    const { t, idp } = await setUp();
    const { m, authUrl } = await ask(t);
    const victim = new Browser();
    const callback = await signInAtIdp(victim, authUrl, 'alice', idp.issuer);
    const confirm = await victim.request(callback);
    expect(confirm.status).toBe(200);
    expect(confirm.body).toContain('Connect this device to your tailnet?');
    expect(confirm.body).toContain('<dd>laptop</dd>');
    expect(confirm.body).toContain('<dd>linux</dd>');
    expect(confirm.body).toContain('<dd>127.0.0.1</dd>');
    expect(confirm.body).toMatch(/<dd>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC<\/dd>/);
    // Signing in alone authorizes nothing.
    expect(await nodeNames(t)).toEqual([]);
    expect((await m.register({ hostname: 'laptop' })).json.status).toBe('needs-auth');

    const form = /action="([^"]+)"[\s\S]*name="token" value="([^"]+)"/.exec(confirm.body);
    const [, action = '', token = ''] = form ?? [];
    const target = new URL(action, t.control.url).href;
    // Another browser, even holding the page's token, has not the cookie: refused.
    const stranger = await new Browser().request(target, { method: 'POST', form: { token } });
    expect(stranger.status).toBe(403);
    expect(stranger.body).toContain('does not belong to this browser');
    // The right browser without the page's token (a cross-site form cannot read it): refused.
    const forged = await victim.request(target, { method: 'POST', form: { token: 'x'.repeat(43) } });
    expect(forged.status).toBe(403);
    expect(await nodeNames(t)).toEqual([]);
    expect(JSON.parse((await t.cli('users', 'list', '--json')).out)).toEqual([]);

    // The person's own browser with the page's token connects the device, once.
    const done = await victim.request(target, { method: 'POST', form: { token } });
    expect(done.status).toBe(200);
    expect(done.body).toContain('laptop is now connected');
    expect(await nodeNames(t)).toEqual(['laptop']);
    const again = await victim.request(target, { method: 'POST', form: { token } });
    expect(again.status).toBe(403);
  });

  it('caps pending logins per source address and does not add a row per visit of a link', async () => {
    const { t } = await setUp({}, { limits: { pendingLoginsPerSource: 2 } });
    const one = await ask(t, 'one');
    const { authUrl } = await ask(t, 'two');
    const third = await new TestMachine(t).register({ hostname: 'three' });
    expect(third.status).toBe(429);
    expect(third.json.error).toEqual({
      code: 'too-many-logins',
      message: expect.stringMatching(
        /^2 sign-ins are already pending from 127\.0\.0\.1: finish or cancel one/,
      ),
    });
    // A machine replacing its own pending login (a new node key) is not held back by the cap.
    one.m.node = generateKeyPair();
    const renewed = await one.m.register({ hostname: 'one' });
    expect(renewed.json.status).toBe('needs-auth');
    expect(renewed.json.authUrl).not.toBe(one.authUrl);
    // One browser opening the link again and again keeps one attempt; cookie-less clients (a new
    // "browser" each time) at most 8 in all.
    const attempts = async () => {
      const { openSqliteDatabase } = await import('../db/sqlite.js');
      const db = await openSqliteDatabase(t.db);
      const rows = await db.selectFrom('auth_attempts').selectAll().execute();
      await db.destroy();
      return rows.length;
    };
    const browser = new Browser();
    for (let i = 0; i < 5; i++) expect((await browser.request(authUrl)).status).toBe(302);
    expect(await attempts()).toBe(1);
    for (let i = 0; i < 20; i++) expect((await fetch(authUrl, { redirect: 'manual' })).status).toBe(302);
    expect(await attempts()).toBe(8);
  });

  it('rate-limits sign-in pages per address with 429 and a clear message', async () => {
    const { t } = await setUp({}, { limits: { loginPagesPerWindow: 3 } });
    const { authUrl } = await ask(t);
    const browser = new Browser();
    for (let i = 0; i < 3; i++) expect((await browser.request(authUrl)).status).toBe(302);
    const limited = await browser.request(authUrl);
    expect(limited.status).toBe(429);
    expect(JSON.parse(limited.body).error).toEqual({
      code: 'rate-limited',
      message: expect.stringMatching(/^too many requests from this address: at most 3 per 1 minute/),
    });
  });

  it('refuses a callback with a wrong or missing state, and one for another browser', async () => {
    const { t, idp } = await setUp();
    const { m, authUrl } = await ask(t);
    const browser = new Browser();
    const callback = new URL(await signInAtIdp(browser, authUrl, 'alice', idp.issuer));

    const wrong = new URL(callback);
    wrong.searchParams.set('state', 'not-the-state');
    const wrongPage = await browser.request(wrong.href);
    expect(wrongPage.status).toBe(400);
    expect(wrongPage.body).toContain('wrong or missing state');

    const missing = new URL(callback);
    missing.searchParams.delete('state');
    const missingPage = await browser.request(missing.href);
    expect(missingPage.status).toBe(400);
    expect(missingPage.body).toContain('carries no state');

    // The real callback, but in a browser that never started this sign-in (a forged link).
    const elsewhere = await new Browser().request(callback.href);
    expect(elsewhere.status).toBe(400);
    expect(elsewhere.body).toContain('not started in this browser');

    expect(await nodeNames(t)).toEqual([]);
    expect((await m.register({ hostname: 'laptop' })).json.status).toBe('needs-auth');
  });

  it('refuses an answer whose nonce belongs to another sign-in', async () => {
    const { t, idp } = await setUp();
    const { authUrl } = await ask(t);
    const browser = new Browser();
    const callback = await signInAtIdp(browser, authUrl, 'alice', idp.issuer, (url) =>
      url.searchParams.set('nonce', 'an-attackers-nonce'),
    );
    const page = await browser.request(callback);
    expect(page.body).toContain('nonce does not match');
    expect(page.status).toBe(400);
    expect(await nodeNames(t)).toEqual([]);
  });

  it('refuses a replayed callback and a replayed code', async () => {
    const { t, idp } = await setUp();
    const first = await ask(t, 'first');
    const browser = new Browser();
    const callback = new URL(await signInAtIdp(browser, first.authUrl, 'alice', idp.issuer));
    expect((await confirmAtControl(browser, callback.href)).body).toContain('is now connected');

    const replayed = await browser.request(callback.href);
    expect(replayed.status).toBe(400);
    expect(replayed.body).toContain('used already');

    // The same code presented for another machine's sign-in: the provider refuses it.
    const second = await ask(t, 'second');
    const start = await browser.request(second.authUrl);
    const state = new URL(start.location as string).searchParams.get('state') as string;
    const injected = new URL(callback);
    injected.searchParams.set('state', state);
    const page = await browser.request(injected.href);
    expect(page.status).toBe(400);
    expect(page.body).toMatch(/refused to complete the sign-in: invalid_grant/);
    expect(await nodeNames(t)).toEqual(['first']);
  });

  it('refuses an expired link, in the browser and to the waiting node', async () => {
    const { t } = await setUp({ loginExpiryMs: 1_000 });
    const { m, authUrl } = await ask(t);
    await new Promise((r) => setTimeout(r, 1_100));
    const page = await new Browser().request(authUrl);
    expect(page.status).toBe(410);
    expect(page.body).toContain('has expired');
    const waited = await m.register({ hostname: 'laptop', wait: true });
    expect(waited.status).toBe(410);
    expect(waited.json.error.code).toBe('login-expired');
    // Without wait the node asks for, and gets, a new link.
    const fresh = await m.register({ hostname: 'laptop' });
    expect(fresh.json.status).toBe('needs-auth');
    expect(fresh.json.authUrl).not.toBe(authUrl);
    expect(await nodeNames(t)).toEqual([]);
  });

  it('lets the node cancel: the waiting register ends and the link stops working', async () => {
    const { t } = await setUp();
    const { m, authUrl } = await ask(t);
    const waiting = m.register({ hostname: 'laptop', wait: true });
    await new Promise((r) => setTimeout(r, 100));
    expect(await m.post(LOGIN_CANCEL_PATH)).toEqual({ status: 200, json: { cancelled: true } });
    const reply = await waiting;
    expect(reply.status).toBe(410);
    expect(reply.json.error.code).toBe('login-cancelled');
    const page = await new Browser().request(authUrl);
    expect(page.status).toBe(410);
    expect(page.body).toContain('cancelled this sign-in');
  });

  it('answers a waiting register with needs-auth again when nobody signs in in time', async () => {
    const { t } = await setUp({}, { loginWaitMs: 300 });
    const { m, authUrl } = await ask(t);
    const reply = await m.register({ hostname: 'laptop', wait: true });
    expect(reply.json).toMatchObject({ status: 'needs-auth', authUrl });
  });

  it('refuses a person outside the allowed domains, authorizing nothing', async () => {
    const { t, idp } = await setUp({ allow: { domains: ['example.com'], users: [], groups: [] } });
    const { m, authUrl } = await ask(t);
    const browser = new Browser();
    const page = await browser.request(await signInAtIdp(browser, authUrl, 'bob', idp.issuer));
    expect(page.status).toBe(403);
    expect(page.body).toContain('bob@other.org is not in an allowed domain (example.com)');
    expect(await nodeNames(t)).toEqual([]);
    expect(JSON.parse((await t.cli('users', 'list', '--json')).out)).toEqual([]);
    // The link still works for someone who is allowed.
    const another = new Browser();
    const ok = await confirmAtControl(another, await signInAtIdp(another, authUrl, 'alice', idp.issuer));
    expect(ok.status).toBe(200);
    expect((await m.register({ hostname: 'laptop' })).json.status).toBe('authorized');
  });

  it('says the provider is down when it cannot be reached at the callback, authorizing nothing', async () => {
    const { t, idp } = await setUp();
    const { m, authUrl } = await ask(t);
    const browser = new Browser();
    const callback = await signInAtIdp(browser, authUrl, 'alice', idp.issuer);
    await idp.stop();
    const page = await browser.request(callback);
    expect(page.status).toBe(502);
    expect(page.body).toContain('could not be reached');
    expect(await nodeNames(t)).toEqual([]);
    expect((await m.register({ hostname: 'laptop' })).json.status).toBe('needs-auth');
  });

  it('refuses to start when the issuer cannot be discovered', async () => {
    const port = await freePort();
    const secretFile = join(tempDir(), 'secret');
    writeFileSync(secretFile, 'x');
    const started = startTestControl({
      config: {
        oidc: {
          issuer: `http://127.0.0.1:${port}`,
          clientId: 'x',
          clientSecretFile: secretFile,
          groupsClaim: 'groups',
          scopes: ['openid'],
        },
      },
    });
    await expect(started).rejects.toThrow(
      new RegExp(
        `cannot start control: cannot discover the OIDC issuer http://127.0.0.1:${port} .*check --oidc-issuer`,
      ),
    );
  });
});
