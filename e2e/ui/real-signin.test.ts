import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { createWriteStream, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Browser, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BIN, Lab, removeScratch, scratchDir, WeftNode, waitFor } from '../lab/index.js';
import { joinRoot, loadIdentitySupport, type TestIdp } from '../lab/signin.js';
import { startWeftWeb, type WeftWeb } from '../lab/weft-web.js';
import { axeSerious, launchChromium, screenshots } from './harness.js';

// Interactive sign-in through the desktop UI, end to end with real parts: the person types the
// control server's address, the UI shows the auth link, the browser opens it, control sends it to
// a real OpenID Connect provider (oidc-provider), the person signs in there, and the waiting
// engine (weftd on a lab host) is authorized and connects — the UI follows by itself. The UI is
// served by the real `weft web` next to that engine.
// The browser must reach control, so the root namespace joins the lab's segment through a veth;
// control and the provider run there, the engines in their namespaces.

let lab: Lab;
let dir: string;
let control: ChildProcess | null = null;
let controlUrl = '';
let idp: TestIdp | null = null;
const nodes: Record<string, WeftNode> = {};
let shell: WeftWeb;
let browser: Browser;
let page: Page;

const heading = (name: string) => page.getByRole('heading', { level: 1, name, exact: true });

async function controlCli(args: string[]): Promise<string> {
  return execFileSync('node', [BIN.control, ...args, '--db', join(dir, 'control.db')], {
    encoding: 'utf8',
  }).trim();
}

describe('sign in through the identity provider from the UI (real engine, real control, oidc-provider)', () => {
  beforeAll(async () => {
    lab = await Lab.create();
    dir = scratchDir(`${lab.id}-signin`);
    const seg = await lab.addSegment();
    const root = await joinRoot(lab, seg);

    const port = 20_000 + Math.floor(Math.random() * 20_000);
    controlUrl = `http://${root.ip}:${port}`;
    // control's own test provider; the person signs in as alice
    const { startIdp, CLIENT_ID, CLIENT_SECRET } = await loadIdentitySupport();
    idp = await startIdp(port + 1, [`${controlUrl}/oidc/callback`]);
    const secretFile = join(dir, 'client-secret');
    writeFileSync(secretFile, CLIENT_SECRET, { mode: 0o600 });
    const log = createWriteStream(join(dir, 'control.log'));
    control = spawn(
      'node',
      [
        BIN.control,
        'serve',
        '--listen',
        `${root.ip}:${port}`,
        '--public-url',
        controlUrl,
        '--db',
        join(dir, 'control.db'),
        '--oidc-issuer',
        idp.issuer,
        '--oidc-client-id',
        CLIENT_ID,
        '--oidc-client-secret-file',
        secretFile,
      ],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    control.stdout?.pipe(log);
    control.stderr?.pipe(log);
    await waitFor(
      'control to answer',
      async () => (await fetch(`${controlUrl}/healthz`).catch(() => null))?.ok === true,
      20_000,
    );

    for (const [name, last] of [
      ['a', 21],
      ['b', 22],
    ] as const) {
      const host = await lab.addHost(name, { segment: seg, address: `${root.net}.${last}/24` });
      const node = new WeftNode(host, scratchDir(`${lab.id}-s${name}`), lab.name(`s${name}`));
      await node.start();
      nodes[name] = node;
    }
    // a server joined with a pre-auth key, so the new device has someone to see
    await controlCli(['users', 'create', 'ops', '--email', 'ops@example.com']);
    const key = await controlCli(['preauthkey', 'create', '--user', 'ops', '--reusable']);
    await nodes.b?.up(controlUrl, key, 'server-b');

    shell = await startWeftWeb(nodes.a?.socket ?? '', dir);
    browser = await launchChromium();
    const context = await browser.newContext({
      viewport: { width: 400, height: 720 },
      reducedMotion: 'reduce',
    });
    page = await context.newPage();
    await page.goto(shell.url);
  }, 180_000);

  afterAll(async () => {
    await browser?.close();
    const webExit = await shell?.stop();
    for (const n of Object.values(nodes)) await n.stop();
    if (control && control.exitCode === null) {
      const exited = new Promise((r) => control?.once('exit', r));
      control.kill('SIGTERM');
      await Promise.race([exited, new Promise((r) => setTimeout(r, 5000))]);
      if (control.exitCode === null && control.signalCode === null) control.kill('SIGKILL');
    }
    await idp?.stop();
    await lab?.cleanup();
    for (const n of Object.values(nodes)) removeScratch(n.dir);
    if (dir) removeScratch(dir);
    expect(webExit, 'weft web exits 0 on SIGTERM').toBe(0);
  }, 60_000);

  it('cancelling a waiting sign-in ends it in the engine and at control: the link stops working (real engine)', async () => {
    await expect.poll(() => heading('Sign in to Weft').isVisible(), { timeout: 15_000 }).toBe(true);
    await page.getByRole('textbox', { name: 'Control server' }).fill(controlUrl);
    await page.getByRole('button', { name: 'Sign in' }).click();
    const link = page.getByRole('link', { name: 'Open sign-in page' });
    await expect.poll(() => link.isVisible(), { timeout: 20_000 }).toBe(true);
    const authUrl = (await link.getAttribute('href')) ?? '';
    expect((await nodes.a?.status())?.authUrl).toBe(authUrl);
    await page.getByRole('button', { name: 'Cancel' }).click();
    await expect.poll(() => heading('Sign in to Weft').isVisible(), { timeout: 15_000 }).toBe(true);
    // POST /login/cancel: the engine forgets the link, and control refuses it from now on
    await expect.poll(async () => (await nodes.a?.status())?.authUrl ?? null, { timeout: 10_000 }).toBeNull();
    expect((await nodes.a?.status())?.backendState).toBe('NeedsLogin');
    const gone = await fetch(authUrl, { redirect: 'manual' });
    expect(gone.status).toBeGreaterThanOrEqual(400);
  }, 60_000);

  it('types the control server, opens the link, signs in at the provider, and the device connects (real engine)', async () => {
    await expect.poll(() => heading('Sign in to Weft').isVisible(), { timeout: 15_000 }).toBe(true);
    // the address typed before is offered again
    expect(await page.getByRole('textbox', { name: 'Control server' }).inputValue()).toBe(controlUrl);
    await page.getByRole('textbox', { name: 'Control server' }).fill(controlUrl);
    await page.getByRole('button', { name: 'Sign in' }).click();
    const link = page.getByRole('link', { name: 'Open sign-in page' });
    await expect.poll(() => link.isVisible(), { timeout: 20_000 }).toBe(true);
    const authUrl = (await link.getAttribute('href')) ?? '';
    expect(authUrl.startsWith(`${controlUrl}/`)).toBe(true);
    expect((await nodes.a?.status())?.authUrl).toBe(authUrl);
    await screenshots(page, 'real-signin-waiting');
    const violations = await axeSerious(page);
    expect(violations, JSON.stringify(violations, null, 2)).toEqual([]);

    // the browser tab: control → the identity provider's login and consent pages → control
    const [tab] = await Promise.all([page.context().waitForEvent('page'), link.click()]);
    await tab.waitForLoadState();
    for (let step = 0; step < 6 && !tab.url().startsWith(controlUrl); step++) {
      await tab.waitForLoadState();
      if (tab.url().startsWith(controlUrl)) break;
      if ((await tab.locator('input[name="login"]').count()) > 0) {
        await tab.locator('input[name="login"]').fill('alice');
        await tab.locator('input[name="password"]').fill('any');
      }
      await Promise.all([
        tab.waitForNavigation({ timeout: 15_000 }),
        tab.locator('button[type="submit"]').first().click(),
      ]);
    }
    expect(tab.url().startsWith(`${controlUrl}/`)).toBe(true);
    // control asks before it connects anything: the device, where it asked from, and when
    await expect
      .poll(() => tab.getByRole('heading', { name: 'Connect this device to your tailnet?' }).isVisible())
      .toBe(true);
    await screenshots(tab, 'real-signin-confirm');
    await Promise.all([
      tab.waitForNavigation({ timeout: 15_000 }),
      tab.getByRole('button', { name: 'Connect' }).click(),
    ]);
    await screenshots(tab, 'real-signin-control-result');
    await tab.close();

    // the waiting engine is authorized and connects; the UI follows without any action
    const name = await waitFor(
      'a signed in',
      async () => {
        const s = await nodes.a?.status();
        return s?.backendState === 'Running' ? s.self?.name : undefined;
      },
      30_000,
    );
    await expect.poll(() => heading(name).isVisible(), { timeout: 20_000 }).toBe(true);
    await expect
      .poll(
        () =>
          page
            .getByRole('list', { name: 'Devices' })
            .getByRole('listitem')
            .evaluateAll((els) => els.map((e) => e.getAttribute('aria-label'))),
        {
          timeout: 20_000,
        },
      )
      .toEqual(['server-b']);
    await screenshots(page, 'real-signin-home');
  }, 120_000);
});
